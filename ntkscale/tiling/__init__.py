"""The only layer that knows tiles, memory budgets and task graphs."""

from .build import BuildReport, build_cross_gram, build_gram, check_build
from .layout import TilePlan, choose_tile, tile_task_bytes

__all__ = ["BuildReport", "build_cross_gram", "build_gram", "check_build", "TilePlan", "choose_tile", "tile_task_bytes"]

"""The only layer that knows tiles, memory budgets and task graphs."""

from .build import BuildReport, build_cross_gram, build_gram
from .layout import TilePlan, choose_tile, tile_task_bytes

__all__ = ["BuildReport", "build_cross_gram", "build_gram", "TilePlan", "choose_tile", "tile_task_bytes"]

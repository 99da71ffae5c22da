"""Pure kernel math: infinite-width NNGP/NTK of architectures (no dask, no zarr)."""

from . import layers as _layers
from .api import (DiagStats, check_architecture, check_input_width, diag_stats, from_spec, kernel_tile,
                  make_kernel_fn, spec_json, spec_of)
from .layers import *  # noqa: F401,F403  (every public layer: one list, layers.__all__)
from .presets import cntk, myrtle, transformer
from .tile_kernel import TileKernel
from . import network as _network  # noqa: F401  (serves Layer.init_fn / Layer.apply_fn)

__all__ = list(_layers.__all__) + [
    "DiagStats", "diag_stats", "kernel_tile", "make_kernel_fn", "from_spec", "spec_of", "spec_json",
    "check_input_width", "check_architecture", "cntk", "myrtle", "transformer", "TileKernel",
]

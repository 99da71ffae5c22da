"""Pure kernel math: infinite-width NNGP/NTK of architectures (no dask, no zarr)."""

from .api import DiagStats, diag_stats, from_spec, kernel_tile, make_kernel_fn, spec_json, spec_of
from .layers import (ABRelu, Abs, Cos, Dense, Elementwise, Erf, FanInSum, FanOut, Gelu, Identity,
                     Layer, LeakyRelu, Relu, Sin, UnsupportedArchitectureError, parallel, serial)

__all__ = [
    "ABRelu", "Abs", "Cos", "Dense", "Elementwise", "Erf", "FanInSum", "FanOut", "Gelu", "Identity",
    "Layer", "LeakyRelu", "Relu", "Sin", "UnsupportedArchitectureError", "parallel", "serial",
    "DiagStats", "diag_stats", "kernel_tile", "make_kernel_fn", "from_spec", "spec_of", "spec_json",
]

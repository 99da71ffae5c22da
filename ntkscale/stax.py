"""neural-tangents compatible names: ``from ntkscale import stax``.

    init_fn, apply_fn, kernel_fn = stax.serial(
        stax.Dense(512, W_std=1.5, b_std=0.05), stax.Relu(),
        stax.Dense(1, W_std=1.5, b_std=0.05))
    k = kernel_fn(x1, x2, 'ntk')
"""

from .kernels.layers import (ABRelu, Abs, Cos, Dense, Elementwise, Erf, FanInSum, FanOut, Gelu,
                             Identity, LeakyRelu, Relu, Sin, parallel, serial)

__all__ = ["ABRelu", "Abs", "Cos", "Dense", "Elementwise", "Erf", "FanInSum", "FanOut", "Gelu",
           "Identity", "LeakyRelu", "Relu", "Sin", "parallel", "serial"]

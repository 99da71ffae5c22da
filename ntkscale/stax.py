"""neural-tangents compatible names: ``from ntkscale import stax``.

    init_fn, apply_fn, kernel_fn = stax.serial(
        stax.Dense(512, W_std=1.5, b_std=0.05), stax.Relu(),
        stax.Dense(1, W_std=1.5, b_std=0.05))
    k = kernel_fn(x1, x2, 'ntk')
"""

from .kernels import layers as _layers
from .kernels.layers import *  # noqa: F401,F403  (every public layer: one list, layers.__all__)

__all__ = [n for n in _layers.__all__ if n not in ("Layer", "Serial", "Parallel",
                                                   "UnsupportedArchitectureError")]

"""neural-tangents compatible names: ``from ntkscale import stax``.

    init_fn, apply_fn, kernel_fn = stax.serial(
        stax.Dense(512, W_std=1.5, b_std=0.05), stax.Relu(),
        stax.Dense(1, W_std=1.5, b_std=0.05))
    k = kernel_fn(x1, x2, 'ntk')

Every neural-tangents 0.6.5 ``stax`` export is here: implemented with NT's signature, or
refused at construction with an ``UnsupportedArchitectureError`` that names what to use
instead (:mod:`ntkscale.kernels.refused`; README, "neural-tangents stax exports").
"""

from .kernels import layers as _layers
from .kernels import refused as _refused
from .kernels.layers import *  # noqa: F401,F403  (every public layer: one list, layers.__all__)
from .kernels.refused import *  # noqa: F401,F403  (NT exports ntkscale refuses, and NT's enums)

__all__ = [n for n in _layers.__all__ if n not in ("Layer", "Serial", "Parallel",
                                                   "UnsupportedArchitectureError")] + \
    [n for n in _refused.__all__ if n != "REFUSED"]

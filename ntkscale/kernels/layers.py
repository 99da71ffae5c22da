"""Every public layer and combinator, one list: what ``ntkscale.stax`` and
``ntkscale.kernels`` export (``__all__``), with neural-tangents' ``stax`` conventions.

Each layer is a small frozen dataclass that knows (i) its infinite-width kernel
rule, (ii) a JSON spec (stored next to every Gram so a store can refuse other
architectures), and (iii) its finite-width JAX network (see ``network.py``).
Like in neural-tangents, every layer unpacks into ``(init_fn, apply_fn,
kernel_fn)``::

    init_fn, apply_fn, kernel_fn = serial(Dense(512), Relu(), Dense(1))

This module defines nothing: the base class lives in ``base.py``, the layers in their
families (``dense.py``, ``activations.py``, ``conv.py``, ``conv_variants.py``, ``norm.py``,
``attention.py``), the combinators in
``combinators.py``. It sits above all of them, so none imports it.

References
----------
Novak et al. (2020), "Neural Tangents: Fast and Easy Infinite Neural Networks
in Python", ICLR (the ``stax`` API and the NTK/standard parameterizations).
"""

from __future__ import annotations

# families first, in this order: it is the order of registry.LAYERS
from .dense import Dense
from .activations import ABRelu, Abs, Cos, Elementwise, Erf, Gelu, Identity, LeakyRelu, Relu, Sign, Sin
from .combinators import FanInSum, FanOut, Parallel, Serial, parallel, serial
from .conv import AvgPool, Conv, Flatten, GlobalAvgPool, Unflatten
from .norm import LayerNorm
from .attention import AttentionMechanism, GlobalSelfAttention, PositionalEmbedding
from .base import Layer, UnsupportedArchitectureError
# added for neural-tangents' remaining exports (issue 22), after the above: their order is kept
from .combinators import FanInConcat, FanInProd, repeat
from .conv import GlobalSumPool, SumPool
from .activations_nt import (Exp, ExpNormalized, Gabor, Gaussian, Hermite, Monomial, Polynomial, Rbf,
                             RectifiedMonomial, Sigmoid_like)
from .conv_variants import ConvLocal, ConvTranspose

__all__ = [
    "Layer", "Dense", "ABRelu", "Relu", "LeakyRelu", "Abs", "Identity", "Erf", "Gelu",
    "Sin", "Cos", "Sign", "Elementwise", "Serial", "Parallel", "FanOut", "FanInSum",
    "serial", "parallel", "UnsupportedArchitectureError",
    "Conv", "AvgPool", "GlobalAvgPool", "Flatten", "Unflatten",
    "FanInProd", "FanInConcat", "repeat", "SumPool", "GlobalSumPool",
    "Exp", "Gaussian", "Rbf", "ExpNormalized", "Gabor", "Monomial", "RectifiedMonomial", "Polynomial",
    "Hermite", "Sigmoid_like",
    "LayerNorm", "GlobalSelfAttention", "AttentionMechanism", "PositionalEmbedding",
    "ConvLocal", "ConvTranspose",
]

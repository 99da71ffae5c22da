"""Parity cases: each is a function of a ``stax`` module, so one definition builds the same
network with ``neural_tangents.stax`` (generate.py, in NT's own venv) and with
``ntkscale.stax`` (test_nt_parity.py): the porting user's one-import change, literally.

Inputs are fixed by seeds (numpy only), float64. ``CASES`` maps a case name to
``(builder, input kind)``; input kinds: ``"fc"`` rows (n, d) and ``"image"`` NHWC (n, H, W, C).
"""

from __future__ import annotations

import numpy as np

INPUTS = {"fc": (5, 4, (7,)), "image": (4, 3, (5, 5, 2))}  # kind -> (n1, n2, feature shape)


def inputs(kind: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``x1`` (n1, ...) and ``x2`` (n2, ...), standard normal, float64."""
    n1, n2, shape = INPUTS[kind]
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n1, *shape)), rng.standard_normal((n2, *shape))


def _mlp(act):
    def build(stax):
        return stax.serial(stax.Dense(512, W_std=1.5, b_std=0.2), act(stax),
                           stax.Dense(512, W_std=1.3, b_std=0.1), act(stax), stax.Dense(1, W_std=0.9, b_std=0.05))
    return build


ACTIVATIONS = {
    "relu": lambda s: s.Relu(),
    "abs": lambda s: s.Abs(),
    "leaky_relu": lambda s: s.LeakyRelu(0.1),
    "abrelu": lambda s: s.ABRelu(-0.3, 1.2),
    "erf": lambda s: s.Erf(),
    "erf_abc": lambda s: s.Erf(a=0.7, b=1.3, c=0.2),
    "gelu": lambda s: s.Gelu(),
    "sin": lambda s: s.Sin(),
    "sin_abc": lambda s: s.Sin(a=0.5, b=2.0, c=0.3),
    "cos": lambda s: s.Cos(),
    "sign": lambda s: s.Sign(),
    "identity": lambda s: s.Identity(),
}


def standard_param(stax):
    return stax.serial(stax.Dense(64, W_std=1.4, b_std=0.1, parameterization="standard"), stax.Relu(),
                       stax.Dense(32, W_std=1.2, b_std=0.3, parameterization="standard"), stax.Relu(),
                       stax.Dense(1, W_std=1.0, b_std=0.1, parameterization="standard"))


def residual(stax):
    block = stax.serial(stax.FanOut(2),
                        stax.parallel(stax.serial(stax.Relu(), stax.Dense(256, W_std=1.4, b_std=0.1)),
                                      stax.Identity()),
                        stax.FanInSum())
    return stax.serial(stax.Dense(256, W_std=1.2, b_std=0.1), block, block, stax.Relu(), stax.Dense(1))


def conv_flatten(padding):
    def build(stax):
        return stax.serial(stax.Conv(16, (3, 3), padding=padding, W_std=1.4, b_std=0.1), stax.Relu(),
                           stax.Conv(16, (2, 2), strides=(1, 1), padding=padding, W_std=1.2, b_std=0.05),
                           stax.Relu(), stax.Flatten(), stax.Dense(1, W_std=1.0))
    return build


def conv_strided(stax):
    return stax.serial(stax.Conv(8, (3, 3), strides=(2, 2), padding="SAME", W_std=1.5, b_std=0.1), stax.Erf(),
                       stax.Flatten(), stax.Dense(1))


def conv_global_pool(stax):
    return stax.serial(stax.Conv(8, (3, 3), padding="CIRCULAR", W_std=1.4, b_std=0.1), stax.Relu(),
                       stax.GlobalAvgPool(), stax.Dense(1))


def avgpool_default_strides(stax):
    """``AvgPool((2, 2))`` with NT's defaults: strides None = (1, 1) (as jax's stax)."""
    return stax.serial(stax.Conv(8, (2, 2), padding="SAME", W_std=1.4, b_std=0.1), stax.Relu(),
                       stax.AvgPool((2, 2)), stax.Flatten(), stax.Dense(1))


def avgpool_explicit_strides(stax):
    return stax.serial(stax.Conv(8, (2, 2), padding="SAME", W_std=1.4, b_std=0.1), stax.Relu(),
                       stax.AvgPool((2, 2), strides=(2, 2)), stax.GlobalAvgPool(), stax.Dense(1))


def dense_on_images_flatten(stax):
    """Dense on the channels of each position, then Flatten (no Conv): per-position
    covariances, not the kernel of the flattened rows."""
    return stax.serial(stax.Dense(16, W_std=1.4, b_std=0.1), stax.Relu(), stax.Flatten(),
                       stax.Dense(1, W_std=1.0))


CASES = {
    **{f"mlp_{name}": (_mlp(act), "fc") for name, act in ACTIVATIONS.items()},
    "standard_parameterization": (standard_param, "fc"),
    "residual": (residual, "fc"),
    "conv_valid_flatten": (conv_flatten("VALID"), "image"),
    "conv_same_flatten": (conv_flatten("SAME"), "image"),
    "conv_circular_flatten": (conv_flatten("CIRCULAR"), "image"),
    "conv_strided": (conv_strided, "image"),
    "conv_global_pool": (conv_global_pool, "image"),
    "avgpool_default_strides": (avgpool_default_strides, "image"),
    "avgpool_explicit_strides": (avgpool_explicit_strides, "image"),
    "dense_on_images_flatten": (dense_on_images_flatten, "image"),
}

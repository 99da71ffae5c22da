"""Parity cases for the NT exports and keyword arguments added by issue 22 (``generate_more.py``
records NT 0.6.5's values in ``nt065_more.npz``; ``test_nt_more.py`` checks ntkscale's).

Like :mod:`cases`, each case is a function of a ``stax`` module, and the inputs are the same
(:func:`cases.inputs`). ``get=None`` results are recorded too: NT's ``Kernel.cov1``/``cov2``
(per-sample variances) and ``is_gaussian``.
"""

from __future__ import annotations

try:  # the package (pytest) or the generator's sys.path
    from .cases import INPUTS, inputs  # noqa: F401
except ImportError:  # pragma: no cover - generate_more.py in NT's venv
    from cases import INPUTS, inputs  # noqa: F401


def _mlp(act, depth=1):
    def build(stax):
        layers = [stax.Dense(512, W_std=1.2, b_std=0.1)]
        for _ in range(depth):
            layers += [act(stax), stax.Dense(256, W_std=1.1, b_std=0.2)]
        return stax.serial(*layers[:-1], stax.Dense(1, W_std=0.9, b_std=0.05))
    return build


ACTIVATIONS = {
    "exp": lambda s: s.Exp(),
    "exp_ab": lambda s: s.Exp(a=0.8, b=0.6),
    "gaussian": lambda s: s.Gaussian(),
    "gaussian_ab": lambda s: s.Gaussian(a=1.3, b=-0.4),
    "rbf": lambda s: s.Rbf(),
    "rbf_gamma": lambda s: s.Rbf(gamma=0.3),
    "exp_normalized": lambda s: s.ExpNormalized(),
    "exp_normalized_clip": lambda s: s.ExpNormalized(gamma=0.7, shift=-0.5, do_clip=True),
    "gabor": lambda s: s.Gabor(),
    **{f"monomial_{d}": (lambda d: lambda s: s.Monomial(d))(d) for d in range(6)},
    **{f"rectified_monomial_{d}": (lambda d: lambda s: s.RectifiedMonomial(d))(d) for d in range(5)},
    "polynomial": lambda s: s.Polynomial([0.1, -0.5, 0.3, 0.2]),
    "polynomial_quartic": lambda s: s.Polynomial([0.0, 1.0, 0.0, 0.0, 0.25]),
    "hermite_3": lambda s: s.Hermite(3),
    "sigmoid_like": lambda s: s.Sigmoid_like(),
}


def fan_in_prod(stax):
    return stax.serial(stax.Dense(64, W_std=1.3, b_std=0.1), stax.FanOut(2),
                       stax.parallel(stax.serial(stax.Relu(), stax.Dense(64, W_std=1.4, b_std=0.2)),
                                     stax.Dense(64, W_std=0.8)),
                       stax.FanInProd(), stax.Dense(1, W_std=1.1))


def fan_in_concat(stax):
    """Branches of 32 and 64 channels: the kernel is their channel-weighted mean."""
    return stax.serial(stax.Dense(64, W_std=1.3, b_std=0.1), stax.FanOut(2),
                       stax.parallel(stax.serial(stax.Relu(), stax.Dense(32, W_std=1.4, b_std=0.2)),
                                     stax.Identity()),
                       stax.FanInConcat(), stax.Dense(1, W_std=1.1, b_std=0.1))


def fan_in_concat_standard(stax):
    return stax.serial(stax.Dense(48, W_std=1.3, b_std=0.1, parameterization="standard"), stax.FanOut(3),
                       stax.parallel(stax.serial(stax.Erf(), stax.Dense(16, parameterization="standard")),
                                     stax.serial(stax.Relu(), stax.Dense(8, W_std=1.2, parameterization="standard")),
                                     stax.Identity()),
                       stax.FanInConcat(), stax.Dense(1, parameterization="standard"))


def repeat(stax):
    block = stax.serial(stax.Relu(), stax.Dense(128, W_std=1.4, b_std=0.1))
    return stax.serial(stax.Dense(128, W_std=1.2), stax.repeat(block, 3), stax.Dense(1))


def nt_keywords(stax):
    """NT's keyword arguments at their defaults, and do_stabilize=True (no numerical effect)."""
    return stax.serial(stax.Dense(256, W_std=1.5, b_std=0.2, batch_axis=0, channel_axis=-1),
                       stax.Relu(do_stabilize=True), stax.Dense(256, W_std=1.3, batch_axis=0),
                       stax.LeakyRelu(0.2, do_stabilize=True), stax.Dense(64), stax.Abs(do_stabilize=True),
                       stax.Dense(64), stax.ABRelu(-0.4, 0.9, do_stabilize=True),
                       stax.Flatten(batch_axis=0, batch_axis_out=0), stax.Dense(1))


def conv_keywords(stax):
    return stax.serial(stax.Conv(8, (3, 3), padding="SAME", W_std=1.4, b_std=0.1, dimension_numbers=None,
                                 s=(1, 1)),
                       stax.Relu(), stax.AvgPool((2, 2), padding="VALID", normalize_edges=True, batch_axis=0,
                                                 channel_axis=-1),
                       stax.GlobalAvgPool(batch_axis=0, channel_axis=-1), stax.Dense(1))


def flatten_features(stax):
    """Flatten on (n, d) rows: a no-op in NT."""
    return stax.serial(stax.Flatten(), stax.Dense(64, W_std=1.3, b_std=0.1), stax.Relu(), stax.Flatten(),
                       stax.Dense(1))


def flatten_images(stax):
    """Flatten of raw images, no Conv: the flattened rows' kernel."""
    return stax.serial(stax.Flatten(), stax.Dense(64, W_std=1.3, b_std=0.1), stax.Erf(), stax.Dense(1))


def sum_pool(stax):
    return stax.serial(stax.Conv(8, (2, 2), padding="SAME", W_std=1.4, b_std=0.1), stax.Relu(),
                       stax.SumPool((2, 2), strides=(2, 2)), stax.Flatten(), stax.Dense(1))


def sum_pool_same(stax):
    return stax.serial(stax.Conv(8, (2, 2), padding="VALID", W_std=1.4, b_std=0.1), stax.Relu(),
                       stax.SumPool((3, 3), padding="SAME"), stax.GlobalAvgPool(), stax.Dense(1))


def global_sum_pool(stax):
    return stax.serial(stax.Conv(8, (3, 3), padding="CIRCULAR", W_std=1.4, b_std=0.1), stax.Relu(),
                       stax.GlobalSumPool(), stax.Dense(1, W_std=0.5))


def padding_enum(stax):
    return stax.serial(stax.Conv(8, (3, 3), padding=stax.Padding.SAME, W_std=1.4, b_std=0.1), stax.Relu(),
                       stax.AvgPool((2, 2), padding=stax.Padding.VALID), stax.Flatten(), stax.Dense(1))


def _erf_nngp(cov12, var1, var2):
    import jax.numpy as jnp

    prod = (1 + 2 * var1) * (1 + 2 * var2)
    return jnp.arcsin(2 * cov12 / jnp.sqrt(prod)) * 2 / jnp.pi


def elementwise_autodiff(stax):
    """NT's documented example: Elementwise(erf, nngp_fn), d_nngp_fn by autodiff."""
    import jax

    return stax.serial(stax.Dense(64, W_std=1.3, b_std=0.1),
                       stax.Elementwise(jax.scipy.special.erf, _erf_nngp), stax.Dense(1))


CASES = {
    **{f"act_{name}": (_mlp(act), "fc") for name, act in ACTIVATIONS.items()},
    "fan_in_prod": (fan_in_prod, "fc"),
    "fan_in_concat": (fan_in_concat, "fc"),
    "fan_in_concat_standard": (fan_in_concat_standard, "fc"),
    "repeat": (repeat, "fc"),
    "nt_keywords": (nt_keywords, "fc"),
    "conv_keywords": (conv_keywords, "image"),
    "flatten_features": (flatten_features, "fc"),
    "flatten_images": (flatten_images, "image"),
    "sum_pool": (sum_pool, "image"),
    "sum_pool_same": (sum_pool_same, "image"),
    "global_sum_pool": (global_sum_pool, "image"),
    "padding_enum": (padding_enum, "image"),
    "elementwise_autodiff": (elementwise_autodiff, "fc"),
}

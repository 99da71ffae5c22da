"""Parity cases for locally connected and transposed convolutions (``ConvLocal``,
``ConvTranspose``): functions of a ``stax`` module, like :mod:`cases_seq1d`, so
``generate_more.py convlt`` builds them with ``neural_tangents.stax`` and
``test_convlt_parity.py`` with ``ntkscale.stax``.

Inputs: ``"img"`` (3 and 2 images 5 x 4, 2 channels: non-square, so a swapped height/width
shows), ``"img_small"`` (3 and 2 of 3 x 3, 2 channels: filters wider than the image),
``"seq"`` (4 and 3 sequences of T = 7, 3 channels) and ``"seq_short"`` (3 and 2 of T = 4,
2 channels). Readouts: ``Flatten`` (NT's same-position layout) and ``GlobalAvgPool`` (all
position pairs); NT's defaults wherever a case names no value (``padding`` 'VALID',
``strides`` None = 1, ``parameterization`` 'ntk', ``b_std`` None).
"""

from __future__ import annotations

import numpy as np

INPUTS = {"img": (3, 2, (5, 4, 2)), "img_small": (3, 2, (3, 3, 2)), "seq": (4, 3, (7, 3)),
          "seq_short": (3, 2, (4, 2))}


def inputs(kind: str, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """``x1`` (n1, *shape) and ``x2`` (n2, *shape), standard normal, float64."""
    n1, n2, shape = INPUTS[kind]
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n1, *shape)), rng.standard_normal((n2, *shape))


FLAT = lambda s: s.Flatten()  # noqa: E731
GAP = lambda s: s.GlobalAvgPool()  # noqa: E731


def chain(kind, filters, readout=FLAT, act="relu", **kw):
    """``ConvLocal``/``ConvTranspose`` layers (one per filter) with an activation between, a
    readout, a Dense."""
    def build(stax):
        a = {"relu": stax.Relu, "erf": stax.Erf}[act]
        layers = []
        for i, f in enumerate(filters):
            layers += [getattr(stax, kind)(12, f, W_std=1.3 - 0.2 * i, **kw), a()]
        return stax.serial(*layers, readout(stax), stax.Dense(1, W_std=0.9, b_std=0.05))
    return build


def defaults(kind, f):
    """NT's defaults only: ``kind(8, f)``, ``kind(8, (2, 2))``, Flatten, ``Dense(1)``."""
    def build(stax):
        layer = getattr(stax, kind)
        return stax.serial(layer(8, f), stax.Relu(), layer(8, (2, 2)), stax.Flatten(), stax.Dense(1))
    return build


def mixed(first, second, readout=GAP, pool=False, f=(3, 3)):
    """``first`` then ``second`` (each ``Conv``, ``ConvLocal`` or ``ConvTranspose``, SAME
    unless named), activations between, an optional ``AvgPool``, a readout."""
    def build(stax):
        def make(spec, w):
            name, kw = spec
            return getattr(stax, name)(12, kw.pop("f", f), W_std=w, **{"padding": "SAME", **kw})
        layers = [make((first[0], dict(first[1])), 1.4), stax.Relu()]
        if pool:
            layers += [stax.AvgPool((2,) * len(f), padding="SAME")]
        layers += [make((second[0], dict(second[1])), 1.1), stax.Erf()]
        return stax.serial(*layers, readout(stax), stax.Dense(1, W_std=1.2, b_std=0.1))
    return build


def dense_then(kind, readout=FLAT, **kw):
    """Dense on channels, Erf, one layer of ``kind``, ReLU, readout, standard Dense."""
    def build(stax):
        return stax.serial(stax.Dense(12, W_std=1.2, b_std=0.3), stax.Erf(),
                           getattr(stax, kind)(12, (2, 3), W_std=1.5, b_std=0.1, **kw),
                           stax.Relu(), readout(stax), stax.Dense(1, W_std=1.1, parameterization="standard"))
    return build


L, T = "ConvLocal", "ConvTranspose"
CASES = {
    # ConvLocal: paddings, strides, bias, parameterization, readouts (2-d)
    "local_default": (defaults(L, (3, 3)), "img"),
    "local_valid_relu": (chain(L, [(3, 2), (2, 2)]), "img"),
    "local_same_bias": (chain(L, [(3, 3), (2, 3)], padding="SAME", b_std=0.2), "img"),
    "local_circular_erf": (chain(L, [(3, 3), (2, 2)], padding="CIRCULAR", b_std=0.1, act="erf"), "img"),
    "local_stride2_valid": (chain(L, [(2, 2)], strides=(2, 1), b_std=0.1), "img"),
    "local_stride2_same": (chain(L, [(3, 2), (2, 2)], strides=(2, 2), padding="SAME"), "img"),
    "local_stride2_circular": (chain(L, [(3, 3)], strides=(2, 2), padding="CIRCULAR", b_std=0.2), "img"),
    "local_standard": (chain(L, [(3, 3), (2, 2)], padding="SAME", b_std=0.2, parameterization="standard"), "img"),
    "local_same_bias_gap": (chain(L, [(3, 3), (2, 2)], GAP, padding="SAME", b_std=0.3), "img"),
    "local_standard_gap": (chain(L, [(2, 2)], GAP, b_std=0.1, parameterization="standard"), "img"),
    "local_standard_nobias_gap": (chain(L, [(3, 2)], GAP, padding="CIRCULAR", parameterization="standard"), "img"),
    "dense_then_local": (dense_then(L, padding="SAME"), "img"),
    # ConvTranspose (2-d)
    "transpose_default": (defaults(T, (3, 3)), "img"),
    "transpose_valid_relu": (chain(T, [(3, 2), (2, 2)]), "img"),
    "transpose_same_bias": (chain(T, [(3, 3), (2, 3)], padding="SAME", b_std=0.2), "img"),
    "transpose_circular_erf": (chain(T, [(3, 3), (2, 2)], padding="CIRCULAR", b_std=0.1, act="erf"), "img"),
    "transpose_stride2_valid": (chain(T, [(3, 3)], strides=(2, 2), b_std=0.1), "img"),
    "transpose_stride2_same": (chain(T, [(3, 2), (2, 2)], strides=(2, 1), padding="SAME"), "img"),
    "transpose_stride2_small_filter": (chain(T, [(1, 2)], strides=(3, 2), padding="SAME", b_std=0.1), "img"),
    "transpose_stride2_circular": (chain(T, [(3, 3)], strides=(2, 2), padding="CIRCULAR", b_std=0.2), "img"),
    "transpose_wide_circular": (chain(T, [(5, 4)], padding="CIRCULAR", b_std=0.1), "img_small"),
    "transpose_wide_valid": (chain(T, [(5, 4)], strides=(2, 1)), "img_small"),
    "transpose_standard": (chain(T, [(3, 3), (2, 2)], padding="SAME", b_std=0.2, parameterization="standard"), "img"),
    "transpose_same_gap": (chain(T, [(3, 3), (2, 2)], GAP, padding="SAME", b_std=0.3), "img"),
    "transpose_stride2_valid_gap": (chain(T, [(3, 2)], GAP, strides=(2, 2), b_std=0.1), "img"),
    "transpose_circular_gap": (chain(T, [(3, 3)], GAP, strides=(2, 1), padding="CIRCULAR"), "img"),
    "transpose_circular_two_gap": (chain(T, [(3, 2), (2, 3)], GAP, strides=(2, 1), padding="CIRCULAR",
                                         b_std=0.1), "img_small"),
    "transpose_standard_gap": (chain(T, [(2, 2)], GAP, b_std=0.1, parameterization="standard"), "img"),
    "dense_then_transpose": (dense_then(T, strides=(2, 2)), "img"),
    # mixed with Conv and pooling
    "conv_then_local_gap": (mixed(("Conv", {}), (L, {"b_std": 0.1})), "img"),
    "local_then_conv_gap": (mixed((L, {"b_std": 0.2}), ("Conv", {"padding": "CIRCULAR"})), "img"),
    "local_pool_conv_flat": (mixed((L, {}), ("Conv", {"b_std": 0.1}), FLAT, pool=True), "img"),
    "conv_stride_transpose_gap": (mixed(("Conv", {"strides": (2, 2)}), (T, {"strides": (2, 2), "b_std": 0.1})), "img"),
    "transpose_pool_conv_flat": (mixed((T, {"strides": (2, 1)}), ("Conv", {}), FLAT, pool=True), "img"),
    "transpose_then_local_flat": (mixed((T, {"padding": "VALID"}), (L, {"b_std": 0.1}), FLAT), "img"),
    "local_then_transpose_gap": (mixed((L, {}), (T, {"padding": "CIRCULAR", "strides": (1, 2)})), "img"),
    # 1-d (sequences)
    "seq_local_same": (chain(L, [(3,), (2,)], padding="SAME", b_std=0.2), "seq"),
    "seq_local_circular_stride2": (chain(L, [(3,)], strides=(2,), padding="CIRCULAR", b_std=0.1), "seq"),
    "seq_local_standard_gap": (chain(L, [(2,)], GAP, parameterization="standard", b_std=0.1), "seq"),
    "seq_transpose_valid_stride2": (chain(T, [(3,)], strides=(2,), b_std=0.1), "seq_short"),
    "seq_transpose_same": (chain(T, [(3,), (2,)], padding="SAME", act="erf"), "seq"),
    "seq_transpose_circular_gap": (chain(T, [(3,)], GAP, strides=(2,), padding="CIRCULAR", b_std=0.2), "seq_short"),
    "seq_transpose_standard": (chain(T, [(4,)], parameterization="standard", b_std=0.1), "seq_short"),
    "seq_mixed_gap": (mixed((T, {"strides": (2,)}), (L, {"b_std": 0.1}), f=(3,)), "seq_short"),
}

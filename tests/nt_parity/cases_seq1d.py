"""Parity cases for 1-d convolutions and pooling on sequences ``(n, T, C)`` (issue 22):
functions of a ``stax`` module, like :mod:`cases`, so ``generate_more.py seq1d`` builds them with
``neural_tangents.stax`` and ``test_seq1d_parity.py`` with ``ntkscale.stax``.

Every case takes sequences: ``"seq"`` (4 and 3 sequences of T = 7 positions, 3 channels) or
``"seq_long"`` (3 and 2 of T = 10, 2 channels: room for strides and wide windows). Windows
are 1-d (``(f,)``); NT's defaults everywhere a case does not name a value (``padding``
'VALID', ``strides`` None = 1, ``parameterization`` 'ntk', ``b_std`` None).
"""

from __future__ import annotations

import numpy as np

INPUTS = {"seq": (4, 3, (7, 3)), "seq_long": (3, 2, (10, 2))}


def inputs(kind: str, seed: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """``x1`` (n1, T, C) and ``x2`` (n2, T, C), standard normal, float64."""
    n1, n2, shape = INPUTS[kind]
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n1, *shape)), rng.standard_normal((n2, *shape))


FLAT = lambda s: s.Flatten()  # noqa: E731
GAP = lambda s: s.GlobalAvgPool()  # noqa: E731
GSP = lambda s: s.GlobalSumPool()  # noqa: E731


def conv(filter_shape, readout=FLAT, act="relu", depth=2, **kw):
    """``depth`` 1-d Conv layers with an activation between, a readout, a Dense."""
    def build(stax):
        a = {"relu": stax.Relu, "erf": stax.Erf}[act]
        layers = []
        for i in range(depth):
            layers += [stax.Conv(16, filter_shape, W_std=1.3 - 0.2 * i, **kw), a()]
        return stax.serial(*layers, readout(stax), stax.Dense(1, W_std=0.9, b_std=0.05))
    return build


def conv_default(stax):
    """NT's defaults only: ``Conv(8, (3,))`` (VALID, stride 1, no bias)."""
    return stax.serial(stax.Conv(8, (3,)), stax.Relu(), stax.Conv(8, (2,)), stax.Flatten(), stax.Dense(1))


def pool(kind, window, readout=GAP, **kw):
    """Conv (SAME) -> ReLU -> ``kind`` pool -> Erf -> Conv -> readout."""
    def build(stax):
        p = getattr(stax, kind)(window, **kw)
        return stax.serial(stax.Conv(16, (3,), padding="SAME", W_std=1.4, b_std=0.2), stax.Relu(), p,
                           stax.Conv(16, (2,), padding="SAME", W_std=1.1, b_std=0.1), stax.Erf(),
                           readout(stax), stax.Dense(1, W_std=1.2))
    return build


def pool_first(kind, window, readout=GAP, **kw):
    """A pool straight on the inputs, then Dense (acting on channels) and a readout."""
    def build(stax):
        return stax.serial(getattr(stax, kind)(window, **kw), stax.Dense(16, W_std=1.5, b_std=0.1),
                           stax.Relu(), readout(stax), stax.Dense(1))
    return build


def dense_then_conv(stax):
    """Dense on channels, a strided 1-d Conv, Erf, Flatten, standard Dense readout."""
    return stax.serial(stax.Dense(16, W_std=1.2, b_std=0.3), stax.Erf(),
                       stax.Conv(16, (4,), strides=(3,), padding="SAME", W_std=1.5, b_std=0.1),
                       stax.Relu(), stax.Flatten(), stax.Dense(1, W_std=1.1, parameterization="standard"))


def conv_attention(readout=GAP):
    """A 1-d conv front end, self-attention over positions, a pooled (or flat) readout."""
    def build(stax):
        att = stax.GlobalSelfAttention(16, 16, 16, 2, W_key_std=1.2, W_query_std=0.9, W_value_std=1.3,
                                       W_out_std=1.0, b_std=0.1)
        return stax.serial(stax.Conv(16, (3,), padding="SAME", W_std=1.4, b_std=0.1), stax.Relu(), att,
                           stax.Relu(), stax.Conv(16, (2,), padding="CIRCULAR", W_std=1.2),
                           stax.AvgPool((2,), strides=(2,)), readout(stax), stax.Dense(1, W_std=0.9))
    return build


def conv_residual(stax):
    """A residual 1-d conv block (FanOut, parallel Conv/Identity, FanInSum)."""
    block = stax.serial(stax.FanOut(2), stax.parallel(
        stax.serial(stax.Relu(), stax.Conv(16, (3,), padding="CIRCULAR", W_std=1.3, b_std=0.1)),
        stax.Identity()), stax.FanInSum())
    return stax.serial(stax.Conv(16, (3,), padding="SAME", W_std=1.2), block, block, stax.Relu(),
                       stax.GlobalAvgPool(), stax.Dense(1))


CASES = {
    # Conv: filters, strides, paddings, bias, parameterization
    "conv_default": (conv_default, "seq"),
    "conv3_valid_relu": (conv((3,)), "seq"),
    "conv3_same_bias": (conv((3,), padding="SAME", b_std=0.2), "seq"),
    "conv2_circular_erf": (conv((2,), padding="CIRCULAR", act="erf", b_std=0.1), "seq"),
    "conv5_circular": (conv((5,), padding="CIRCULAR", b_std=0.3), "seq"),
    "conv1_valid": (conv((1,), b_std=0.1), "seq"),
    "conv3_stride2_valid": (conv((3,), strides=(2,), depth=1, b_std=0.1), "seq_long"),
    "conv4_stride3_same": (conv((4,), strides=(3,), padding="SAME", depth=2), "seq_long"),
    "conv3_stride2_circular": (conv((3,), strides=(2,), padding="CIRCULAR", b_std=0.2, depth=1), "seq_long"),
    "conv3_standard": (conv((3,), padding="SAME", b_std=0.2, parameterization="standard"), "seq"),
    "conv2_standard_nobias_gap": (conv((2,), readout=GAP, parameterization="standard"), "seq"),
    "conv3_same_gap": (conv((3,), readout=GAP, padding="SAME", b_std=0.1), "seq"),
    "conv3_valid_gsp": (conv((3,), readout=GSP, b_std=0.1, act="erf"), "seq"),
    "dense_then_conv": (dense_then_conv, "seq_long"),
    # pooling: NT's default strides=None is stride 1
    "avgpool2_default": (pool("AvgPool", (2,)), "seq"),
    "avgpool2_stride2": (pool("AvgPool", (2,), strides=(2,)), "seq"),
    "avgpool3_same": (pool("AvgPool", (3,), padding="SAME"), "seq"),
    "avgpool3_stride2_same_flat": (pool("AvgPool", (3,), FLAT, strides=(2,), padding="SAME"), "seq_long"),
    "avgpool2_circular": (pool("AvgPool", (2,), strides=(2,), padding="CIRCULAR"), "seq"),
    "sumpool2_default": (pool("SumPool", (2,)), "seq"),
    "sumpool2_stride2": (pool("SumPool", (2,), strides=(2,)), "seq"),
    "sumpool3_same_gsp": (pool("SumPool", (3,), GSP, padding="SAME"), "seq"),
    "sumpool2_circular_flat": (pool("SumPool", (2,), FLAT, padding="CIRCULAR"), "seq_long"),
    "avgpool_first_flat": (pool_first("AvgPool", (3,), FLAT), "seq"),
    "sumpool_first_gsp": (pool_first("SumPool", (2,), GSP, strides=(2,)), "seq_long"),
    # mixed with attention and combinators
    "conv_attention_gap": (conv_attention(GAP), "seq"),
    "conv_attention_flat": (conv_attention(FLAT), "seq"),
    "conv_residual": (conv_residual, "seq"),
}

"""Parity cases for sequences, LayerNorm and GlobalSelfAttention (issue 22): functions of a
``stax`` module, like :mod:`cases`, so ``generate_attention.py`` builds them with
``neural_tangents.stax`` and ``test_attention_parity.py`` with ``ntkscale.stax``.

Input kinds: ``"fc"`` rows (n, d), ``"seq"`` sequences (n, T, C), ``"image"`` NHWC images.
"""

from __future__ import annotations

import numpy as np

INPUTS = {"fc": (5, 4, (7,)), "seq": (4, 3, (5, 6)), "image": (3, 2, (3, 4, 2))}


def inputs(kind: str, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``x1`` (n1, ...) and ``x2`` (n2, ...), standard normal, float64."""
    n1, n2, shape = INPUTS[kind]
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n1, *shape)), rng.standard_normal((n2, *shape))


# -- sequences -----------------------------------------------------------------
def seq_flatten(stax):
    return stax.serial(stax.Dense(64, W_std=1.3, b_std=0.1), stax.Relu(), stax.Dense(64, W_std=1.1),
                       stax.Erf(), stax.Flatten(), stax.Dense(1, W_std=0.9, b_std=0.05))


def seq_global_pool(stax):
    return stax.serial(stax.Dense(64, W_std=1.3, b_std=0.1), stax.Gelu(), stax.Dense(64, W_std=1.2),
                       stax.Relu(), stax.GlobalAvgPool(), stax.Dense(1, W_std=0.9, b_std=0.05))


# -- LayerNorm -----------------------------------------------------------------
def layernorm_fc(axis):
    def build(stax):
        return stax.serial(stax.Dense(64, W_std=1.4, b_std=0.3), stax.LayerNorm(axis=axis),
                           stax.Relu(), stax.Dense(64, W_std=1.2, b_std=0.1), stax.LayerNorm(eps=0.1),
                           stax.Dense(1))
    return build


def layernorm_seq(axis, readout):
    def build(stax):
        return stax.serial(stax.Dense(64, W_std=1.4, b_std=0.3), stax.LayerNorm(axis=axis), stax.Relu(),
                           stax.Dense(64, W_std=1.2, b_std=0.1), stax.LayerNorm(axis=axis, eps=1e-3),
                           readout(stax), stax.Dense(1))
    return build


def layernorm_image(axis, readout):
    def build(stax):
        return stax.serial(stax.Conv(16, (2, 2), padding="SAME", W_std=1.4, b_std=0.2),
                           stax.LayerNorm(axis=axis), stax.Relu(), stax.Conv(16, (2, 2), W_std=1.1),
                           stax.LayerNorm(axis=axis), readout(stax), stax.Dense(1))
    return build


FLAT = lambda s: s.Flatten()  # noqa: E731
GAP = lambda s: s.GlobalAvgPool()  # noqa: E731


# -- attention -----------------------------------------------------------------
def attention(readout=GAP, first=True, **kw):
    kw = {"W_key_std": 1.3, "W_query_std": 0.8, "W_value_std": 1.2, "W_out_std": 0.9, "b_std": 0.1, **kw}

    def build(stax):
        att = stax.GlobalSelfAttention(32, 32, 32, kw.get("n_heads", 1),
                                       **{k: v for k, v in kw.items() if k != "n_heads"})
        head = [stax.Dense(64, W_std=1.2, b_std=0.1)] if first else []
        return stax.serial(*head, att, stax.Relu() if first else stax.Identity(),
                           stax.Dense(64, W_std=1.1), readout(stax), stax.Dense(1, W_std=0.8))
    return build


def transformer(readout=GAP, depth=2, mechanism="SOFTMAX"):
    def build(stax):
        att = stax.GlobalSelfAttention(64, 32, 32, 2, W_key_std=1.2, W_query_std=1.1, W_value_std=1.3,
                                       W_out_std=1.0, b_std=0.05, attention_mechanism=mechanism)
        attn_block = stax.serial(stax.FanOut(2), stax.parallel(att, stax.Identity()), stax.FanInSum(),
                                 stax.LayerNorm())
        mlp = stax.serial(stax.Dense(64, W_std=1.4, b_std=0.1), stax.Relu(), stax.Dense(64, W_std=1.3))
        mlp_block = stax.serial(stax.FanOut(2), stax.parallel(mlp, stax.Identity()), stax.FanInSum(),
                                stax.LayerNorm())
        blocks = [attn_block, mlp_block] * depth
        return stax.serial(stax.Dense(64, W_std=1.0, b_std=0.1), *blocks, readout(stax),
                           stax.Dense(1, W_std=1.0, b_std=0.1))
    return build


CASES = {
    "seq_flatten": (seq_flatten, "seq"),
    "seq_global_pool": (seq_global_pool, "seq"),
    "layernorm_fc": (layernorm_fc(-1), "fc"),
    "layernorm_fc_axis1": (layernorm_fc(1), "fc"),
    "layernorm_seq_flatten": (layernorm_seq(-1, FLAT), "seq"),
    "layernorm_seq_pool": (layernorm_seq(-1, GAP), "seq"),
    "layernorm_seq_all_axes": (layernorm_seq((-2, -1), FLAT), "seq"),
    "layernorm_image_flatten": (layernorm_image(-1, FLAT), "image"),
    "layernorm_image_all_axes": (layernorm_image((-3, -2, -1), GAP), "image"),
    "layernorm_image_rows": (layernorm_image((-2, -1), FLAT), "image"),
    "attention_softmax_1head": (attention(), "seq"),
    "attention_softmax_2heads": (attention(n_heads=2), "seq"),
    "attention_flatten_readout": (attention(readout=FLAT, n_heads=2), "seq"),
    "attention_on_inputs": (attention(first=False), "seq"),
    "attention_no_bias": (attention(b_std=None), "seq"),
    "attention_identity": (attention(attention_mechanism="IDENTITY"), "seq"),
    "attention_abs": (attention(attention_mechanism="ABS"), "seq"),
    "attention_relu": (attention(attention_mechanism="RELU", n_heads=2), "seq"),
    "attention_image": (attention(n_heads=2), "image"),
    "transformer": (transformer(), "seq"),
    "transformer_flatten": (transformer(readout=FLAT, depth=1), "seq"),
    "transformer_image": (transformer(depth=1), "image"),
    # NT computes these; ntkscale refuses them (not implemented yet): strict xfails in the test
    "attention_sqrt_scaling_identity": (attention(linear_scaling=False, attention_mechanism="IDENTITY"),
                                        "seq"),
    "attention_pos_emb_sum": (attention(pos_emb_type="SUM"), "seq"),
    # NT refuses (no closed form): ntkscale must refuse too
    "attention_sqrt_scaling_softmax": (attention(linear_scaling=False), "seq"),
}

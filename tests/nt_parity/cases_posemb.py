"""Parity cases for GlobalSelfAttention's positional embeddings (``pos_emb_type`` SUM/CONCAT)
and ``linear_scaling=False`` with the IDENTITY mechanism (issue 22): functions of a ``stax``
module, like :mod:`cases_attention`, so ``generate_attention.py posemb`` builds them with
``neural_tangents.stax`` and ``test_posemb_parity.py`` with ``ntkscale.stax``.

Input kinds: ``"seq"`` sequences (n, T, C), ``"image"`` NHWC images.
"""

from __future__ import annotations

import numpy as np

INPUTS = {"seq": (4, 3, (5, 6)), "image": (3, 2, (3, 4, 2))}


def inputs(kind: str, seed: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """``x1`` (n1, ...) and ``x2`` (n2, ...), standard normal, float64."""
    n1, n2, shape = INPUTS[kind]
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n1, *shape)), rng.standard_normal((n2, *shape))


def decay(d):
    """A power decay of the distance (works on NumPy and JAX arrays)."""
    return 1.0 / (1.0 + d)


def decay_sq(d):
    """A faster power decay."""
    return (1.0 + 0.5 * d) ** -2


FLAT = lambda s: s.Flatten()  # noqa: E731
GAP = lambda s: s.GlobalAvgPool()  # noqa: E731


def attention(readout=GAP, first=True, norm=False, n_heads=1, **kw):
    """Dense -> GlobalSelfAttention(**kw) -> [LayerNorm] -> Relu -> Dense -> readout -> Dense."""
    kw = {"W_key_std": 1.3, "W_query_std": 0.8, "W_value_std": 1.2, "W_out_std": 0.9, "b_std": 0.1, **kw}

    def build(stax):
        att = stax.GlobalSelfAttention(32, 32, 32, n_heads, **kw)
        head = [stax.Dense(64, W_std=1.2, b_std=0.1)] if first else []
        mid = [stax.LayerNorm()] if norm else []
        return stax.serial(*head, att, *mid, stax.Relu() if first else stax.Identity(),
                           stax.Dense(64, W_std=1.1), readout(stax), stax.Dense(1, W_std=0.8))
    return build


def layer(**kw):
    """The attention layer alone (finite-network parity: NT's parameters and outputs)."""
    def build(stax):
        return stax.GlobalSelfAttention(8, 4, 3, 2, W_key_std=1.3, W_query_std=0.8, W_value_std=1.2,
                                        W_out_std=0.9, b_std=0.1, **kw)
    return build


S, C = "SUM", "CONCAT"
SQ = {"linear_scaling": False, "attention_mechanism": "IDENTITY"}

CASES = {
    # linear_scaling=True: mechanisms x SUM/CONCAT x val_pos_emb x p_norm x decay
    "sum_softmax": (attention(pos_emb_type=S), "seq"),
    "sum_softmax_val": (attention(pos_emb_type=S, val_pos_emb=True), "seq"),
    "sum_softmax_decay_p2": (attention(pos_emb_type=S, pos_emb_decay_fn=decay), "seq"),
    "sum_softmax_decay_p1_val": (attention(pos_emb_type=S, pos_emb_decay_fn=decay, pos_emb_p_norm=1,
                                           val_pos_emb=True, W_pos_emb_std=0.7), "seq"),
    "sum_identity_decay_p1": (attention(pos_emb_type=S, attention_mechanism="IDENTITY", pos_emb_p_norm=1,
                                        pos_emb_decay_fn=decay_sq), "seq"),
    "sum_abs_val": (attention(pos_emb_type=S, attention_mechanism="ABS", val_pos_emb=True,
                              W_pos_emb_std=1.4), "seq"),
    "sum_relu_decay_p2_2heads": (attention(pos_emb_type=S, attention_mechanism="RELU", n_heads=2,
                                           pos_emb_decay_fn=decay), "seq"),
    "sum_on_inputs": (attention(first=False, pos_emb_type=S, pos_emb_decay_fn=decay, val_pos_emb=True),
                      "seq"),
    "sum_layernorm_flatten": (attention(readout=FLAT, norm=True, pos_emb_type=S, pos_emb_decay_fn=decay,
                                       pos_emb_p_norm=1), "seq"),
    "sum_no_bias": (attention(b_std=None, pos_emb_type=S, val_pos_emb=True), "seq"),
    "concat_softmax": (attention(pos_emb_type=C), "seq"),
    "concat_softmax_val_decay_p1": (attention(pos_emb_type=C, val_pos_emb=True, pos_emb_decay_fn=decay,
                                              pos_emb_p_norm=1, n_chan_pos_emb=16, W_pos_emb_std=0.7),
                                    "seq"),
    "concat_identity_val": (attention(pos_emb_type=C, attention_mechanism="IDENTITY", val_pos_emb=True,
                                      n_chan_pos_emb=8), "seq"),
    "concat_abs_decay_p2": (attention(pos_emb_type=C, attention_mechanism="ABS", pos_emb_decay_fn=decay_sq,
                                      n_chan_pos_emb=100), "seq"),
    "concat_relu_decay_p1_val": (attention(pos_emb_type=C, attention_mechanism="RELU", val_pos_emb=True,
                                           pos_emb_decay_fn=decay, pos_emb_p_norm=1, W_pos_emb_std=1.5),
                                 "seq"),
    "concat_on_inputs": (attention(first=False, pos_emb_type=C, n_chan_pos_emb=3, val_pos_emb=True,
                                   pos_emb_decay_fn=decay), "seq"),
    "concat_layernorm_flatten": (attention(readout=FLAT, norm=True, n_heads=2, pos_emb_type=C,
                                           pos_emb_decay_fn=decay), "seq"),
    "image_sum_decay_p1": (attention(pos_emb_type=S, pos_emb_decay_fn=decay, pos_emb_p_norm=1), "image"),
    "image_concat_val_decay_p2": (attention(pos_emb_type=C, val_pos_emb=True, pos_emb_decay_fn=decay_sq,
                                            n_chan_pos_emb=5), "image"),
    "image_sum_identity_onehot": (attention(pos_emb_type=S, attention_mechanism="IDENTITY"), "image"),
    # linear_scaling=False, IDENTITY: NT's closed form, with and without embeddings
    "sqrt_identity": (attention(**SQ), "seq"),
    "sqrt_identity_no_bias": (attention(b_std=None, **SQ), "seq"),
    "sqrt_identity_on_inputs": (attention(first=False, **SQ), "seq"),
    "sqrt_identity_sum": (attention(pos_emb_type=S, **SQ), "seq"),
    "sqrt_identity_sum_val_decay_p1": (attention(pos_emb_type=S, val_pos_emb=True, pos_emb_decay_fn=decay,
                                                 pos_emb_p_norm=1, **SQ), "seq"),
    "sqrt_identity_concat_decay_p2": (attention(pos_emb_type=C, pos_emb_decay_fn=decay, n_chan_pos_emb=16,
                                                W_pos_emb_std=0.8, **SQ), "seq"),
    "sqrt_identity_concat_val": (attention(pos_emb_type=C, val_pos_emb=True, **SQ), "seq"),
    "sqrt_identity_layernorm_flatten": (attention(readout=FLAT, norm=True, n_heads=2, pos_emb_type=S,
                                                  pos_emb_decay_fn=decay_sq, **SQ), "seq"),
    "sqrt_identity_image": (attention(pos_emb_type=C, pos_emb_decay_fn=decay, pos_emb_p_norm=1, **SQ),
                            "image"),
    # NT refuses (no closed form): ntkscale must refuse too
    "sqrt_softmax_sum": (attention(linear_scaling=False, pos_emb_type=S), "seq"),
    "sqrt_relu_concat": (attention(linear_scaling=False, attention_mechanism="RELU", pos_emb_type=C),
                         "seq"),
}

#: finite networks: the layer alone, NT's init_fn(PRNGKey(0)) parameters and apply_fn output on x1
FINITE = {
    "finite_none": (layer(), "seq"),
    "finite_sum": (layer(pos_emb_type=S), "seq"),
    "finite_sum_val_decay": (layer(pos_emb_type=S, val_pos_emb=True, pos_emb_decay_fn=decay,
                                   W_pos_emb_std=0.7), "seq"),
    "finite_concat": (layer(pos_emb_type=C, n_chan_pos_emb=5), "seq"),
    "finite_concat_val_decay": (layer(pos_emb_type=C, val_pos_emb=True, pos_emb_decay_fn=decay_sq,
                                      pos_emb_p_norm=1), "image"),
    "finite_sqrt_identity_concat": (layer(pos_emb_type=C, linear_scaling=False, attention_mechanism="IDENTITY",
                                          pos_emb_decay_fn=decay), "seq"),
    "finite_sqrt_softmax_sum": (layer(pos_emb_type=S, linear_scaling=False), "image"),
}
PARAMS = ("Q", "K", "V", "W_out", "b", "pos_emb")

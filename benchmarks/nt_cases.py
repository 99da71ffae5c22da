"""Architectures and inputs of ``bench_nt.py``, as functions of a ``stax`` module, so that
neural-tangents (``nt_peer.py``, its own venv) and ntkscale build the same network."""

from __future__ import annotations

import math

import numpy as np


def _rows(d):
    def make(n, seed):
        return np.random.default_rng(seed).standard_normal((n, d))
    return make


def _seqs(T, C):
    def make(n, seed):
        return np.random.default_rng(seed).standard_normal((n, T, C))
    return make


def fc_relu(stax):
    """ALGORITHMS.md's measured setting: 3 x [Dense(512, sqrt 2, 0.1), Relu], Dense(1)."""
    layers = []
    for _ in range(3):
        layers += [stax.Dense(512, W_std=math.sqrt(2.0), b_std=0.1), stax.Relu()]
    return stax.serial(*layers, stax.Dense(1))


def _one(act):
    def build(stax):
        return stax.serial(stax.Dense(512, W_std=1.5, b_std=0.1), act(stax), stax.Dense(1))
    return build


def layernorm_mlp(stax):
    return stax.serial(stax.Dense(256, W_std=1.4, b_std=0.1), stax.LayerNorm(), stax.Relu(),
                       stax.Dense(256, W_std=1.4, b_std=0.1), stax.LayerNorm(), stax.Dense(1))


def transformer_block(stax):
    att = stax.GlobalSelfAttention(64, 64, 64, 2, linear_scaling=True, W_key_std=1.0, W_query_std=1.0,
                                   W_value_std=1.4, W_out_std=1.0, b_std=0.1)
    mlp = stax.serial(stax.Dense(64, W_std=1.4, b_std=0.1), stax.Relu(), stax.Dense(64, W_std=1.4, b_std=0.1))
    res = lambda branch: stax.serial(stax.FanOut(2), stax.parallel(branch, stax.Identity()),  # noqa: E731
                                     stax.FanInSum(), stax.LayerNorm())
    return stax.serial(stax.Dense(64, W_std=1.4, b_std=0.1), res(att), res(mlp), stax.GlobalAvgPool(),
                       stax.Dense(1))


#: name -> (builder, inputs(n, seed)); default n per case in bench_nt.py
CASES = {
    "fc_relu_d784": (fc_relu, _rows(784)),
    "exp_d64": (_one(lambda s: s.Exp()), _rows(64)),
    "gaussian_d64": (_one(lambda s: s.Gaussian()), _rows(64)),
    "rbf_d64": (_one(lambda s: s.Rbf()), _rows(64)),
    "layernorm_mlp_d64": (layernorm_mlp, _rows(64)),
    "transformer_T8_C16": (transformer_block, _seqs(8, 16)),
}

"""The infinite-width NTK/NNGP of the study's transformer (:mod:`.transformer`), built from
:mod:`ntkscale.stax` layers.

Inputs: token sequences ``(n, T)`` become one-hot arrays ``(n, T, V + T)`` (token one-hot
concatenated with a position one-hot), so that ``Dense(W_std = sqrt(V + T))`` on channels is
exactly ``E[x_t] + P_t`` (two unit entries per position; fan-in ``V + T``; the same forward
covariance and the same NTK share as the ``N(0, 1)`` embeddings of fan-in 1). Then, per
pre-LN block::

    h + Attn(LN(h)),   h + W2 GELU(W1 LN(h) + b1) + b2

and ``mean_t LN(h) @ w + b``. The zero-initialized trainable pieces of the finite model
(LayerNorm scale/shift, MLP and readout biases) contribute to the NTK but not to the NNGP:
``Dense(parameterization='standard', s=(n_in, 1), W_std=1, b_std=0)`` has exactly the rule
``nngp <- nngp; ntk <- ntk + nngp + 1`` (an NTK-parameterized weight with a zero-init bias),
which is what a LayerNorm's ``(scale, shift)`` at ``(1, 0)`` adds, and what ``W1`` with
``b1``, ``W2`` with ``b2`` and the readout with its bias add. Every layer here has width 1
(the kernel does not depend on it), so ``s = (1, 1)``.

Differences from the finite model (documented, not removable with the closed forms here):

* attention: the finite model has independent ``W_Q``, ``W_K`` and logits ``q.k/sqrt(d_h)``,
  which stay random (variance ~1) at any width, so a single-head model has no deterministic
  (or Gaussian) NTK limit; the analytic layer is neural-tangents' ``linear_scaling=True``
  attention (keys and queries tied, logits ``q.k/d_h`` -> ``cov(t, s)`` deterministic,
  softmax over key positions; Hron et al. 2020), with ``W_Q = W_K = W_V = W_O`` std 1 as in
  the finite model. Its value/output share of the NTK matches; the query/key share vanishes;
* GELU: the kernel is exact GELU; the finite model uses JAX's default tanh approximation;
* LayerNorm ``eps = 1e-5`` in both (a per-position norm over channels).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["one_hot_positions", "infinite_transformer", "analytic_kernels"]


def one_hot_positions(x: np.ndarray, vocab: int) -> np.ndarray:
    """Tokens (n, T) -> float64 (n, T, V + T): token one-hot, then position one-hot."""
    x = np.asarray(x)
    n, t = x.shape
    tok = np.eye(vocab)[x]
    pos = np.broadcast_to(np.eye(t), (n, t, t))
    return np.concatenate([tok, pos], axis=-1)


def infinite_transformer(cfg: Any) -> Any:
    """``(init_fn, apply_fn, kernel_fn)`` of the analytic architecture for a
    :class:`~ntkscale.studies.transformer.TransformerConfig` (depth, heads; ``n_out`` 1)."""
    from .. import stax

    eps = 1e-5

    def affine() -> Any:  # weight at 1 (nngp share) + zero-init bias (1): LN scale/shift
        return stax.Dense(1, W_std=1.0, b_std=0.0, parameterization="standard")

    def ln() -> Any:
        return stax.serial(stax.LayerNorm(axis=-1, eps=eps), affine())

    def residual(branch: Any) -> Any:
        return stax.serial(stax.FanOut(2), stax.parallel(branch, stax.Identity()),
                           stax.FanInSum())

    layers = [stax.Dense(1, W_std=float(cfg.vocab + cfg.seq_len) ** 0.5)]
    for _ in range(cfg.depth):
        att = stax.GlobalSelfAttention(1, 1, 1, cfg.n_heads, linear_scaling=True,
                                       W_key_std=1.0, W_query_std=1.0, W_value_std=1.0,
                                       W_out_std=1.0, attention_mechanism="SOFTMAX")
        mlp = stax.serial(ln(), stax.Dense(1, W_std=1.0, b_std=0.0, parameterization="standard"),
                          stax.Gelu(),
                          stax.Dense(1, W_std=1.0, b_std=0.0, parameterization="standard"))
        layers += [residual(stax.serial(ln(), att)), residual(mlp)]
    layers += [ln(), stax.GlobalAvgPool(),
               stax.Dense(1, W_std=1.0, b_std=0.0, parameterization="standard")]
    return stax.serial(*layers)


def analytic_kernels(cfg: Any, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(nngp, ntk)`` Grams (float64) of token sequences ``x`` (n, T) under
    :func:`infinite_transformer`."""
    from ..kernels.backend import jax_x64

    _, _, kernel_fn = infinite_transformer(cfg)
    xo = one_hot_positions(x, cfg.vocab)
    with jax_x64(np.float64):
        k = kernel_fn(xo, None, ("nngp", "ntk"))
    nngp, ntk = (np.asarray(a, dtype=np.float64) for a in k)
    return (nngp + nngp.T) / 2, (ntk + ntk.T) / 2

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
``Dense(parameterization='standard', s=(n_in, n_out), W_std=1, b_std=0)`` on an input of
width ``n_in`` has exactly the rule ``nngp <- nngp; ntk <- ntk + nngp + 1`` (an
NTK-parameterized weight with a zero-init bias), which is what a LayerNorm's ``(scale,
shift)`` at ``(1, 0)`` adds, and what ``W1`` with ``b1``, ``W2`` with ``b2`` and the readout
with its bias add. The kernel does not depend on the widths; ``infinite_transformer(cfg,
width=d)`` also gives the finite network of width ``d`` of this architecture (its own
``init_fn``/``apply_fn``).

Differences from the finite model (``benchmarks/transformer_floor.py``; RESULTS §00000f):

* attention -- **the cause of the ~2 % floor**. The study model (``attention='standard'``)
  has independent ``W_Q``, ``W_K`` and logits ``q.k/sqrt(d_h)``: as the width grows they
  tend to a centred Gaussian process (covariance ``C_tt' C_ss'``; Hron et al. 2020's
  ``d^-1/2`` scaling), not to a number, so with one head the NTK stays random and its mean
  over initializations tends to another kernel (an average over random attention weights,
  plus a query/key share that does not vanish), for which no closed form is implemented.
  This kernel is neural-tangents' ``linear_scaling=True`` layer (keys and queries tied,
  logits ``k.k/d_h`` -> ``cov(t, s)``, softmax over key positions), with ``W_Q = W_K = W_V =
  W_O`` std 1. Measured on the test's inputs (d = 64 ... 1024, 32 seeds): the same seeds'
  ``standard - tied_linear`` NTK difference stays at 1.1-1.8 % of the kernel (1.8 ± 0.6 % at
  d = 1024; the share through the logits 1.3-2.0 %, of it W_Q/W_K 0.3-0.5 %), while
  ``attention='tied_linear'`` (0.2 ± 0.7 % at d = 1024) and this architecture's own finite
  network (0.8 ± 0.7 %) converge to the kernel, and ``attention='linear'`` (independent,
  ``1/d``: logits -> 0) to the kernel with ``W_key_std = 0`` (uniform attention). A 3-seed
  mean adds seed noise of ~2.5-3 % (per-seed deviations 4.5-5 % at d = 256-1024). Use
  ``attention='tied_linear'`` for a finite model with this limit;
* GELU: the kernel is exact GELU (``gelu_approximate`` only changes the finite network);
  the study's tanh approximation moves the NTK by ~4e-6 relative (measured): negligible;
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


def infinite_transformer(cfg: Any, width: int = 1) -> Any:
    """``(init_fn, apply_fn, kernel_fn)`` of the analytic architecture for a
    :class:`~ntkscale.studies.transformer.TransformerConfig` (depth, heads, MLP ratio,
    ``attention``, ``gelu_approximate``; ``n_out`` 1).

    ``width``: the layer widths of the finite network (``init_fn``/``apply_fn``; a multiple
    of ``cfg.n_heads``); the kernel does not depend on it. Its LayerNorm affines and biases
    are NTK-parameterized dense maps with zero-init biases (standard parameterization with
    ``s = (fan_in, fan_out)``), not the study model's per-channel scale and shift: the same
    limit, other finite-width corrections. ``cfg.attention``: ``'linear'`` (independent keys
    and queries, 1/d logits) has the limit with logits 0 (``W_key_std = 0``, uniform
    attention); ``'standard'`` and ``'tied_linear'`` get the tied 1/d kernel, the limit of
    ``'tied_linear'`` only (module notes).
    """
    from .. import stax

    eps = 1e-5
    w = int(width)
    if w < 1 or (w > 1 and w % cfg.n_heads):
        raise ValueError(f"width must be 1 or a multiple of n_heads={cfg.n_heads}, got {width!r}")
    head = max(w // cfg.n_heads, 1)
    qk = 0.0 if cfg.attention == "linear" else 1.0

    def dense(n_in: int, n_out: int) -> Any:  # NTK weight + zero-init bias: ntk += nngp + 1
        return stax.Dense(1, W_std=1.0, b_std=0.0, parameterization="standard", s=(n_in, n_out))

    def ln() -> Any:  # LayerNorm, then its scale (1) and shift (0)
        return stax.serial(stax.LayerNorm(axis=-1, eps=eps), dense(w, w))

    def residual(branch: Any) -> Any:
        return stax.serial(stax.FanOut(2), stax.parallel(branch, stax.Identity()),
                           stax.FanInSum())

    r = cfg.mlp_ratio
    layers = [stax.Dense(w, W_std=float(cfg.vocab + cfg.seq_len) ** 0.5)]
    for _ in range(cfg.depth):
        att = stax.GlobalSelfAttention(w, head, head, cfg.n_heads, linear_scaling=True,
                                       W_key_std=qk, W_query_std=1.0, W_value_std=1.0,
                                       W_out_std=1.0, attention_mechanism="SOFTMAX")
        mlp = stax.serial(ln(), dense(w, r * w),
                          stax.Gelu(approximate=cfg.gelu_approximate),
                          dense(r * w, w))
        layers += [residual(stax.serial(ln(), att)), residual(mlp)]
    layers += [ln(), stax.GlobalAvgPool(), dense(w, 1)]
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

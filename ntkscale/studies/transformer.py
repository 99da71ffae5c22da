"""A small transformer encoder in plain JAX (no Flax): parameters are a pytree of dicts.

Token embedding + learned positional embedding, ``depth`` pre-LN encoder blocks (multi-head
self-attention, then a GELU MLP, each on a residual branch), a final LayerNorm, mean pooling
over positions and a linear readout::

    h = E[x] + P                                   # shape: (n, T, d)
    h = h + Attn(LN(h));  h = h + MLP(LN(h))       # per block
    out = mean_t LN(h) @ W_out + b_out             # shape: (n, k)

``init(key, cfg) -> params`` and ``apply(params, x, cfg) -> (n, k)`` (or
``make_apply(cfg)`` for the ``apply_fn(params, x)`` that :mod:`ntkscale.kernels.network`
and the empirical NTK expect). The model size is the embedding width ``d_model``; heads,
depth and the MLP ratio stay fixed across a width sweep.

Parameterization (``cfg.parameterization``) of the dense weights (fan-in ``m``):

* ``"ntk"`` -- ``W ~ N(0, 1)``, applied as ``x @ W / sqrt(m)`` (Jacot et al.; the kernel
  has a finite infinite-width limit under plain GD);
* ``"standard"`` -- ``W ~ N(0, 1/m)``, applied as ``x @ W``.

Both give the same function at initialization. Embeddings (one-hot input, one nonzero
entry: fan-in 1) are ``N(0, 1)`` in both; biases start at 0 and LayerNorm at scale 1, shift 0.
The query/key/value/output projections have no bias.

Attention logits (``cfg.attention``; per head of width ``d_h = d / n_heads``):

* ``"standard"`` (default) -- independent ``W_Q``, ``W_K``, logits ``q.k / sqrt(d_h)``
  (Vaswani et al.). As the width grows the logits tend to a centred Gaussian process, not to
  a number (Hron et al. 2020, "d^-1/2 scaling"): with a fixed number of heads the NTK stays
  random, and its mean over initializations is not neural-tangents' closed form
  (``benchmarks/transformer_floor.py``);
* ``"tied_linear"`` -- keys and queries tied (``W_Q = W_K``, no ``wq`` parameter), logits
  ``k.k / d_h``: they tend to the input's position covariance, the limit of
  neural-tangents' ``GlobalSelfAttention(linear_scaling=True)``
  (:mod:`.transformer_infinite`);
* ``"linear"`` -- independent ``W_Q``, ``W_K`` with logits ``q.k / d_h``: they tend to 0,
  i.e. uniform attention in the limit.

``gelu_approximate`` (default True, JAX's default) picks the tanh approximation of GELU;
False the exact ``x Phi(x)`` of the analytic kernel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["TransformerConfig", "init", "apply", "make_apply", "param_count",
           "param_count_formula", "attention_weights"]

PARAMETERIZATIONS = ("ntk", "standard")
ATTENTIONS = ("standard", "tied_linear", "linear")


@dataclass(frozen=True)
class TransformerConfig:
    """Shape of the encoder.

    Attributes
    ----------
    vocab, seq_len : int
        Token alphabet size V and sequence length T (inputs are int arrays (n, T)).
    d_model : int
        Embedding width d (the model-size axis); a multiple of ``n_heads``.
    n_heads, depth, mlp_ratio : int
        Heads per attention layer, encoder blocks L, MLP hidden width ``mlp_ratio * d``.
    n_out : int
        Outputs k.
    parameterization : {'ntk', 'standard'}
    attention : {'standard', 'tied_linear', 'linear'}
        Logit scaling and key/query tying (module notes).
    gelu_approximate : bool
        tanh-approximate GELU (JAX's default) or, False, the exact one.
    """

    vocab: int = 4
    seq_len: int = 10
    d_model: int = 8
    n_heads: int = 2
    depth: int = 1
    mlp_ratio: int = 2
    n_out: int = 1
    parameterization: str = "ntk"
    attention: str = "standard"
    gelu_approximate: bool = True

    def __post_init__(self) -> None:
        for name in ("vocab", "seq_len", "d_model", "n_heads", "depth", "mlp_ratio", "n_out"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be a multiple of n_heads="
                             f"{self.n_heads}: pick d_model = {self.n_heads} * head width")
        if self.parameterization not in PARAMETERIZATIONS:
            raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, got "
                             f"{self.parameterization!r}")
        if self.attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {self.attention!r}")
        if not isinstance(self.gelu_approximate, bool):
            raise ValueError(f"gelu_approximate must be a bool, got {self.gelu_approximate!r}")


def _jax():
    try:
        import jax
        import jax.numpy as jnp
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("the transformer needs JAX: pip install 'ntkscale[jax]'") from e
    return jax, jnp


def param_count_formula(cfg: TransformerConfig) -> int:
    """Number of scalar parameters in closed form.

    ``(V + T) d + L (4 d^2 + 2 r d^2 + (r + 5) d) + 2 d + (d + 1) k``: embeddings; per block
    two LayerNorms (4d), Q/K/V/O (4d^2; 3d^2 with ``attention='tied_linear'``), MLP weights
    (2 r d^2) and biases (r d + d); the final LayerNorm (2d); the readout.
    """
    d, r, k = cfg.d_model, cfg.mlp_ratio, cfg.n_out
    qkvo = 3 if cfg.attention == "tied_linear" else 4
    block = qkvo * d * d + 2 * r * d * d + (r + 5) * d
    return (cfg.vocab + cfg.seq_len) * d + cfg.depth * block + 2 * d + (d + 1) * k


def param_count(params: Any) -> int:
    """Number of scalar parameters in a pytree (counted from the arrays)."""
    jax, _ = _jax()
    return int(sum(leaf.size for leaf in jax.tree_util.tree_leaves(params)))


def _dense(key: Any, fan_in: int, fan_out: int, cfg: TransformerConfig) -> Any:
    jax, _ = _jax()
    w = jax.random.normal(key, (fan_in, fan_out))
    return w if cfg.parameterization == "ntk" else w / fan_in ** 0.5


def _ln_params(d: int) -> dict:
    _, jnp = _jax()
    return {"scale": jnp.ones((d,)), "shift": jnp.zeros((d,))}


def init(key: Any, cfg: TransformerConfig) -> dict:
    """Random parameters (float32 unless JAX x64 is on).

    Parameters
    ----------
    key : jax.random.PRNGKey
    cfg : TransformerConfig

    Returns
    -------
    dict
        ``{"embed": (V, d), "pos": (T, d), "blocks": [per block: "ln1", "attn" {"wq", "wk",
        "wv", "wo": (d, d); no "wq" with ``attention='tied_linear'``}, "ln2", "mlp" {"w1":
        (d, r d), "b1", "w2": (r d, d), "b2"}],
        "ln_f", "head": {"w": (d, k), "b": (k,)}}``; :func:`param_count` of it equals
        :func:`param_count_formula`.
    """
    jax, jnp = _jax()
    d, h = cfg.d_model, cfg.mlp_ratio * cfg.d_model
    k_emb, k_pos, k_head, k_blocks = jax.random.split(key, 4)
    blocks = []
    for kb in jax.random.split(k_blocks, cfg.depth):
        kq, kk, kv, ko, k1, k2 = jax.random.split(kb, 6)
        attn = {"wq": _dense(kq, d, d, cfg), "wk": _dense(kk, d, d, cfg),
                "wv": _dense(kv, d, d, cfg), "wo": _dense(ko, d, d, cfg)}
        if cfg.attention == "tied_linear":
            del attn["wq"]  # queries are the keys
        blocks.append({
            "ln1": _ln_params(d),
            "attn": attn,
            "ln2": _ln_params(d),
            "mlp": {"w1": _dense(k1, d, h, cfg), "b1": jnp.zeros((h,)),
                    "w2": _dense(k2, h, d, cfg), "b2": jnp.zeros((d,))},
        })
    return {"embed": jax.random.normal(k_emb, (cfg.vocab, d)),
            "pos": jax.random.normal(k_pos, (cfg.seq_len, d)),
            "blocks": blocks,
            "ln_f": _ln_params(d),
            "head": {"w": _dense(k_head, d, cfg.n_out, cfg), "b": jnp.zeros((cfg.n_out,))}}


def _layer_norm(p: dict, x: Any, eps: float = 1e-5) -> Any:
    _, jnp = _jax()
    mu = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean((x - mu) ** 2, axis=-1, keepdims=True)
    return (x - mu) / jnp.sqrt(var + eps) * p["scale"] + p["shift"]


def _mm(x: Any, w: Any, cfg: TransformerConfig) -> Any:
    out = x @ w
    return out / w.shape[0] ** 0.5 if cfg.parameterization == "ntk" else out


def attention_weights(p: dict, x: Any, cfg: TransformerConfig) -> Any:
    """Softmax attention weights of one layer, shape (n, H, T, T) (rows: queries), for its
    input ``x`` (n, T, d) (after the LayerNorm); logits per ``cfg.attention``."""
    jax, jnp = _jax()
    n, t, d = x.shape
    hd = d // cfg.n_heads

    def heads(w: Any) -> Any:  # shape: (n, H, T, hd)
        return _mm(x, w, cfg).reshape(n, t, cfg.n_heads, hd).transpose(0, 2, 1, 3)

    k = heads(p["wk"])
    q = k if cfg.attention == "tied_linear" else heads(p["wq"])
    scale = hd ** 0.5 if cfg.attention == "standard" else hd
    return jax.nn.softmax(q @ k.transpose(0, 1, 3, 2) / scale, axis=-1)


def _attention(p: dict, x: Any, cfg: TransformerConfig) -> Any:
    """Multi-head self-attention, shape (n, T, d) -> (n, T, d)."""
    n, t, d = x.shape
    hd = d // cfg.n_heads
    v = _mm(x, p["wv"], cfg).reshape(n, t, cfg.n_heads, hd).transpose(0, 2, 1, 3)
    att = attention_weights(p, x, cfg)  # (n, H, T, T)
    o = (att @ v).transpose(0, 2, 1, 3).reshape(n, t, d)
    return _mm(o, p["wo"], cfg)


def apply(params: dict, x: Any, cfg: TransformerConfig) -> Any:
    """Outputs for token sequences.

    Parameters
    ----------
    params : dict
        From :func:`init` with the same ``cfg``.
    x : int array, shape (n, T)
        Tokens in ``[0, V)``.
    cfg : TransformerConfig

    Returns
    -------
    array, shape (n, k)

    References
    ----------
    Vaswani et al., "Attention is all you need", NeurIPS 2017; Xiong et al., "On layer
    normalization in the transformer architecture", ICML 2020 (pre-LN); Hron et al.,
    "Infinite attention", ICML 2020 (logit scalings in the wide limit).
    """
    jax, jnp = _jax()
    h = params["embed"][x] + params["pos"][None, : x.shape[1]]  # shape: (n, T, d)
    for blk in params["blocks"]:
        h = h + _attention(blk["attn"], _layer_norm(blk["ln1"], h), cfg)
        m = _layer_norm(blk["ln2"], h)
        m = jax.nn.gelu(_mm(m, blk["mlp"]["w1"], cfg) + blk["mlp"]["b1"],
                        approximate=cfg.gelu_approximate)
        h = h + _mm(m, blk["mlp"]["w2"], cfg) + blk["mlp"]["b2"]
    pooled = jnp.mean(_layer_norm(params["ln_f"], h), axis=1)  # shape: (n, d)
    return _mm(pooled, params["head"]["w"], cfg) + params["head"]["b"]


def make_apply(cfg: TransformerConfig) -> Callable[[Any, Any], Any]:
    """``apply_fn(params, x) -> (n, k)`` with ``cfg`` bound (the NTK helpers' signature)."""

    def apply_fn(params: Any, x: Any, **kwargs: Any) -> Any:
        return apply(params, x, cfg)

    return apply_fn

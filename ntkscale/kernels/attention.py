"""Global self-attention, ``GlobalSelfAttention`` (neural-tangents' ``stax`` layer), and its
``AttentionMechanism``/``PositionalEmbedding`` enums.

Acts on sequences ``(n, T, C)`` and images ``(n, H, W, C)`` (every position attends to
every position; a sequence is an image of height 1 to the kernel). Needs the ``"full"``
position-pair layout (:mod:`~ntkscale.kernels.spatial`).

Kernel (Hron et al. 2020, the ``linear_scaling=True`` variant neural-tangents computes in
closed form): with keys and queries tied and their dot products scaled by ``1/n_chan_key``,
the attention logits of an input converge to ``QK_std * cov`` (``cov``: its own
position-pair covariance, ``QK_std = W_query_std W_key_std``), so the attention weights
are a deterministic function of the input, ``G = mechanism(QK_std cov)`` (softmax over
the key positions, or ``identity``/``abs``/``relu`` elementwise), and

    nngp' = OV^2 G1 nngp G2^T + b^2,    ntk' = OV^2 G1 ntk G2^T + b^2 + 2 OV^2 G1 nngp G2^T

per pair of inputs (matrices over positions; ``OV = W_out_std W_value_std``; the factor 2
is the value and output weights' share of the NTK; the key/query weights' share vanishes
in the limit).

Positional embeddings (``pos_emb_type='SUM'``/``'CONCAT'``): ``G`` is computed from
``w_in cov + w_pe R`` (``R`` the embeddings' covariance over position pairs), and with
``val_pos_emb`` the values' ``nngp``/``ntk``/``cov`` get the same term; weights and ``R`` in
:mod:`~ntkscale.kernels.posemb`. ``linear_scaling=False`` (independent keys and queries,
logits scaled by ``1/sqrt(n_chan_key)``) has a closed form only for ``'IDENTITY'``
(:func:`~ntkscale.kernels.posemb.sqrt_identity`); neural-tangents and ntkscale refuse the
other mechanisms there.

References
----------
Hron, Bahri, Sohl-Dickstein & Novak (2020), "Infinite attention: NNGP and NTK for deep
attention networks", ICML, arXiv:2006.10540.
Novak et al. (2020), "Neural Tangents", ICLR (``stax.GlobalSelfAttention``).
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass
from typing import Any, Callable, Optional

from .backend import Namespace
from .base import Layer, UnsupportedArchitectureError, _check_float, layer_type
from .posemb import finite_pos_emb, interpolate, interpolation_weights, pos_emb_cov, sqrt_identity
from .state import KernelState

__all__ = ["GlobalSelfAttention", "AttentionMechanism", "PositionalEmbedding"]


class PositionalEmbedding(enum.Enum):
    """Positional embeddings of :class:`GlobalSelfAttention` (neural-tangents' members)."""

    NONE = "NONE"
    SUM = "SUM"
    CONCAT = "CONCAT"


class AttentionMechanism(enum.Enum):
    """The function of the key-query dot products (neural-tangents' members)."""

    SOFTMAX = "SOFTMAX"
    IDENTITY = "IDENTITY"
    ABS = "ABS"
    RELU = "RELU"


def _enum_name(cls: type, value: Any, field: str) -> str:
    name = value.name if isinstance(value, cls) else str(value).upper()
    if name not in cls.__members__:
        raise ValueError(f"GlobalSelfAttention: {field} must be one of "
                         f"{', '.join(cls.__members__)}, got {value!r}")
    return name


def _positive_int(value: Any, field: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"GlobalSelfAttention: {field} must be a positive int, got {value!r}")
    return value


@layer_type()
@dataclass(frozen=True)
class GlobalSelfAttention(Layer):
    """Global scaled dot-product self-attention, neural-tangents' signature and defaults.

    ``f_h(x) = mechanism(QK_std Q_h(x) K_h(x)^T / (C n_chan_key^s)) V_h(x)`` per head (``s`` =
    1 with ``linear_scaling``, keys and queries then tied; 1/2 without, independent), the
    heads concatenated and mixed by ``W_out``: ``f(x) = OV_std concat_h f_h(x) W_out /
    sqrt(n_chan_val n_heads C) + b_std b``, all weights ``N(0, 1)`` (NTK parameterization).

    Positional embeddings ``E`` (1, *positions, C_pe), ``N(0, 1)`` (mixed over positions by
    the Cholesky factor of ``R = pos_emb_decay_fn(sum_a |i_a - j_a|^pos_emb_p_norm)`` when a
    decay is given), scaled by ``W_pos_emb_std``, are added to the inputs (``'SUM'``,
    ``C_pe = C``) or concatenated to their channels (``'CONCAT'``, ``C_pe = n_chan_pos_emb``
    or ``C``) for keys and queries, and for values only with ``val_pos_emb``.

    Kernel (``kernel_fn``), as neural-tangents 0.6.5 computes it: ``linear_scaling=True``
    with every mechanism, and ``linear_scaling=False`` with ``'IDENTITY'``, each with or
    without positional embeddings; see the module docstring. Refused with
    :class:`UnsupportedArchitectureError`: ``linear_scaling=False`` with ``'SOFTMAX'``,
    ``'ABS'`` or ``'RELU'`` (no closed form; neural-tangents raises ``NotImplementedError``),
    and ``'SUM'`` with an ``n_chan_pos_emb`` other than the input channels (neural-tangents
    documents it as an error; its kernel ignores it). The finite network (``init_fn``/
    ``apply_fn``) covers every setting, with NT's parameters ``(Q, K, V, W_out, b, pos_emb)``.
    No masks. Only ``batch_axis=0``, ``channel_axis=-1``.

    References
    ----------
    Hron et al. (2020), "Infinite attention", arXiv:2006.10540; neural-tangents'
    ``stax.GlobalSelfAttention`` docstring (the meaning of every argument).
    """

    positions = "full"  # every position attends to every position

    n_chan_out: int
    n_chan_key: int
    n_chan_val: int
    n_heads: int
    linear_scaling: bool = True
    W_key_std: float = 1.0
    W_value_std: float = 1.0
    W_query_std: float = 1.0
    W_out_std: float = 1.0
    b_std: Optional[float] = None
    attention_mechanism: str = AttentionMechanism.SOFTMAX.name
    pos_emb_type: str = PositionalEmbedding.NONE.name
    pos_emb_p_norm: float = 2
    pos_emb_decay_fn: Optional[Callable[[float], float]] = None
    n_chan_pos_emb: Optional[int] = None
    W_pos_emb_std: float = 1.0
    val_pos_emb: bool = False
    batch_axis: int = 0
    channel_axis: int = -1

    def __post_init__(self) -> None:
        for name in ("n_chan_out", "n_chan_key", "n_chan_val", "n_heads"):
            _positive_int(getattr(self, name), name)
        for name in ("W_key_std", "W_value_std", "W_query_std", "W_out_std", "W_pos_emb_std",
                     "pos_emb_p_norm"):
            object.__setattr__(self, name, _check_float(name, getattr(self, name),
                                                        layer="GlobalSelfAttention"))
        if self.b_std is not None:
            object.__setattr__(self, "b_std", _check_float("b_std", self.b_std, nonneg=True,
                                                           layer="GlobalSelfAttention"))
        if self.n_chan_pos_emb is not None:
            _positive_int(self.n_chan_pos_emb, "n_chan_pos_emb")
        object.__setattr__(self, "linear_scaling", bool(self.linear_scaling))
        object.__setattr__(self, "val_pos_emb", bool(self.val_pos_emb))
        object.__setattr__(self, "attention_mechanism", _enum_name(
            AttentionMechanism, self.attention_mechanism, "attention_mechanism"))
        object.__setattr__(self, "pos_emb_type", _enum_name(
            PositionalEmbedding, self.pos_emb_type, "pos_emb_type"))
        if self.batch_axis != 0 or self.channel_axis != -1:
            raise UnsupportedArchitectureError(
                f"GlobalSelfAttention: ntkscale supports batch_axis=0 and channel_axis=-1 (NT's "
                f"defaults), got batch_axis={self.batch_axis!r}, channel_axis={self.channel_axis!r}; "
                "move the axes of the inputs instead")

    # -- kernel ---------------------------------------------------------------
    def check_kernel(self) -> None:
        if not self.linear_scaling and self.attention_mechanism != "IDENTITY":
            raise UnsupportedArchitectureError(
                f"GlobalSelfAttention(linear_scaling=False, attention_mechanism="
                f"{self.attention_mechanism!r}) has no known closed-form infinite-width kernel "
                "(neural-tangents raises NotImplementedError too); use linear_scaling=True "
                "(keys and queries tied, logits scaled by 1/n_chan_key) or "
                "attention_mechanism='IDENTITY'")

    def _check_sum_channels(self, width: int) -> None:
        if self.pos_emb_type == "SUM" and self.n_chan_pos_emb not in (None, width):
            raise UnsupportedArchitectureError(
                f"GlobalSelfAttention(pos_emb_type='SUM', n_chan_pos_emb={self.n_chan_pos_emb}): "
                f"summed embeddings have the inputs' {width} channels (neural-tangents documents "
                "this as an error; its kernel ignores the value); leave n_chan_pos_emb=None, or "
                "use pos_emb_type='CONCAT' to choose the embedding width")

    def pos_emb(self, ns: Namespace, k: KernelState) -> tuple[Any, float, float]:
        """``(R, w_in, w_pe)`` of :mod:`~ntkscale.kernels.posemb` for the positions of ``k``
        (``R`` (H, W, H, W) in the dtype of ``k.nngp``; None without positional embeddings)."""
        if self.pos_emb_type == "NONE":
            return None, 1.0, 0.0
        self._check_sum_channels(k.width)
        shape = tuple(int(s) for s in k.nngp.shape[-4:-2])
        r = ns.asarray(_pos_emb_cov(shape, self.pos_emb_p_norm, self.pos_emb_decay_fn),
                       dtype=k.nngp.dtype)
        return (r, *interpolation_weights(self.pos_emb_type, k.width, self.n_chan_pos_emb,
                                          self.W_pos_emb_std))

    def weights(self, ns: Namespace, cov: Any) -> Any:
        """Attention weights ``G`` (n, P, P) of inputs with self covariances ``cov``
        (n, H, W, H, W): the mechanism applied to ``QK_std cov`` (softmax over key positions)."""
        n, h, w = cov.shape[0], cov.shape[1], cov.shape[2]
        logits = (self.W_query_std * self.W_key_std) * ns.reshape(cov, (n, h * w, h * w))
        mech = self.attention_mechanism
        if mech == "SOFTMAX":
            e = ns.exp(logits - ns.max(logits, axis=-1, keepdims=True))
            return e / ns.sum(e, axis=-1, keepdims=True)
        if mech == "IDENTITY":
            return logits
        if mech == "ABS":
            return ns.abs(logits)
        return ns.maximum(logits, 0.0)

    def kernel(self, ns: Namespace, k: KernelState) -> KernelState:
        self.check_kernel()
        if k.spatial != "full":
            raise UnsupportedArchitectureError(
                "GlobalSelfAttention needs sequences (n, T, C) or images (n, H, W, C) in the "
                "full position-pair layout; pass them to kernel_fn or start the architecture with "
                "Unflatten(1, T, C) / Unflatten(H, W, C), and put it before Flatten/GlobalAvgPool")
        r, w_in, w_pe = self.pos_emb(ns, k)
        b2 = 0.0 if self.b_std is None else self.b_std ** 2
        if not self.linear_scaling:  # IDENTITY (check_kernel)
            rule = dict(r=r, w_in=w_in, w_pe=w_pe, val_pos_emb=self.val_pos_emb, b2=b2,
                        s2=(self.W_query_std * self.W_key_std * self.W_out_std * self.W_value_std) ** 2)
            nngp, ntk = sqrt_identity(ns, k.nngp, k.ntk, **rule)
            if k.diag:
                return k.replace(nngp=nngp, ntk=ntk, width=self.n_chan_out)
            cov1 = sqrt_identity(ns, k.cov1, None, **rule)[0]
            cov2 = cov1 if k.cov2 is k.cov1 else sqrt_identity(ns, k.cov2, None, **rule)[0]
            return k.replace(nngp=nngp, ntk=ntk, cov1=cov1, cov2=cov2, width=self.n_chan_out)

        def keys(m: Any) -> Any:  # keys/queries' covariance
            return interpolate(m, r, w_in, w_pe)

        def vals(m: Any) -> Any:  # values' covariance
            return keys(m) if self.val_pos_emb else m

        ov2 = (self.W_out_std * self.W_value_std) ** 2
        if k.diag:  # nngp: self covariances (n, H, W, H, W)
            g = self.weights(ns, keys(k.nngp))
            q = _weigh(ns, g, vals(k.nngp), g, pair=False)
            return k.replace(nngp=ov2 * q + b2, ntk=None if k.ntk is None else
                             ov2 * (_weigh(ns, g, vals(k.ntk), g, pair=False) + 2 * q) + b2,
                             width=self.n_chan_out)
        g1 = self.weights(ns, keys(k.cov1))
        g2 = g1 if k.cov2 is k.cov1 else self.weights(ns, keys(k.cov2))
        q = _weigh(ns, g1, vals(k.nngp), g2, pair=True)
        ntk = None if k.ntk is None else \
            ov2 * (_weigh(ns, g1, vals(k.ntk), g2, pair=True) + 2 * q) + b2
        cov1 = ov2 * _weigh(ns, g1, vals(k.cov1), g1, pair=False) + b2
        cov2 = cov1 if k.cov2 is k.cov1 else \
            ov2 * _weigh(ns, g2, vals(k.cov2), g2, pair=False) + b2
        return k.replace(nngp=ov2 * q + b2, ntk=ntk, cov1=cov1, cov2=cov2, width=self.n_chan_out)

    def gaussian(self, g: Any) -> bool:
        """Outputs are Gaussian in the wide limit (a sum over infinitely many heads and value
        channels with weights fixed by the inputs' covariance), whatever its inputs."""
        return True

    # -- finite network --------------------------------------------------------
    def out_shape(self, shape: tuple) -> tuple:
        return (*shape[:-1], self.n_chan_out)

    def finite_init(self, jax: Any, jnp: Any, key: Any, shape: tuple) -> tuple[tuple, Any]:
        """``(output_shape, (Q, K, V, W_out, b, pos_emb))`` as neural-tangents draws them (the
        same key split, shapes and order), all ``N(0, 1)``: ``Q`` None when tied, ``b`` (1, ..., 1, n_chan_out) None
        without ``b_std``, ``pos_emb`` (1, *positions, C_pe) None without embeddings; with
        ``'CONCAT'`` keys/queries (and values with ``val_pos_emb``) have ``C + C_pe`` inputs."""
        kq, kk, kv, ko, kb, kpe = jax.random.split(key, 6)
        c = c_keys = c_vals = shape[-1]
        pos_emb = None
        if self.pos_emb_type != "NONE":
            self._check_sum_channels(c)
            c_pe = c if self.n_chan_pos_emb is None else self.n_chan_pos_emb
            pos_emb = jax.random.normal(kpe, (1, *shape[1:-1], c_pe))
            if self.pos_emb_type == "CONCAT":
                c_keys += c_pe
                c_vals += c_pe if self.val_pos_emb else 0
        h = self.n_heads
        keys = jax.random.normal(kk, (h, c_keys, self.n_chan_key))
        values = jax.random.normal(kv, (h, c_vals, self.n_chan_val))
        w_out = jax.random.normal(ko, (self.n_chan_val * h, self.n_chan_out))
        b = None if self.b_std is None else \
            jax.random.normal(kb, (1,) * (len(shape) - 1) + (self.n_chan_out,))
        queries = None if self.linear_scaling else jax.random.normal(kq, (h, c_keys, self.n_chan_key))
        return self.out_shape(tuple(shape)), (queries, keys, values, w_out, b, pos_emb)

    def finite_apply(self, jax: Any, jnp: Any, params: Any, x: Any) -> Any:
        """The layer on ``x`` of shape (n, *positions, C) (neural-tangents' ``apply_fn``)."""
        queries_w, keys_w, values_w, w_out, b, pos_emb = params
        n, c = x.shape[0], x.shape[-1]
        x_val = x
        if pos_emb is not None:
            self._check_sum_channels(c)
            pe = self.W_pos_emb_std * finite_pos_emb(jnp, pos_emb, self.pos_emb_p_norm,
                                                     self.pos_emb_decay_fn)
            if self.pos_emb_type == "SUM":
                x = x + pe
            else:
                x = jnp.concatenate([x, jnp.broadcast_to(pe, (*x.shape[:-1], pe.shape[-1]))], axis=-1)
            x_val = x if self.val_pos_emb else x_val
        xs = x.reshape(n, -1, x.shape[-1])  # (n, P, C_keys)
        keys = jnp.einsum("npc,hcd->hnpd", xs, keys_w)
        queries = keys if self.linear_scaling else jnp.einsum("npc,hcd->hnpd", xs, queries_w)
        values = jnp.einsum("npc,hcd->hnpd", x_val.reshape(n, -1, x_val.shape[-1]), values_w)
        scale = xs.shape[-1] * self.n_chan_key ** (1.0 if self.linear_scaling else 0.5)
        logits = (self.W_query_std * self.W_key_std / scale) * (queries @ jnp.swapaxes(keys, -1, -2))
        mech = self.attention_mechanism
        if mech == "SOFTMAX":
            g = jax.nn.softmax(logits, axis=-1)
        elif mech == "IDENTITY":
            g = logits
        elif mech == "ABS":
            g = jnp.abs(logits)
        else:
            g = jnp.maximum(logits, 0.0)
        heads = jnp.moveaxis(g @ values, 0, -1)  # (n, P, n_chan_val, n_heads)
        heads = heads.reshape(*heads.shape[:-2], -1)
        out = (heads @ w_out) * (self.W_out_std * self.W_value_std
                                 / (self.n_chan_val * self.n_heads * x_val.shape[-1]) ** 0.5)
        out = out.reshape(n, *x.shape[1:-1], self.n_chan_out)
        return out if b is None else out + self.b_std * b

    # -- description -------------------------------------------------------------
    def spec(self) -> dict:
        if self.pos_emb_decay_fn is not None:
            raise UnsupportedArchitectureError(
                "GlobalSelfAttention with a pos_emb_decay_fn cannot be written as a JSON spec")
        fields = self.__dataclass_fields__
        return {"layer": "GlobalSelfAttention", **{k: getattr(self, k) for k in fields}}


def _weigh(ns: Namespace, g1: Any, m: Any, g2: Any, pair: bool) -> Any:
    """``G1 M G2^T`` over positions, in the full layout.

    ``pair=True``: ``m`` (n1, n2, H, W, H, W), ``g1`` (n1, P, P), ``g2`` (n2, P, P);
    ``pair=False``: ``m`` (n, H, W, H, W) with ``g1``/``g2`` (n, P, P) of the same rows.
    """
    lead = m.shape[:-4]
    h, w = m.shape[-4], m.shape[-3]
    mm = ns.reshape(m, (*lead, h * w, h * w))
    if pair:
        out = ns.matmul(ns.matmul(g1[:, None], mm), ns.swapaxes(g2, -1, -2)[None, :])
    else:
        out = ns.matmul(ns.matmul(g1, mm), ns.swapaxes(g2, -1, -2))
    return ns.reshape(out, m.shape)


@functools.lru_cache(maxsize=8)
def _pos_emb_cov(shape: tuple, p_norm: float, decay_fn: Any) -> Any:
    """:func:`~ntkscale.kernels.posemb.pos_emb_cov`, computed once per positions and setting."""
    r = pos_emb_cov(shape, p_norm, decay_fn)
    r.setflags(write=False)
    return r

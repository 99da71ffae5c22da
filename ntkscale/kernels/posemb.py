"""Positional embeddings of :class:`~ntkscale.kernels.attention.GlobalSelfAttention` and its
``linear_scaling=False`` closed form (neural-tangents' ``IDENTITY`` mechanism): array math
only, no layers (the bottom of ``kernels/``; ``attention.py`` is the layer).

Positional embeddings (neural-tangents' ``pos_emb_type``): a random embedding ``E`` of
covariance ``W_pos_emb_std^2 R`` over positions, ``R = decay(d_p)`` with ``d_p[i, j] =
sum_axes |i_a - j_a|^p`` (``R`` the identity without ``decay``), is added to (``'SUM'``) or
concatenated with (``'CONCAT'``) the layer's inputs. In the kernel it adds its covariance to
every position-pair covariance ``M`` the embedding enters (NT's "interpolation")::

    M_pe = w_in M + w_pe R,    SUM: w_in = 1, w_pe = W_pos_emb_std^2,
    CONCAT: w_in = C / (C + C_pe), w_pe = W_pos_emb_std^2 C_pe / (C + C_pe)

(``C`` input channels, ``C_pe = n_chan_pos_emb``, ``C`` when None; the NTK gets the same
``R`` term: the embedding is a trained parameter). Keys and queries always see ``M_pe``;
values only with ``val_pos_emb``.

References
----------
Hron, Bahri, Sohl-Dickstein & Novak (2020), "Infinite attention: NNGP and NTK for deep
attention networks", ICML, arXiv:2006.10540.
Novak et al. (2020), "Neural Tangents", ICLR (``stax.GlobalSelfAttention``,
``_pos_emb_pdist``, ``_get_all_pos_emb`` of neural-tangents 0.6.5).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

from .backend import Namespace

__all__ = ["pos_emb_cov", "interpolation_weights", "interpolate", "sqrt_identity", "finite_pos_emb"]


def pos_emb_cov(shape: tuple, p_norm: float,
                decay_fn: Optional[Callable[[Any], Any]]) -> np.ndarray:
    """Covariance ``R`` of the positional embeddings over position pairs (NT's ``_pos_emb_pdist``).

    Parameters
    ----------
    shape : tuple of int
        Spatial shape, e.g. ``(H, W)`` (a sequence is ``(1, T)``).
    p_norm : float
        ``p`` of the unnormalised distance ``sum_a |i_a - j_a|^p``.
    decay_fn : callable or None
        Applied elementwise to the distances; None gives the identity (one-hot embeddings).

    Returns
    -------
    ndarray, shape (*shape, *shape)
        float64, in ntkscale's full position-pair layout ``(H1, W1, H2, W2)``.
    """
    size = int(np.prod(shape))
    if decay_fn is None:
        return np.eye(size).reshape(tuple(shape) * 2)
    nd = len(shape)
    r = np.zeros((1,) * (2 * nd))
    for a, n in enumerate(shape):
        d = np.arange(n)
        pd = np.abs(d[:, None] - d[None, :]).astype(np.float64) ** p_norm
        r = r + pd.reshape((1,) * a + (n,) + (1,) * (nd - 1) + (n,) + (1,) * (nd - a - 1))
    return np.asarray(decay_fn(r), dtype=np.float64)


def interpolation_weights(pos_emb_type: str, width: int, n_chan_pos_emb: Optional[int],
                          w_pos_emb_std: float) -> tuple[float, float]:
    """``(w_in, w_pe)``: the weights of the input covariance and of ``R`` (module docstring)."""
    w_in, w_pe = 1.0, w_pos_emb_std ** 2
    if pos_emb_type == "CONCAT":
        c_pe = width if n_chan_pos_emb is None else n_chan_pos_emb
        total = width + c_pe
        w_in, w_pe = w_in * (width / total), w_pe * (c_pe / total)
    return w_in, w_pe


def interpolate(m: Any, r: Any, w_in: float, w_pe: float) -> Any:
    """``w_in m + w_pe r`` (``m`` None stays None; ``r`` None means no embedding: ``m``)."""
    if m is None or r is None:
        return m
    return w_in * m + w_pe * r


def _dot(ns: Namespace, a: Any, b: Any) -> Any:
    """Frobenius product over the four trailing position axes, kept as size-1 axes."""
    return ns.sum(a * b, axis=(-4, -3, -2, -1), keepdims=True)


def sqrt_identity(ns: Namespace, nngp: Any, ntk: Optional[Any], r: Any, w_in: float,
                  w_pe: float, val_pos_emb: bool, s2: float, b2: float) -> tuple[Any, Any]:
    """NT's closed form of ``linear_scaling=False`` attention with the ``IDENTITY`` mechanism.

    Logits ``Q K^T / sqrt(d)`` with independent keys and queries are Gaussian in the limit,
    with covariance ``M_pe`` (keys/queries' input covariance); for output ``f = G V``::

        nngp' = s2 <M_pe, M_v> M_pe + b2
        ntk'  = s2 (t M_pe + <M_pe, M_v> (T_pe + 4 M_pe)) + b2

    ``<.,.>``: sum over all position pairs; ``M_v`` the values' covariance (``M_pe`` with
    ``val_pos_emb``, else ``M``); ``T_pe`` the interpolated NTK; ``t = 2 <M_pe, T_pe>`` with
    ``val_pos_emb`` or without embeddings, else ``<M_pe, T> + <M, T_pe>``.

    Parameters
    ----------
    nngp, ntk : array, shape (*lead, H, W, H, W)
        Position-pair covariances of one input pair (``lead`` = (n1, n2)) or of inputs with
        themselves (``lead`` = (n,)); ``ntk`` may be None.
    r : array, shape (H, W, H, W), or None
        Positional-embedding covariance (None: no embeddings).
    w_in, w_pe : float
        :func:`interpolation_weights`.
    s2, b2 : float
        ``(W_query_std W_key_std W_out_std W_value_std)^2`` and ``b_std^2``.

    Returns
    -------
    (nngp', ntk') of the same shapes (``ntk'`` None when ``ntk`` is None).
    """
    m_pe = interpolate(nngp, r, w_in, w_pe)
    dot = _dot(ns, m_pe, m_pe if val_pos_emb else nngp)
    out = s2 * (dot * m_pe) + b2
    if ntk is None:
        return out, None
    t_pe = interpolate(ntk, r, w_in, w_pe)
    if val_pos_emb or r is None:
        t = 2 * _dot(ns, m_pe, t_pe)
    else:
        t = _dot(ns, m_pe, ntk) + _dot(ns, nngp, t_pe)
    return out, s2 * (t * m_pe + dot * (t_pe + 4 * m_pe)) + b2


def finite_pos_emb(jnp: Any, pos_emb: Any, p_norm: float,
                   decay_fn: Optional[Callable[[Any], Any]]) -> Any:
    """The finite network's embedding from its ``N(0, 1)`` parameter (NT's ``apply_fn``).

    ``pos_emb`` (1, *spatial, C_pe); with ``decay_fn``, mixed over positions by the Cholesky
    factor ``L`` of ``R`` (``L L^T = R``) so its covariance over positions is ``R``.
    """
    if decay_fn is None:
        return pos_emb
    spatial = tuple(pos_emb.shape[1:-1])
    size = int(np.prod(spatial))
    chol = np.linalg.cholesky(pos_emb_cov(spatial, p_norm, decay_fn).reshape(size, size))
    flat = jnp.reshape(pos_emb, (size, pos_emb.shape[-1]))
    return jnp.reshape(jnp.asarray(chol, dtype=flat.dtype) @ flat, pos_emb.shape)

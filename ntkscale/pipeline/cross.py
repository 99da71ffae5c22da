"""Predictions ``K(X*, X) α``: batched ``kernel_fn`` in memory, streamed cross tiles for a store.

The training side is either the inputs in memory (``X_train``) or a Gram store (``store``,
``build_id`` from :func:`ntkscale.pipeline.check_store`, and the ``runner`` its tasks run on);
give one of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator, Optional, Sequence

import numpy as np

from ..kernels import Layer

if TYPE_CHECKING:
    from ..runner import Runner

__all__ = ["BATCH", "cross_products", "cross_row_blocks", "predict"]

BATCH = 2048  # test rows per in-memory cross-kernel batch


def _source(X_train: Optional[np.ndarray], store: Optional[str], build_id: Optional[str],
            runner: Optional["Runner"]) -> "Runner | None":
    """Check that exactly one training side is given; the runner for a store."""
    if (X_train is None) == (store is None):
        raise ValueError("give the training side of the cross kernel: X_train (in memory) or "
                         "store (a Gram store URL), not both or neither")
    if store is None:
        return None
    if build_id is None:
        raise ValueError(f"store {store!r} needs its build_id (ntkscale.pipeline.check_store)")
    if runner is None:
        from ..runner import get_runner

        runner = get_runner("sync")
    return runner


def cross_products(arch: Layer, X: np.ndarray, V: dict[str, np.ndarray], *,
                   X_train: Optional[np.ndarray] = None, store: Optional[str] = None,
                   build_id: Optional[str] = None, runner: Optional["Runner"] = None,
                   device: str = "cpu", batch: int = BATCH) -> dict[str, np.ndarray]:
    """``{kind: K_kind(X, X_train) @ V[kind]}``, never holding the whole cross Gram.

    Parameters
    ----------
    arch : Layer
    X : ndarray, shape (m, d)
        Test inputs, float64, validated by the caller.
    V : dict of str to ndarray, shape (n, C)
        Right-hand sides per kind ('ntk', 'nngp').
    X_train : ndarray, shape (n, d), optional
        In memory: the cross kernel in batches of ``batch`` test rows, float64.
    store, build_id, runner, device
        A store: cross tiles streamed on the runner's workers
        (:func:`ntkscale.tiling.predict.cross_matvec`, computed on ``device``);
        ``runner`` None runs them in this process.

    Returns
    -------
    dict of str to ndarray, shape (m, C), float64
    """
    runner = _source(X_train, store, build_id, runner)
    if runner is not None:
        from ..tiling.predict import cross_matvec

        return cross_matvec(runner, arch, X, str(store), str(build_id), V, device=device)
    out = {k: np.empty((X.shape[0], v.shape[1])) for k, v in V.items()}
    for s in range(0, X.shape[0], batch):
        K = arch.kernel_fn(X[s:s + batch], X_train, tuple(V), dtype=np.float64)
        for k, v in V.items():
            out[k][s:s + batch] = np.asarray(getattr(K, k)) @ v
    return out


def predict(arch: Layer, X: np.ndarray, alpha: np.ndarray, kind: str = "ntk", **train: Any) -> np.ndarray:
    """Predictions ``K_kind(X, X_train) @ alpha``.

    Parameters
    ----------
    arch : Layer
    X : ndarray, shape (m, d)
    alpha : ndarray, shape (n,) or (n, C)
        Dual coefficients (:func:`ntkscale.pipeline.fit`).
    kind : {'ntk', 'nngp'}
    **train
        The training side and its options, as :func:`cross_products` takes them.

    Returns
    -------
    ndarray, shape (m,) or (m, C)
        The layout of ``alpha``.
    """
    a = alpha.reshape(alpha.shape[0], -1)
    mean = cross_products(arch, X, {kind: a}, **train)[kind]
    return mean[:, 0] if alpha.ndim == 1 else mean


def cross_row_blocks(arch: Layer, X: np.ndarray, kinds: Sequence[str], *,
                     X_train: Optional[np.ndarray] = None, store: Optional[str] = None,
                     build_id: Optional[str] = None, runner: Optional["Runner"] = None,
                     device: str = "cpu", batch: int = BATCH
                     ) -> Iterator[tuple[slice, dict[str, np.ndarray]]]:
    """Whole cross-Gram rows, one block of test rows at a time (what posterior variances need).

    Parameters
    ----------
    arch, X, X_train, store, build_id, runner, device, batch
        As :func:`cross_products`.
    kinds : sequence of str

    Yields
    ------
    rows : slice
        The test rows of the block.
    K : dict of str to ndarray, shape (b, n), float64
        ``K_kind(X[rows], X_train)``.
    """
    kinds = tuple(kinds)
    runner = _source(X_train, store, build_id, runner)
    if runner is not None:
        from ..tiling.predict import cross_rows

        yield from cross_rows(runner, arch, X, str(store), str(build_id), kinds, device=device)
        return
    for s in range(0, X.shape[0], batch):
        K = arch.kernel_fn(X[s:s + batch], X_train, kinds, dtype=np.float64)
        yield slice(s, s + K[0].shape[0]), {k: np.asarray(getattr(K, k)) for k in kinds}

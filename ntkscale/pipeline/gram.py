"""The training Gram of a fit: which kinds a store holds, get-or-build, and the store check."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np

from ..errors import IncompleteStoreError
from ..kernels import Layer

if TYPE_CHECKING:
    from ..runner import Runner
    from ..tiling import BuildReport

log = logging.getLogger("ntkscale.pipeline")

__all__ = ["KINDS", "stored_kinds", "store_kinds", "build_store", "preflight_store", "check_store", "TrainGram",
           "gram_operator"]

KINDS = ("ntk", "nngp")


def stored_kinds(kernel: str, store_nngp: bool = False) -> tuple[str, ...]:
    """The kinds a Gram store holds for a fit with ``kernel``.

    Parameters
    ----------
    kernel : {'ntk', 'nngp'}
        The kernel the fit solves with.
    store_nngp : bool
        Also keep the NNGP Gram beside the NTK one (what the NTK-GP posterior variance needs).

    Returns
    -------
    tuple of str
        ``('nngp',)`` for the NNGP; ``('nngp', 'ntk')`` for the NTK with ``store_nngp``;
        else ``('ntk',)``.
    """
    if kernel not in KINDS:
        raise ValueError(f"kernel must be 'ntk' or 'nngp', got {kernel!r}")
    if kernel == "nngp":
        return ("nngp",)
    return ("nngp", "ntk") if store_nngp else ("ntk",)


def store_kinds(url: Any) -> list[str]:
    """The kinds held by the Gram store at ``url`` (from its metadata)."""
    from ..storage import GramStore

    return list(GramStore.open(url).meta["kinds"])


def preflight_store(arch: Layer, X: Any, url: str, kinds: Sequence[str], *, tile: Optional[int] = None,
                    dtype: Any = "float32", device: str = "cpu", overwrite: bool = False,
                    key: str = "store") -> bool:
    """The checks :func:`build_store` makes before it writes anything, without writing
    (:func:`ntkscale.tiling.check_build`); whether a store would be resumed (True) or
    created (False).

    Raises
    ------
    ntkscale.storage.UnsafePathError
        ``url`` holds something ntkscale did not write.
    ntkscale.storage.StoreMismatchError
        A store of other data or settings with finished tiles (unless ``overwrite``).
    """
    from ..tiling import check_build

    return check_build(arch, X, url, get=tuple(kinds), tile=tile, dtype=dtype, device=device,
                       overwrite=overwrite, key=key) is not None


def build_store(arch: Layer, X: Any, url: str, kinds: Sequence[str], *, tile: Optional[int] = None,
                dtype: Any = "float32", client: Any = "sync", device: str = "cpu",
                progress: Optional[bool] = None, repair: bool = False,
                overwrite: bool = False) -> "BuildReport":
    """Build (or resume, or verify and repair) the Gram store of ``X``; tiles that are
    already stored are not recomputed. A store of other data is refused
    (:class:`ntkscale.storage.StoreMismatchError`).

    Parameters
    ----------
    arch : Layer
    X : array, shape (n, d)
        Training inputs.
    url : str
        Store URL (path, ``file://``, ``s3://`` ...).
    kinds : sequence of str
        What to store (:func:`stored_kinds`).
    tile, dtype, client, device, progress, repair, overwrite
        As :func:`ntkscale.tiling.build_gram` takes them.

    Returns
    -------
    ntkscale.tiling.BuildReport
    """
    from ..tiling import build_gram

    rep = build_gram(arch, X, url, get=tuple(kinds), tile=tile, dtype=dtype, client=client,
                     progress=progress, device=device, repair=repair, overwrite=overwrite)
    log.info("Gram store %s, %dx%d: %d tiles (%d computed now) in %.1f s", url, *rep.shape,
             rep.n_tiles, rep.computed, rep.seconds)
    return rep


def check_store(url: Any, X: Any, arch: Layer, *, build: str = "build it with "
                "ntkscale.tiling.build_gram") -> str:
    """The build id of the store at ``url``, after checking that it holds the Gram of
    these training inputs and this architecture, and that its build finished.

    Parameters
    ----------
    url : str
    X : array, shape (n, d)
        The training inputs the store must have been built from.
    arch : Layer
    build : str
        How the caller builds the store, for the error messages (the job says
        "run the 'gram' stage").

    Returns
    -------
    str
        The store's ``build_id`` (what streamed cross products check against).

    Raises
    ------
    FileNotFoundError
        No store at ``url``.
    ntkscale.storage.StoreMismatchError
        A store of other data or of another architecture.
    ntkscale.errors.IncompleteStoreError
        An interrupted build.
    """
    from ..kernels import spec_json
    from ..storage import GramStore, StoreMismatchError
    from ..storage.gram_store import fingerprint

    try:
        meta = GramStore.open(url).meta
    except (FileNotFoundError, OSError) as e:
        raise FileNotFoundError(f"no Gram store at {url} ({e}); {build} first") from None
    again = f"; {build} with these inputs (or use a new store path)"
    if meta.get("fingerprint1") != fingerprint(np.ascontiguousarray(X, dtype=np.float64)):
        raise StoreMismatchError(f"Gram store {url} was built from other training data than "
                                 f"these inputs{again}")
    if meta.get("arch") != spec_json(arch):
        raise StoreMismatchError(f"Gram store {url} was built for another architecture than "
                                 f"this one{again}")
    if not meta.get("complete", True):
        raise IncompleteStoreError(f"Gram store {url} is incomplete (an interrupted build); {build} "
                           "to finish it")
    return str(meta["build_id"])


@dataclass
class TrainGram:
    """The training Gram of one fit, from :func:`gram_operator`.

    Attributes
    ----------
    op : GramOperator
        The Gram of the fit's kind, shape (n, n): a DenseGram in memory, a StoredGram over
        the store.
    dense : dict of str to ndarray
        In memory: both kinds, ``{'nngp': (n, n), 'ntk': (n, n)}`` float64 (one kernel
        evaluation gives both); empty for a store.
    report : BuildReport or None
        What the build (or resume) of the store did.
    runner : Runner or None
        Where the store's tasks ran; closed by :meth:`close` (never a Client passed in).
    """

    op: Any
    dense: dict[str, np.ndarray] = field(default_factory=dict)
    report: Optional["BuildReport"] = None
    runner: Optional["Runner"] = None

    def close(self) -> None:
        """Release the stored operator and the runner this Gram started (idempotent)."""
        if self.runner is not None:
            self.op.close()
            self.runner.close()
            self.runner = None


def gram_operator(arch: Layer, X: np.ndarray, kind: str = "ntk", *, store: Optional[Any] = None,
                  kinds: Optional[Sequence[str]] = None, tile: Optional[int] = None,
                  dtype: Any = "float32", client: Any = None, device: str = "cpu",
                  progress: Optional[bool] = None, repair: bool = False) -> TrainGram:
    """Get or build the training Gram ``K_kind(X, X)``.

    Parameters
    ----------
    arch : Layer
    X : ndarray, shape (n, d)
        Training inputs, float64.
    kind : {'ntk', 'nngp'}
        The Gram the returned operator shows.
    store : str, optional
        None: computed in memory (float64). A URL: built there, or resumed (a store of these
        inputs and this architecture is reused; one of other data is refused).
    kinds : sequence of str, optional
        Kinds the store holds (default :func:`stored_kinds` of ``kind``); must contain ``kind``.
    tile, dtype, device, progress, repair
        Tiled-build options (:func:`ntkscale.tiling.build_gram`).
    client : None, 'sync', address or Client
        Where store tasks run (None starts a local cluster, closed by ``TrainGram.close``).

    Returns
    -------
    TrainGram
        Close it when done (``finally: gram.close()``).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be 'ntk' or 'nngp', got {kind!r}")
    if store is None:
        from ..linop import DenseGram

        K = arch.kernel_fn(X, None, ("nngp", "ntk"), dtype=np.float64)
        dense = {"nngp": np.asarray(K.nngp), "ntk": np.asarray(K.ntk)}
        return TrainGram(op=DenseGram(dense[kind]), dense=dense)
    from ..runner import get_runner
    from ..operator import StoredGram

    kinds = stored_kinds(kind) if kinds is None else tuple(kinds)
    if kind not in kinds:
        raise ValueError(f"kinds {kinds} do not contain the fit's kind {kind!r}")
    runner = get_runner(client, quiet=True)
    try:
        rep = build_store(arch, X, str(store), kinds, tile=tile, dtype=dtype,
                          client=runner.client or "sync", device=device, progress=progress,
                          repair=repair)
        op = StoredGram(store, kind, client=runner.client or "sync", device=device)
    except BaseException:
        runner.close()
        raise
    return TrainGram(op=op, report=rep, runner=runner)

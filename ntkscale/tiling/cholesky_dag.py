"""The tile DAG of the left-looking blocked Cholesky (:mod:`ntkscale.tiling.cholesky`): each
task's predecessors (through tiles already done, for a resume), critical-path priorities, and
the factor tile size. Pure functions of the grid; no dask, no zarr."""

from __future__ import annotations

__all__ = ["factor_tile_size"]


def _preds(i: int, j: int) -> list[tuple[int, int]]:
    """Direct predecessors in the transitive reduction of the tile DAG."""
    out = [(i - 1, j)] if i > 0 else []
    return out + ([(i, i)] if i < j else [])


def _dependencies(todo: list[tuple[int, int]]) -> dict[tuple[int, int], list[tuple[int, int]]]:
    """For each tile to compute, the tiles to compute that it must wait for: its reduced-DAG
    predecessors, looking through tiles that are already done (resume) to theirs."""
    todo_set, memo = set(todo), {}

    def expand(t: tuple[int, int]) -> frozenset:
        if t not in memo:
            memo[t] = frozenset().union(*(({p} if p in todo_set else expand(p)) for p in _preds(*t)))
        return memo[t]

    return {t: sorted(expand(t)) for t in todo}


def _priorities(nb: int) -> dict[tuple[int, int], int]:
    """Bottom level (longest remaining path, in units of T^3 flops) of every tile task."""
    bl: dict[tuple[int, int], float] = {}
    for i in reversed(range(nb)):
        for j in reversed(range(i, nb)):
            if i < j:
                bl[i, j] = 2 * i + 1 + (bl[i + 1, j])
            else:
                bl[i, i] = i + 1 / 3 + max((bl[i, k] for k in range(i + 1, nb)), default=0.0)
    return {t: int(round(10 * v)) for t, v in bl.items()}


def factor_tile_size(gram_tile: int, n: int, slots: int, min_tile: int = 512) -> int:
    """Factor tile: the Gram tile, or its largest exact divisor (>= ``min_tile``) that makes a
    grid of at least ``4 * slots + 1`` tiles a side. The critical path of the tile DAG is
    ~nb^2 tile GEMMs of ~nb^3/3 in all, so ``slots`` workers stay busy only if nb >> 3 * slots.
    ``slots=0`` (tasks run one at a time, e.g. 'host' placement on one machine): the Gram tile."""
    fits = [gram_tile // k for k in range(1, gram_tile + 1)
            if gram_tile % k == 0 and gram_tile // k >= min(min_tile, gram_tile)]
    return next((t for t in fits if -(-n // t) >= 4 * slots + 1), fits[-1])

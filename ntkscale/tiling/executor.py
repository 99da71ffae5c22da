"""Run independent tasks on a Runner (distributed Client or this process), with
progress, a per-result callback, and clean cancellation on interruption."""

from __future__ import annotations

import time
from typing import Any, Callable, Optional, Sequence

from ..runner import Runner

__all__ = ["run_tasks", "await_workers", "worker_info"]

_SETTLE_S = 600.0  # after an error: how long to wait for cancelled tasks that are still running


def _held(keys: list[str], dask_worker: Any = None) -> int:
    """How many of ``keys`` a worker still holds (running, or cancelled while running)."""
    held = dask_worker.state.tasks
    return sum(1 for k in keys if k in held)


def _settle(client: Any, keys: list[str]) -> None:
    """After ``keys`` were cancelled, wait until no worker runs one of them any more: a
    cancelled task that had started runs to its end (and writes its chunk), and must not
    write after its run has returned (a re-run may already have started, or replaced the store)."""
    deadline = time.monotonic() + _SETTLE_S
    while keys and time.monotonic() < deadline:
        try:
            if not any(client.run(_held, keys).values()):
                return
        except Exception:  # noqa: BLE001 - a closing cluster: its workers go with it
            return
        time.sleep(0.05)


def worker_info(client: Any) -> dict[str, dict]:
    """The scheduler's current workers (address -> info), fetched directly.

    ``Client.scheduler_info()`` refreshes a cache and returns it, but the client's periodic
    update (every 2 s, ``n_workers=0``: no per-worker entries) may overwrite that cache in
    between, so it can show no workers at all.
    """
    return client.sync(client.scheduler.identity, n_workers=-1)["workers"]


def await_workers(client: Any, n: int, timeout: float = 60.0) -> int:
    """Wait until ``n`` workers of ``client``'s cluster are running, at most ``timeout`` seconds.

    Polls the scheduler itself: ``Client.wait_for_workers`` trusts an in-process
    ``LocalCluster``'s cached view, in which a worker restarted by its nanny can stay 'init'.

    Parameters
    ----------
    client : distributed.Client
    n : int
        Workers to wait for.
    timeout : float
        Seconds.

    Returns
    -------
    int
        Workers running at the end (fewer than ``n`` after a timeout).
    """
    deadline = time.monotonic() + timeout
    while True:
        workers = worker_info(client).values()
        running = sum(1 for w in workers if w.get("status", "running") == "running")
        if running >= n or time.monotonic() >= deadline:
            return running
        time.sleep(0.1)


def _bar(total: int, desc: str, progress: Optional[bool]) -> Any:
    if not progress or total == 0:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="task")


def run_tasks(runner: Runner, fn: Callable[..., Any], calls: Sequence[tuple], *, keys: Sequence[str],
              desc: str = "tasks", progress: Optional[bool] = False,
              on_result: Optional[Callable[[Any], None]] = None, keep: bool = True,
              **kwargs: Any) -> list[Any]:
    """Run ``fn(*call, **kwargs)`` for every call; return results in completion order.

    ``on_result`` sees each result as it arrives (it may raise to stop the run:
    outstanding tasks are cancelled, those already running are waited for, and the
    exception propagates). With ``keep=False``
    results are not collected (the returned list is empty): a consumer that folds them in
    ``on_result`` then holds one at a time, and each task's result is released on the
    worker as soon as it has been fetched, not when the whole run ends.
    """
    bar = _bar(len(calls), desc, progress)
    results: list[Any] = []
    try:
        if runner.is_sync:
            for call in calls:
                r = fn(*call, **kwargs)
                if keep:
                    results.append(r)
                if bar is not None:
                    bar.update()
                if on_result is not None:
                    on_result(r)
            return results
        from distributed import as_completed

        futures = {runner.client.submit(fn, *call, key=key, pure=False, **kwargs)
                   for call, key in zip(calls, keys)}
        try:
            for fut in as_completed(list(futures)):
                r = fut.result()
                futures.discard(fut)
                fut.release()  # the worker may drop its copy now
                del fut
                if keep:
                    results.append(r)
                if bar is not None:
                    bar.update()
                if on_result is not None:
                    on_result(r)
                del r
        except BaseException:
            runner.client.cancel(list(futures))
            _settle(runner.client, [f.key for f in futures])
            raise
        return results
    finally:
        if bar is not None:
            bar.close()

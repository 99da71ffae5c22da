"""Run independent tasks on a Runner (distributed Client or this process), with
progress, a per-result callback, and clean cancellation on interruption."""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

from ..cluster import Runner

__all__ = ["run_tasks"]


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
    outstanding tasks are cancelled and the exception propagates). With ``keep=False``
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
            raise
        return results
    finally:
        if bar is not None:
            bar.close()

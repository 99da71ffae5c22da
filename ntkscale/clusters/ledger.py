"""Which workers ran a job: a ledger of every worker that joined or left, and when.

>>> from ntkscale.clusters.ledger import summarize, summary_line
>>> w = [{"address": "tcp://h:1", "name": 0, "host": "h", "nthreads": 1, "memory_limit": 2**30,
...       "gpus": [], "joined": 0.0, "left": 12.0},
...      {"address": "tcp://h:2", "name": 1, "host": "h", "nthreads": 1, "memory_limit": 2**30,
...       "gpus": [], "joined": 0.0, "left": None},
...      {"address": "tcp://h:3", "name": 0, "host": "h", "nthreads": 1, "memory_limit": 2**30,
...       "gpus": [], "joined": 15.0, "left": None}]
>>> rec = summarize(w, {"gram": [0.0, 5.0], "fit": [5.0, 20.0]}, end=21.0)
>>> summary_line({"kind": "local", **rec})
'2 workers on 1 host (2 threads, 2 × 1.0 GiB); worker 0 lost at 12 s during fit, replaced at 15 s'

Why a scheduler plugin rather than polling ``scheduler_info()`` between stages: a worker
SIGKILLed and restarted by its nanny within a second, or a SLURM job lost and resubmitted in
the middle of a stage, never shows in such a poll; the scheduler calls
:meth:`LedgerPlugin.add_worker` / :meth:`LedgerPlugin.remove_worker` for each one, with its
``WorkerState`` (name, host, threads, memory limit, resources, GPU from NVML) at hand. The
plugin is registered under a name of its own per run and removed when the run ends, so runs
sharing one scheduler (``kind = "address"``) keep separate ledgers. A scheduler that cannot
load it (started without ntkscale importable) gets the fallback: the client polls the
workers at every stage end, so a worker that joined and left between two polls is missed;
``"source"`` says which of the two was used.

Times are seconds since the run started (the client's clock): the plugin stamps events with
the scheduler's clock, and the offset between the two is measured when it is registered.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any, Optional, Sequence

log = logging.getLogger("ntkscale")

__all__ = ["LedgerPlugin", "WorkerLedger", "counts_at", "summarize", "summary_line"]

try:  # distributed is a dependency; the plugin base only matters on a scheduler
    from distributed.diagnostics.plugin import SchedulerPlugin as _PluginBase
except ImportError:  # pragma: no cover
    _PluginBase = object


def _worker_record(ws: Any, joined: float) -> dict[str, Any]:
    """What the ledger keeps of a scheduler's ``WorkerState``."""
    gpu = (getattr(ws, "extra", None) or {}).get("gpu") or {}
    return {"address": ws.address, "name": ws.name, "host": ws.host, "nthreads": int(ws.nthreads),
            "memory_limit": int(ws.memory_limit or 0) or None, "resources": dict(ws.resources or {}),
            "gpu_name": gpu.get("name") if isinstance(gpu, dict) else None, "pid": getattr(ws, "pid", None),
            "joined": joined, "left": None, "reason": None}


def _reason(stimulus_id: Optional[str]) -> Optional[str]:
    """``"handle-worker-cleanup"`` from ``"handle-worker-cleanup-1712345678.9"``."""
    if not stimulus_id:
        return None
    head, _, tail = str(stimulus_id).rpartition("-")
    try:
        float(tail)
        return head or str(stimulus_id)
    except ValueError:
        return str(stimulus_id)


class LedgerPlugin(_PluginBase):
    """Scheduler plugin: one record per worker that joined (workers present when it starts
    included, stamped with their ``add-worker`` event time where the scheduler still has it)."""

    def __init__(self, name: str):
        self.name = name
        self.t_start: Optional[float] = None
        self.records: list[dict[str, Any]] = []  # join order
        self._live: dict[str, dict[str, Any]] = {}  # address -> its record

    def start(self, scheduler: Any) -> None:
        self.t_start = time.time()
        joined: dict[str, float] = {}
        for t, msg in list(getattr(scheduler, "events", {}).get("all", ())):
            if isinstance(msg, dict) and msg.get("action") == "add-worker":
                joined[msg.get("worker")] = t
        for addr, ws in list(scheduler.workers.items()):
            self._add(ws, min(joined.get(addr, self.t_start), self.t_start), at_start=True)

    def _add(self, ws: Any, t: float, at_start: bool = False) -> None:
        rec = _worker_record(ws, t)
        rec["at_start"] = at_start
        self.records.append(rec)
        self._live[ws.address] = rec

    def add_worker(self, scheduler: Any = None, worker: str = "") -> None:
        ws = scheduler.workers.get(worker)
        if ws is not None and worker not in self._live:
            self._add(ws, time.time())

    def remove_worker(self, scheduler: Any = None, worker: str = "", *, stimulus_id: Optional[str] = None,
                      **kwargs: Any) -> None:
        rec = self._live.pop(worker, None)
        if rec is not None:
            rec["left"], rec["reason"] = time.time(), _reason(stimulus_id)

    def state(self) -> dict[str, Any]:
        return {"t_start": self.t_start, "now": time.time(), "records": [dict(r) for r in self.records]}


def _plugin_state(name: str, dask_scheduler: Any = None) -> dict[str, Any]:
    return dask_scheduler.plugins[name].state()


def _worker_gpus() -> list[str]:
    """The GPU ids a worker process sees (run inside it)."""
    from ntkscale.runner import visible_gpus

    return visible_gpus()


class WorkerLedger:
    """Client side of the ledger: registers the plugin (or polls), probes GPUs, summarizes.

    Parameters
    ----------
    client : distributed.Client
    t0 : float, optional
        ``time.time()`` at the start of the run (default: now).
    """

    def __init__(self, client: Any, t0: Optional[float] = None):
        self.client = client
        self.t0 = time.time() if t0 is None else t0
        self.name = f"ntkscale-ledger-{uuid.uuid4().hex[:8]}"
        self.source = "scheduler-plugin"
        self.error: Optional[str] = None
        self._shift = 0.0  # client-relative time = scheduler time + shift
        self._polled: list[dict[str, Any]] = []
        self._polled_once = False
        self._gpus: dict[str, list[str]] = {}
        try:
            client.register_plugin(LedgerPlugin(self.name), name=self.name)
            self._shift = self._clock_shift()
        except Exception as e:  # noqa: BLE001 - a scheduler without ntkscale: poll instead
            self.source, self.error = "polled", f"{type(e).__name__}: {e}"
            log.warning("the worker ledger's scheduler plugin could not be registered (%s); the run "
                        "record polls the workers at stage ends instead", self.error)
            self.poll()

    def _clock_shift(self, trips: int = 3) -> float:
        """Client-relative time minus scheduler time, from the quickest of a few round trips
        (the first may import ntkscale on the scheduler and take seconds: half of a slow trip's
        time is the error of its estimate, enough to move a worker that joined just after the
        start to before it)."""
        best = None
        for _ in range(trips):
            before = time.time()
            now = self.client.run_on_scheduler(_plugin_state, self.name)["now"]
            after = time.time()
            if best is None or after - before < best[0]:
                best = (after - before, (before + after) / 2 - self.t0 - now)
        return best[1]

    def now(self) -> float:
        return time.time() - self.t0

    def poll(self) -> None:
        """Fallback: diff the scheduler's current workers against the last poll."""
        now = self.now()
        # the scheduler's own view (the client's scheduler_info() cache may lack the workers)
        workers = self.client.sync(self.client.scheduler.identity, n_workers=-1)["workers"]
        live = {r["address"]: r for r in self._polled if r["left"] is None}
        for addr, r in live.items():
            if addr not in workers:
                r["left"], r["reason"] = now, "not seen at poll"
        for addr, w in workers.items():
            if addr not in live:
                self._polled.append({"address": addr, "name": w.get("name"), "host": w.get("host"),
                                     "nthreads": int(w.get("nthreads", 1)),
                                     "memory_limit": int(w.get("memory_limit") or 0) or None,
                                     "resources": dict(w.get("resources") or {}), "gpu_name": None,
                                     "pid": w.get("pid"), "joined": now, "left": None, "reason": None,
                                     "at_start": not self._polled_once})
        self._polled_once = True

    def workers(self) -> list[dict[str, Any]]:
        """Every worker that joined so far, times relative to the run start, GPUs probed."""
        if self.source == "polled":
            self.poll()
            recs = [dict(r) for r in self._polled]
        else:
            try:
                recs = self.client.run_on_scheduler(_plugin_state, self.name)["records"]
            except Exception as e:  # noqa: BLE001 - reporting must not fail a run
                self.error = f"{type(e).__name__}: {e}"
                return []
            for r in recs:
                for k in ("joined", "left"):
                    if r[k] is not None:
                        r[k] = r[k] + self._shift
        self._probe_gpus([r["address"] for r in recs if r["left"] is None])
        for r in recs:
            r["gpus"] = self._gpus.get(r["address"], _gpus_from(r))
            for k in ("joined", "left"):
                if r[k] is not None:
                    r[k] = round(max(r[k], 0.0), 2)
        return recs

    def _probe_gpus(self, addresses: Sequence[str]) -> None:
        todo = [a for a in addresses if a not in self._gpus]
        if not todo:
            return
        try:
            got = self.client.run(_worker_gpus, workers=todo, on_error="return")
        except Exception:  # noqa: BLE001 - a worker gone meanwhile
            return
        for addr, ids in got.items():
            if isinstance(ids, list):
                self._gpus[addr] = [str(i) for i in ids]

    def close(self) -> None:
        """Remove the plugin from the scheduler (a shared scheduler outlives the run)."""
        if self.source == "scheduler-plugin":
            try:
                self.client.unregister_scheduler_plugin(self.name)
            except Exception:  # noqa: BLE001 - a scheduler already gone
                pass


def _gpus_from(rec: dict[str, Any]) -> Optional[list[str]]:
    """GPUs of a worker that was not probed: its ``GPU`` resource, or NVML's name; else unknown."""
    n = (rec.get("resources") or {}).get("GPU")
    if n:
        return [str(i) for i in range(int(n))]
    return ["0"] if rec.get("gpu_name") else None


def counts_at(workers: Sequence[dict[str, Any]], t: float) -> dict[str, Any]:
    """Workers present at time ``t`` (joined at or before, not yet left): how many, threads,
    hosts, GPUs (distinct ``(host, id)``), total and smallest memory limit (bytes)."""
    here = [w for w in workers if w["joined"] <= t and (w["left"] is None or w["left"] > t)]
    mem = [w["memory_limit"] for w in here]
    return {"workers": len(here), "threads": sum(w["nthreads"] for w in here),
            "hosts": len({w["host"] for w in here}),
            "gpus": len({(w["host"], g) for w in here for g in (w.get("gpus") or [])}),
            "memory": sum(m for m in mem if m) or None,
            "memory_per_worker": min(mem) if mem and all(mem) else None}


def _stage_at(stages: dict[str, Sequence[float]], t: float) -> Optional[str]:
    for name, (a, b) in stages.items():
        if a <= t <= b:
            return name
    return None


def summarize(workers: Sequence[dict[str, Any]], stages: dict[str, Sequence[float]], end: float
              ) -> dict[str, Any]:
    """The run record's cluster part from the ledger and the stages' ``[start, end]`` times.

    Returns
    -------
    dict
        ``workers_joined`` (the ledger, with ``replaces`` / ``replaced_by``),
        ``at_stage_start`` (:func:`counts_at` per stage), ``max`` (each count's maximum over
        the run), ``final`` (at ``end``), ``lost`` (workers that left before ``end``: when,
        in which stage, replaced by whom and when), ``joined_late`` (joined after the first
        stage began, neither present when the ledger started nor a replacement), ``stage_times``.
    """
    end = round(end, 2)  # the ledger's times are rounded so; rounding keeps their order
    ws = sorted((dict(w) for w in workers), key=lambda w: w["joined"])
    first = min((a for a, _ in stages.values()), default=0.0)
    lost, late = [], []
    for w in ws:
        w.setdefault("replaces", None)
        w.setdefault("replaced_by", None)
    for w in ws:
        if w["left"] is None or w["left"] > end:
            continue
        new = next((v for v in ws if v["name"] == w["name"] and v is not w and v["joined"] >= w["joined"]
                    and v["replaces"] is None and v["joined"] >= w["left"] - 1.0), None)
        if new is not None:
            new["replaces"], w["replaced_by"] = w["address"], new["address"]
        lost.append({"name": w["name"], "address": w["address"], "host": w["host"], "at": w["left"],
                     "stage": _stage_at(stages, w["left"]), "reason": w.get("reason"),
                     "replaced_by": None if new is None else new["address"],
                     "replaced_at": None if new is None else new["joined"]})
    lost.sort(key=lambda x: (x["at"], str(x["name"])))
    for w in ws:
        if w["joined"] > first and w["replaces"] is None and not w.get("at_start"):
            late.append({"name": w["name"], "address": w["address"], "host": w["host"], "at": w["joined"],
                         "stage": _stage_at(stages, w["joined"])})
    times = [first, end] + [w["joined"] for w in ws if first <= w["joined"] <= end]
    snaps = [counts_at(ws, t) for t in times]
    peak = {k: max((s[k] for s in snaps if s[k] is not None), default=None) for k in snaps[0]}
    return {"workers_joined": ws, "at_stage_start": {n: counts_at(ws, a) for n, (a, _) in stages.items()},
            "max": peak, "final": counts_at(ws, end), "lost": lost, "joined_late": late,
            "stage_times": {n: [round(a, 2), round(b, 2)] for n, (a, b) in stages.items()}}


def _gib(b: float) -> str:
    return f"{b / 2**30:.1f} GiB"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _when(t: float, stage: Optional[str]) -> str:
    return f"at {t:.0f} s" + (f" during {stage}" if stage else "")


def summary_line(c: dict[str, Any]) -> str:
    """The report's sentence: ``2 workers on 1 host (2 threads, 2 × 5.6 GiB); worker 0 lost at
    12 s during fit, replaced at 15 s``."""
    if c.get("kind") == "sync":
        return "no workers: tasks ran in the client process (kind = sync)"
    m = c.get("max") or {}
    if not c.get("workers_joined"):
        return f"no worker joined ({c.get('source', 'ledger')}: {c.get('ledger_error') or 'nothing recorded'})"
    mems = sorted({w["memory_limit"] for w in c["workers_joined"] if w.get("memory_limit")})
    if not mems:
        mem = "no memory limit"
    elif len(mems) == 1:
        mem = f"{m['workers']} × {_gib(mems[0])}"
    else:
        mem = f"{_gib(mems[0])} to {_gib(mems[-1])} each"
    gpus = f", {_plural(m['gpus'], 'GPU')}" if m.get("gpus") else ""
    parts = [f"{_plural(m['workers'], 'worker')} on {_plural(m['hosts'], 'host')} "
             f"({_plural(m['threads'], 'thread')}, {mem}{gpus})"]
    events = []
    for x in c.get("lost", []):
        back = (f"replaced at {x['replaced_at']:.0f} s" if x["replaced_by"] else "not replaced")
        events.append(f"worker {x['name']} lost {_when(x['at'], x['stage'])}, {back}")
    for x in c.get("joined_late", []):
        events.append(f"worker {x['name']} joined {_when(x['at'], x['stage'])}")
    if len(events) > 4:
        events = events[:3] + [f"{len(events) - 3} more events (metrics.json)"]
    return "; ".join(parts + events)

"""The result of :func:`ntkscale.plan.estimate`: one row per stage, totals, a text table."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from .calibrate import Calibration

__all__ = ["StageEstimate", "Plan", "format_bytes", "format_seconds"]


def format_bytes(b: float) -> str:
    """``1536`` → ``'1.5 KiB'`` (binary units)."""
    b = float(b)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(b) < 1024 or unit == "PiB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1024
    return f"{b:.1f} PiB"  # pragma: no cover


def format_seconds(s: float) -> str:
    """``4000`` → ``'1h 06m'``; below a minute with one decimal."""
    s = float(s)
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)}m {int(round(s % 60)):02d}s"
    if s < 86400 * 2:
        return f"{int(s // 3600)}h {int(round(s % 3600 / 60)):02d}m"
    return f"{s / 86400:.1f} d"


@dataclass(frozen=True)
class StageEstimate:
    """Estimated cost of one stage of a job.

    Attributes
    ----------
    name : str
        ``'gram'`` (train Gram build), ``'fit'`` (solve), ``'predict'`` (test cross-kernel
        products), ``'spectrum'`` (randomized eigendecomposition), ``'curve'`` (learning curve).
    method : str
        What runs, in words (e.g. ``'Nyström-PCG, rank 1000, ~86 iterations'``).
    tiles : int
        Gram tiles computed (build, cross) or factor tiles (tiled Cholesky); 0 otherwise.
    bytes_on_disk : int
        Bytes the stage adds to storage (chunks as zarr writes them: edge tiles padded to
        the full tile, 4 CRC bytes each, plus inputs, statistics and metadata).
    bytes_read : int
        Chunk bytes read back (passes over the stored Gram, factor tiles).
    worker_peak_bytes, client_peak_bytes : int
        Peak resident memory of one worker process and of the client process (the
        process's baseline included).
    flops : float
        Floating-point operations (GEMM/LAPACK; the kernel's elementwise work excluded).
    seconds : float
        Estimated wall time with the planned workers.
    passes : int
        Streaming passes over the stored Gram.
    notes : tuple of str
        Assumptions and warnings for this stage.
    """

    name: str
    method: str
    seconds: float
    tiles: int = 0
    bytes_on_disk: int = 0
    bytes_read: int = 0
    worker_peak_bytes: int = 0
    client_peak_bytes: int = 0
    flops: float = 0.0
    passes: int = 0
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Plan:
    """A capacity estimate: the job, the resources, and one :class:`StageEstimate` per stage.

    Attributes
    ----------
    n, d, n_test : int
        Training rows, input width, test rows.
    kinds : tuple of str
        Stored Gram kinds.
    tile : int
        Tile edge of the train Gram store.
    workers, threads_per_worker, gpus, slots : int
        Planned cluster; ``slots`` = parallel task slots (``workers × threads``, or GPUs).
    memory_per_worker : float
        Worker memory limit the tile was sized for (bytes).
    efficiency : float
        Per-slot parallel efficiency used.
    stages : tuple of StageEstimate
    calibration : Calibration
    notes : tuple of str
        Job-wide assumptions and warnings (uncalibrated GPU rates, memory over limits, ...).
    """

    n: int
    d: int
    n_test: int
    kinds: tuple[str, ...]
    tile: int
    workers: int
    threads_per_worker: int
    gpus: int
    slots: int
    memory_per_worker: float
    efficiency: float
    stages: tuple[StageEstimate, ...]
    calibration: Calibration
    notes: tuple[str, ...] = field(default=())

    def stage(self, name: str) -> StageEstimate:
        """The row of stage ``name`` (KeyError naming the planned stages if absent)."""
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(f"no stage {name!r} in this plan; planned: {[s.name for s in self.stages]}")

    @property
    def total_seconds(self) -> float:
        return float(sum(s.seconds for s in self.stages))

    @property
    def total_bytes_on_disk(self) -> int:
        return int(sum(s.bytes_on_disk for s in self.stages))

    @property
    def worker_peak_bytes(self) -> int:
        return int(max((s.worker_peak_bytes for s in self.stages), default=0))

    @property
    def client_peak_bytes(self) -> int:
        return int(max((s.client_peak_bytes for s in self.stages), default=0))

    @property
    def total_flops(self) -> float:
        return float(sum(s.flops for s in self.stages))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data: inputs, stages, totals, calibration."""
        out = {k: v for k, v in asdict(self).items() if k not in ("stages", "calibration")}
        out["kinds"] = list(self.kinds)
        out["notes"] = list(self.notes)
        out["stages"] = [dict(asdict(s), notes=list(s.notes)) for s in self.stages]
        out["totals"] = {"seconds": self.total_seconds, "bytes_on_disk": self.total_bytes_on_disk,
                         "worker_peak_bytes": self.worker_peak_bytes,
                         "client_peak_bytes": self.client_peak_bytes, "flops": self.total_flops}
        out["calibration"] = self.calibration.to_dict()
        return out

    def table(self, width: Optional[int] = None) -> str:
        """A readable text table of the stages, totals and notes."""
        head = ("stage", "seconds", "disk", "read", "worker peak", "client peak", "GFLOP", "tiles",
                "method")
        rows = [(s.name, format_seconds(s.seconds), format_bytes(s.bytes_on_disk),
                 format_bytes(s.bytes_read), format_bytes(s.worker_peak_bytes),
                 format_bytes(s.client_peak_bytes), f"{s.flops / 1e9:.3g}", str(s.tiles), s.method)
                for s in self.stages]
        rows.append(("total", format_seconds(self.total_seconds), format_bytes(self.total_bytes_on_disk),
                     format_bytes(sum(s.bytes_read for s in self.stages)),
                     format_bytes(self.worker_peak_bytes), format_bytes(self.client_peak_bytes),
                     f"{self.total_flops / 1e9:.3g}", str(sum(s.tiles for s in self.stages)), ""))
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head) - 1)]

        def line(r: tuple) -> str:
            cells = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:-1], widths[1:])]
            text = "  ".join(cells) + "  " + r[-1]
            return text if width is None else text[:width]

        where = (f"{self.gpus} GPU worker(s)" if self.gpus else
                 f"{self.workers} worker(s) x {self.threads_per_worker} thread(s)")
        title = (f"Plan: n={self.n}, d={self.d}, n_test={self.n_test}, kinds={'+'.join(self.kinds)}, "
                 f"tile {self.tile}, {where}, {format_bytes(self.memory_per_worker)} per worker, "
                 f"efficiency {self.efficiency:.2f}")
        sep = "-" * max(len(line(head)), 20)
        out = [title, sep, line(head), sep, *(line(r) for r in rows[:-1]), sep, line(rows[-1])]
        notes = list(self.notes) + [f"{s.name}: {n}" for s in self.stages for n in s.notes]
        if notes:
            out += ["", "Notes:"] + [f"  - {n}" for n in notes]
        return "\n".join(out)

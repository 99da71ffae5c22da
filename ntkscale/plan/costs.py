"""Cost model of the tiled work: Gram build, cross-kernel products, one pass over the tiles.

Pure arithmetic on a :class:`~ntkscale.plan.calibrate.Calibration`; every formula mirrors
the code it models (named in each docstring), so a change there should change it here.

Scheduling: tasks run on ``slots`` parallel slots in submission order, each on the first
free slot (what Dask's scheduler does with a queue of independent tasks) — the makespan of
that list schedule is computed exactly (largest-first for the build, as ``build_gram``
submits). A slot's work is divided by the per-slot ``efficiency`` when ``slots > 1``
(memory bandwidth and turbo shared between the cores of a node).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..tiling.gemv import WIDE
from ..tiling.layout import tile_task_bytes
from .calibrate import Calibration
from .report import StageEstimate

__all__ = ["Resources", "GPU_ASSUMPTIONS", "TRANSFER_BYTES_PER_S", "HASH_BYTES_PER_S", "makespan",
           "gram_disk_bytes", "pass_cost", "gram_stage", "predict_stage", "subset_compute",
           "SINGLE_SPEEDUP"]

#: Uncalibrated GPU rates (one GPU per worker). H100 SXM: FP64 tensor-core peak 67 TFLOP/s
#: (derated to 40); the generic array recursion makes ~10 elementwise passes per activation
#: over float64 n1 x n2 buffers (~160 B/entry at ~3.3 TB/s HBM3 → ~2e10 entries/s per
#: activation); tiles go to the host over PCIe Gen5 (~25 GB/s achievable).
GPU_ASSUMPTIONS = {"fp64_gemm_flops": 4.0e13, "elementwise_entries_per_s_per_activation": 2.0e10,
                   "pcie_bytes_per_s": 2.5e10}
#: Serialization + TCP between client and workers (pickled NumPy arrays, one node or a LAN).
TRANSFER_BYTES_PER_S = 1.0e9
#: blake2b input fingerprint on the client (single core, ~1 GB/s on x86-64).
HASH_BYTES_PER_S = 1.0e9
_EXACT_SCHEDULE_MAX = 200_000  # tasks; beyond, the list-schedule bound sum/slots + max is used
_META_BYTES = 600  # one zarr.json of an array; the group's is ~2x


@dataclass(frozen=True)
class Resources:
    """Where the work runs and how fast (derived from a Calibration and the planned cluster)."""

    cal: Calibration
    slots: int
    workers: int
    threads: int
    gpus: int
    efficiency: float
    client_threads: int
    client_memory: float
    memory_per_worker: float
    entry_s: float  # kernel seconds per entry on one slot (CPU core or GPU)
    page_cache: float = float("inf")  # bytes of store the page cache can hold between passes
    pass_cache: float = 0.0  # bytes of a larger store that direct passes keep cached (StoredGram(cache=...))

    def read_seconds(self, nbytes: float, store_bytes: float) -> float:
        """Seconds to read ``nbytes`` of a store of ``store_bytes``: at the page-cache rate
        when the store fits in the page cache, else at the calibrated cold disk rate (a
        sequential scan of a file set larger than the cache misses it)."""
        cal = self.cal
        if store_bytes > self.page_cache and cal.disk_read_bytes_per_s > 0:
            return nbytes / cal.disk_read_bytes_per_s
        return nbytes / cal.read_bytes_per_s

    def slot_seconds(self, seconds: float) -> float:
        """Seconds of single-slot work when all slots are busy."""
        return seconds / self.efficiency if self.slots > 1 else seconds

    def client_flops(self, rate: float) -> float:
        """Multi-threaded client BLAS/LAPACK rate from a single-thread one."""
        t = self.client_threads
        return rate * t * (self.efficiency if t > 1 else 1.0)

    @property
    def worker_baseline(self) -> int:
        """Resident bytes of an idle worker that has loaded the kernels."""
        return int(self.cal.worker_rss_bytes or self.cal.process_rss_bytes)

    @property
    def client_baseline(self) -> int:
        return int(self.cal.process_rss_bytes)


def makespan(durations: Sequence[float], slots: int) -> float:
    """Finish time of ``durations`` list-scheduled in order on ``slots`` slots.

    Exact up to :data:`_EXACT_SCHEDULE_MAX` tasks; beyond, the list-scheduling bound
    ``sum/slots + max`` (Graham 1966), within one task of the exact value.
    """
    d = np.asarray(durations, dtype=np.float64)
    if d.size == 0:
        return 0.0
    if d.size <= slots:
        return float(d.max())
    if d.size > _EXACT_SCHEDULE_MAX:
        return float(d.sum() / slots + d.max())
    heap = [0.0] * slots
    for t in d.tolist():
        heapq.heappush(heap, heapq.heappop(heap) + t)
    return max(heap)


def _upper_tiles(n: int, T: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Areas, diagonal flags and row indices of the upper-triangle tiles of an n x n grid
    (row-major, as :meth:`ntkscale.tiling.layout.TilePlan.tiles`)."""
    g = -(-n // T)
    i, j = np.triu_indices(g)
    edge = np.minimum(T, n - np.arange(g) * T)
    return edge[i].astype(np.float64) * edge[j], i == j, i


def gram_disk_bytes(n: int, d: int, T: int, n_kinds: int, itemsize: int, stat_rows: int) -> int:
    """Bytes of a symmetric Gram store as :class:`ntkscale.storage.GramStore` writes it.

    Every chunk is stored whole (edge chunks padded to the chunk shape) with a 4-byte CRC32C:
    ``n_kinds`` x (off-diagonal upper tiles of ``T² · itemsize``, diagonal tiles packed into
    ``ceil(T/2) (T+1) · itemsize``, :mod:`ntkscale.storage.packed`, for T >= 3), inputs ``x1``
    in (T, d) float64 chunks, statistics in (stat_rows, T) float64 chunks, and the zarr.json
    documents.
    """
    from ..storage.packed import MIN_PACKED_TILE, packed_rows

    g = -(-n // T)
    packed = T >= MIN_PACKED_TILE
    diag = (packed_rows(T) * (T + 1) if packed else T * T) * itemsize + 4
    tiles = g * (g - 1) // 2 * (T * T * itemsize + 4) + g * diag
    cx = min(T, max(n, 1))
    return int(n_kinds * tiles + (-(-n // cx)) * (cx * d * 8 + 4)
               + g * (stat_rows * T * 8 + 4) + ((2 if packed else 1) * n_kinds + 3) * _META_BYTES)


#: SGEMM over DGEMM throughput (AVX2/AVX-512 lanes hold twice the float32s); the
#: single-precision sketch passes (``StoredGram.matvec(precision='single')``) use it.
SINGLE_SPEEDUP = 2.0


def pass_cost(n: int, T: int, itemsize: int, cols: int, res: Resources, single: bool = False) -> dict:
    """One ``StoredGram.matvec`` over a symmetric store with ``cols`` right-hand columns.

    Mirrors :meth:`ntkscale.operator.StoredGram.matvec` / ``tasks.matvec_task``: tiles in
    ``min(n_tiles, max(2 slots, n_tiles/32))`` equal groups; per tile a chunk read (CRC),
    a banded float64 cast and one product per stored side (two off the diagonal:
    ``n²`` entry-products in all) at ``gemv_entry_s + 2 cols / gemm_flops`` each; V
    broadcast to every worker; partial sums added on the client. When the store is larger
    than the page cache the pass is at least its cold read of the tiles not kept cached
    (``res.pass_cache``: ``StoredGram``'s ``cache``; reads overlap the products). ``single``:
    float32 SGEMMs on wide blocks (:data:`SINGLE_SPEEDUP`).

    Returns
    -------
    dict
        ``seconds``, ``bytes_read``, ``flops``, ``worker_peak``, ``tasks``.
    """
    cal = res.cal
    areas, diag, _ = _upper_tiles(n, T)
    chunk = T * T * itemsize + 4
    product = cal.gemv_entry_s + 2.0 * cols / (cal.gemm_flops * (SINGLE_SPEEDUP if single else 1.0))
    work = (areas.size * chunk / cal.read_bytes_per_s + areas.sum() * cal.cast_entry_s
            + float(n) * n * product)
    tasks = int(min(areas.size, max(2 * res.slots, -(-areas.size // 32))))
    per_task = res.slot_seconds(work / tasks) + cal.task_overhead_s
    client = (n * cols * 8.0 * res.workers / TRANSFER_BYTES_PER_S  # scatter V (broadcast)
              + tasks * n * cols * cal.cast_entry_s  # add the partial products
              + cal.phase_latency_s)
    peak = res.worker_baseline + 2 * n * cols * 8 + T * T * (itemsize + 8)
    seconds = makespan([per_task] * tasks, res.slots) + client
    if cal.pass_entry_s > 0 and not res.gpus:
        # measured end to end on the calibration cluster (float32 tiles): scale by workers
        # and itemsize (reads), add the measured cost of the extra columns. Wide passes
        # (>= WIDE columns) are compute-bound GEMMs: the flop model above describes them
        # (the calibration's small-tile wide pass overstates their per-column cost ~2x).
        extra = (cols - 10) * cal.pass_column_s if cols < WIDE else 0.0
        measured = cal.pass_fixed_s + float(n) * n * cal.pass_workers / res.workers * (
            cal.pass_entry_s * (itemsize / 4 + 1) / 2 + extra)
        seconds = max(seconds, measured)
    store = areas.size * chunk
    if store > res.page_cache and cal.disk_read_bytes_per_s > 0:
        cold = max(0.0, store - min(res.pass_cache, store))
        seconds = max(seconds, res.read_seconds(cold, store) + cal.pass_fixed_s)
    return {"seconds": seconds,
            "bytes_read": areas.size * chunk, "flops": 2.0 * n * n * cols, "worker_peak": peak,
            "tasks": tasks}


def _tile_write_seconds(T: int, n_kinds: int, itemsize: int, cal: Calibration) -> float:
    return n_kinds * (T * T * itemsize + 4) / cal.write_bytes_per_s


def gram_stage(n: int, d: int, T: int, kinds: tuple[str, ...], itemsize: int, stat_rows: int,
               res: Resources, fresh_workers: bool = True) -> StageEstimate:
    """``build_gram`` of the symmetric train Gram (:mod:`ntkscale.tiling.build`).

    Client: input fingerprint, store creation (``x1`` written), then a statistics phase
    (one task per row block) and the tile phase: upper tiles, largest first, each a
    kernel tile (diagonal tiles half: the fused kernel computes their upper triangle) plus
    one chunk write per kind plus one input row block read (the worker's row-block cache
    serves the other); ``fresh_workers``: each worker first loads the kernels
    (``worker_warmup_s``). Worker memory: ``threads × tile_task_bytes`` (the planner's own
    budget) above the process baseline.
    """
    cal = res.cal
    nk = len(kinds)
    areas, diag, _ = _upper_tiles(n, T)
    cost = areas * np.where(diag, 0.5, 1.0)  # TilePlan.cost
    order = np.argsort(-cost, kind="stable")
    per_tile = (cost[order] * res.entry_s + _tile_write_seconds(T, nk, itemsize, cal)
                + T * d * 8 / cal.read_bytes_per_s)
    if res.gpus:  # inputs to the device, tiles back to the host
        per_tile = per_tile + (2 * T * d * 8 + nk * areas[order] * itemsize) / GPU_ASSUMPTIONS["pcie_bytes_per_s"]
    tiles_s = makespan(res.slot_seconds(1.0) * per_tile + cal.task_overhead_s, res.slots)
    if fresh_workers:  # every worker loads the kernels before its first tile
        tiles_s += cal.worker_warmup_s
    g = -(-n // T)
    stats_task = (T * d * 2.0 / cal.gemm_flops + T * stat_rows * 8 / cal.write_bytes_per_s
                  + T * d * 8 / cal.read_bytes_per_s + cal.task_overhead_s)
    stats_s = makespan([stats_task] * g, res.slots)
    client_s = (cal.build_fixed_s + 2 * cal.phase_latency_s + n * d * 8.0 / HASH_BYTES_PER_S
                + n * d * 8.0 / cal.write_bytes_per_s)
    notes = []
    if res.gpus:
        notes.append("GPU kernel rates are assumptions, not calibrated (see GPU_ASSUMPTIONS)")
    worker = res.worker_baseline + res.threads * tile_task_bytes(T, d, nk, itemsize)
    if worker > res.memory_per_worker:
        notes.append(f"worker peak {worker / 2**30:.1f} GiB exceeds the {res.memory_per_worker / 2**30:.1f} "
                     "GiB worker limit: lower the tile or give workers more memory")
    return StageEstimate(
        name="gram", method=f"tiled build, {areas.size} upper tiles of {T}, kinds {'+'.join(kinds)}",
        seconds=client_s + stats_s + tiles_s, tiles=int(areas.size),
        bytes_on_disk=gram_disk_bytes(n, d, T, nk, itemsize, stat_rows),
        bytes_read=int(areas.size * T * d * 8), worker_peak_bytes=int(worker),
        client_peak_bytes=int(res.client_baseline + 2 * n * d * 8), flops=float(2.0 * d * cost.sum()),
        notes=tuple(notes))


def predict_stage(m: int, n: int, d: int, T: int, n_outputs: int, res: Resources,
                  block: int = 1024) -> StageEstimate:
    """``cross_matvec`` of the test rows against the stored train inputs
    (:mod:`ntkscale.tiling.predict`): one task per block of ``block`` test rows, each walking
    the ``ceil(n/T)`` train row blocks (read from the store), computing the float64 cross
    tile and multiplying it by ``α``. Nothing is stored; ``m × n`` entries are computed.
    """
    cal = res.cal
    g = -(-n // T)
    blocks = [min(block, m - s) for s in range(0, m, block)]
    durations = []
    for b in blocks:
        work = (b * n * (res.entry_s + 2.0 * n_outputs / cal.gemm_flops)
                + g * T * d * 8 / cal.read_bytes_per_s + b * d * 2.0 / cal.gemm_flops)
        if res.gpus:
            work += (b * d * 8 + g * T * d * 8 + b * n * 8) / GPU_ASSUMPTIONS["pcie_bytes_per_s"]
        durations.append(res.slot_seconds(work) + cal.task_overhead_s + b * d * 8 / TRANSFER_BYTES_PER_S)
    b = max(blocks, default=0)
    worker = (res.worker_baseline + res.threads * (3 * b * T * 8 + (b + 2 * T) * d * 8)
              + n * n_outputs * 8)
    return StageEstimate(
        name="predict", method=f"streamed cross kernel ({m} x {n}) · α, {len(blocks)} tasks",
        seconds=makespan(durations, res.slots) + cal.phase_latency_s
        + n * n_outputs * 8.0 * res.workers / TRANSFER_BYTES_PER_S,
        tiles=len(blocks) * g, bytes_read=int(len(blocks) * g * (T * d * 8 + 4)),
        worker_peak_bytes=int(worker),
        client_peak_bytes=int(res.client_baseline + m * d * 8 + 2 * m * n_outputs * 8),
        flops=float(2.0 * m * n * (d + n_outputs)),
        notes=("GPU kernel rates are assumptions, not calibrated",) if res.gpus else ())


def subset_compute(rows: int, cols: int, d: int, res: Resources) -> float:
    """Seconds of ``StoredGram.take`` computing a ``rows x cols`` sub-block from the stored
    inputs (:func:`ntkscale.tiling.subset.subset_block`): the inputs read on the client,
    row blocks of 1024 computed on every slot at the kernel's per-entry rate, the float32
    blocks sent back and cast into the float64 result."""
    cal = res.cal
    blocks = -(-rows // 1024)
    per = res.slot_seconds(min(1024, rows) * cols * res.entry_s) + cal.task_overhead_s
    inputs = (rows + cols) * d * 8.0 / cal.read_bytes_per_s + cols * d * 8.0 * res.workers / TRANSFER_BYTES_PER_S
    back = rows * cols * 4.0 / TRANSFER_BYTES_PER_S + 2.0 * rows * cols * cal.cast_entry_s
    return makespan([per] * blocks, res.slots) + inputs + back + cal.phase_latency_s


def dense_read(n: int, T: int, itemsize: int, res: Resources) -> tuple[float, int]:
    """``StoredGram.to_numpy()`` (or a ``gather`` of random rows) on the client: every
    (bi, bj) chunk read whole by one reader (lower ones mirrored from the stored upper tile),
    its part copied into a fresh block and then into the float64 result (~4 entry copies).
    A single reader gets about half the 2-reader cold rate. Returns (seconds, bytes)."""
    cal = res.cal
    g = math.ceil(n / T)
    nbytes = g * g * (T * T * itemsize + 4)
    store = g * (g + 1) // 2 * (T * T * itemsize + 4)
    read = res.read_seconds(nbytes, store)
    if store > res.page_cache and cal.disk_read_bytes_per_s > 0:
        read *= 2.0  # one client thread, no read-ahead: measured ~0.5x the 2-reader rate
    return read + 4.0 * g * g * T * T * cal.cast_entry_s, int(nbytes)

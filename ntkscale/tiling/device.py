"""Where a tile runs: the one place that picks the device and array library for tiles.

Device names (``device=`` of :func:`~ntkscale.tiling.build_gram`,
:func:`~ntkscale.tiling.build_cross_gram`, :func:`~ntkscale.tiling.predict.cross_matvec`;
``[kernel] device`` in a job file)::

    cpu       NumPy on the host (the fused numba kernel for Dense/ABRelu/Erf chains)
    cuda      a CUDA GPU: CuPy when importable, else JAX with a GPU backend. Measured on an
              H200 (benchmarks/RESULTS.md §5): JAX's compiled tile runs at 61 % of the cuBLAS
              GEMM floor on the device against CuPy's 7 %, but a build is bound by the host
              (copies, CRC, writes) and JAX compiles once per tile shape: the n = 50 000
              build took 16.0 s with CuPy and 25.6 s with JAX, so CuPy stays first
    auto      cuda when the worker sees a GPU (CUDA_VISIBLE_DEVICES / nvidia-smi), else cpu
    cupy      CuPy only
    jax       JAX on its default backend (its GPU with jax[cuda12], else its CPU)
    jax-cpu   JAX on its CPU backend: the device code path without a GPU (CI)

The name travels with every task and is resolved on the worker by :func:`resolve_device`
(once per process): a worker started with ``CUDA_VISIBLE_DEVICES=k`` sees its own GPU as
device 0. :meth:`Device.compute` moves a tile's host inputs and statistics to the device,
runs :func:`ntkscale.kernels.kernel_tile` there (the generic array-namespace recursion;
compiled once per tile shape with ``jax.jit`` under JAX), casts to the store dtype on the
device (half the transfer for float32 stores) and returns host NumPy tiles.

Per-row statistics (:meth:`Device.stats`) are computed on the host for every device: they
cost O(n · depth), and host statistics keep the stored diagonals and the activation
variances (which only the NumPy pass records, and the fused CPU kernel needs) the same
whatever device builds or resumes a store.

Numerics: tiles are computed in the compute dtype (float64 by default; JAX runs it under
``jax.enable_x64``) on every device. Device tiles agree with ``cpu`` to ~1e-12 relative in
float64 (other GEMM blocking, ``arctan2`` instead of the fused polynomial ``arccos``); in a
float32 store an entry may differ in its last bit where the rounding falls differently.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..runner import visible_gpus
from ..kernels import DiagStats, Layer, diag_stats, kernel_tile
from ..kernels.backend import jax_x64
from ..kernels.validate import resolve_dtype

__all__ = ["DEVICES", "Device", "DeviceUnavailableError", "check_device", "gpu_workers",
           "resolve_device", "to_host"]

log = logging.getLogger("ntkscale")

DEVICES = ("cpu", "cuda", "auto", "cupy", "jax", "jax-cpu")
CUPY_HINT = "pip install 'ntkscale[cupy]' (CuPy for CUDA 12)"
JAX_HINT = "pip install -U 'jax[cuda12]'"


class DeviceUnavailableError(RuntimeError):
    """The requested device (or the library that drives it) is not available on this worker."""


def check_device(device: Any) -> str:
    """Validate a device name (case-insensitive) and return it in lower case.

    Raises
    ------
    ValueError
        If ``device`` is not one of :data:`DEVICES`.
    """
    if not isinstance(device, str) or device.lower() not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(repr(d) for d in DEVICES)}, got {device!r}")
    return device.lower()


def gpu_workers(device: str) -> bool:
    """Whether a local cluster for ``device`` should run one worker per GPU.

    ``cuda`` and ``cupy`` always; ``auto`` and ``jax`` when this machine shows a GPU;
    ``cpu`` and ``jax-cpu`` never.
    """
    name = check_device(device)
    if name in ("cuda", "cupy"):
        return True
    return name in ("auto", "jax") and bool(visible_gpus())


@dataclass(frozen=True)
class Device:
    """A resolved device: the array library tiles run with, and where.

    Attributes
    ----------
    name : str
        ``"cpu"``, ``"cupy"``, ``"jax-gpu"`` or ``"jax-cpu"``.
    backend : str
        Array library: ``"numpy"``, ``"cupy"`` or ``"jax"``.
    description : str
        Library version and device model, for logs and reports.
    """

    name: str
    backend: str
    description: str
    handle: Any = field(default=None, compare=False, repr=False)  # the jax.Device

    def stats(self, arch: Layer, x: np.ndarray, compute_dtype: Any) -> DiagStats:
        """Diagonal statistics of a host row block ``x`` (computed on the host, see module notes)."""
        return diag_stats(arch, np.asarray(x), dtype=compute_dtype, validate=False)

    def compute(self, arch: Layer, x1: np.ndarray, x2: Optional[np.ndarray], stats1: DiagStats,
                stats2: Optional[DiagStats], kinds: Sequence[str], compute_dtype: Any,
                out_dtype: Any) -> dict[str, np.ndarray]:
        """One Gram tile of host row blocks on this device, returned as host arrays.

        Parameters
        ----------
        arch : Layer
        x1 : ndarray, shape (n1, d)
        x2 : ndarray, shape (n2, d), or None for the symmetric diagonal tile ``x1 x1``
        stats1, stats2 : DiagStats
            Host statistics of the blocks (``stats2`` unused when ``x2`` is None).
        kinds : sequence of {'nngp', 'ntk'}
        compute_dtype, out_dtype : float32 or float64

        Returns
        -------
        dict
            ``{kind: ndarray (n1, n2) of out_dtype}`` on the host.
        """
        kinds = tuple(kinds)
        cdt, odt = resolve_dtype(compute_dtype), resolve_dtype(out_dtype)
        if self.backend == "numpy":
            return kernel_tile(arch, x1, x2, stats1, stats2, kinds, dtype=cdt, out_dtype=odt)
        if self.backend == "cupy":
            return _cupy_tile(arch, x1, x2, stats1, stats2, kinds, cdt, odt)
        return _jax_tile(self.handle, arch, x1, x2, stats1, stats2, kinds, cdt, odt)


def resolve_device(device: str = "cpu") -> Device:
    """The :class:`Device` for ``device`` on this process (cached; errors are not).

    Raises
    ------
    ValueError
        Unknown name.
    DeviceUnavailableError
        ``cuda``/``cupy``/``jax``/``jax-cpu`` without the library or GPU it needs; the
        message names what is missing and how to install it.
    """
    return _resolve(check_device(device))


@lru_cache(maxsize=None)
def _resolve(name: str) -> Device:
    if name == "cpu":
        return Device("cpu", "numpy", "NumPy on the host")
    if name in ("jax", "jax-cpu"):
        dev, why = _jax_probe("cpu" if name == "jax-cpu" else None)
        if dev is None:
            raise DeviceUnavailableError(f"device={name!r}: {why}; pip install 'ntkscale[jax]'")
        return dev
    if name == "cupy":
        dev, why = _cupy_probe()
        if dev is None:
            raise DeviceUnavailableError(f"device='cupy' needs CuPy and a CUDA GPU: {why}; {CUPY_HINT}, "
                                         "or use device='cpu'")
        return dev
    if name == "auto" and not visible_gpus():
        return _resolve("cpu")
    cupy_dev, why_cupy = _cupy_probe()  # CuPy first: faster builds end to end (module notes)
    if cupy_dev is not None:
        return cupy_dev
    jax_dev, why_jax = _jax_probe("gpu")
    if jax_dev is not None:
        return jax_dev
    msg = (f"found no usable CUDA GPU (CuPy: {why_cupy}; JAX: {why_jax}). Install one of "
           f"{CUPY_HINT} or {JAX_HINT} on a machine whose NVIDIA driver lists a GPU (nvidia-smi -L)")
    if name == "auto":
        log.warning("device='auto' sees a GPU but %s; computing tiles on the CPU", msg)
        return _resolve("cpu")
    raise DeviceUnavailableError(f"device='cuda' {msg}, or use device='cpu'")


resolve_device.cache_clear = _resolve.cache_clear  # type: ignore[attr-defined]


def _cupy_probe() -> tuple[Optional[Device], str]:
    """``(Device, "")`` when CuPy drives a GPU here, else ``(None, why not)``."""
    try:
        import cupy
    except ImportError:
        return None, "CuPy is not installed"
    except Exception as e:  # noqa: BLE001 - a broken CuPy install (wrong CUDA wheel)
        return None, f"importing CuPy failed ({e})"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
        props = cupy.cuda.runtime.getDeviceProperties(0) if n else {}
    except Exception as e:  # noqa: BLE001 - no driver, no device
        return None, f"CuPy finds no CUDA device ({e})"
    if n < 1:
        return None, "CuPy finds no CUDA device"
    model = props.get("name", b"GPU")
    model = model.decode() if isinstance(model, bytes) else str(model)
    return Device("cupy", "cupy", f"CuPy {cupy.__version__} on {model}"), ""


def _jax_probe(platform: Optional[str]) -> tuple[Optional[Device], str]:
    """``(Device, "")`` for JAX's first device of ``platform`` (None: default), else ``(None, why)``."""
    try:
        import jax
    except ImportError:
        return None, "JAX is not installed"
    try:
        devices = jax.devices(platform) if platform else jax.devices()
    except RuntimeError as e:
        return None, f"JAX has no {platform} backend ({str(e).splitlines()[0]})"
    d = devices[0]
    name = "jax-cpu" if d.platform == "cpu" else "jax-gpu"
    return Device(name, "jax", f"JAX {jax.__version__} on {d.device_kind} ({d.platform})", handle=d), ""


def to_host(x: Any) -> Any:
    """A NumPy view/copy of a NumPy, CuPy or JAX array (other objects are returned as given)."""
    mod = type(x).__module__.split(".")[0]
    if mod == "cupy":
        return x.get()
    if mod in ("jax", "jaxlib"):
        return np.asarray(x)
    return x


# ---------------------------------------------------------------------------- CuPy
def _cupy_tile(arch: Layer, x1: np.ndarray, x2: Optional[np.ndarray], s1: DiagStats,
               s2: Optional[DiagStats], kinds: tuple[str, ...], cdt: np.dtype,
               odt: np.dtype) -> dict[str, np.ndarray]:
    import cupy

    put = lambda a: cupy.asarray(np.asarray(a), dtype=cdt)  # noqa: E731
    d1, st1 = put(x1), _stats_on(put, s1)
    d2, st2 = (None, None) if x2 is None else (put(x2), _stats_on(put, s2))
    out = kernel_tile(arch, d1, d2, st1, st2, kinds, dtype=cdt, out_dtype=odt)
    return {k: cupy.asnumpy(v) for k, v in out.items()}


def _stats_on(put: Callable[[Any], Any], s: Any) -> DiagStats:
    """Device copies of the statistics the generic recursion reads (no activation variances)."""
    return DiagStats(cov0=put(s.cov0), act_vars=None, nngp=put(s.nngp), ntk=put(s.ntk))


# ----------------------------------------------------------------------------- JAX
def _tile_fn(arch: Layer, kinds: tuple[str, ...], cdt: str, odt: str, symmetric: bool) -> Callable:
    def tile(x1: Any, c1: Any, q1: Any, t1: Any, *other: Any) -> dict[str, Any]:
        st1 = DiagStats(cov0=c1, act_vars=None, nngp=q1, ntk=t1)
        x2, st2 = (None, None) if symmetric else (other[0], DiagStats(other[1], None, other[2], other[3]))
        return kernel_tile(arch, x1, x2, st1, st2, kinds, dtype=cdt, out_dtype=odt)
    return tile


@lru_cache(maxsize=32)
def _jitted(arch: Layer, kinds: tuple[str, ...], cdt: str, odt: str, symmetric: bool) -> Callable:
    """One compiled tile function per architecture (by value: tasks unpickle a fresh copy
    each time), kinds and dtypes; ``jax.jit`` retraces per tile shape (edge tiles)."""
    import jax

    return jax.jit(_tile_fn(arch, kinds, cdt, odt, symmetric))


def _jax_tile(dev: Any, arch: Layer, x1: np.ndarray, x2: Optional[np.ndarray], s1: DiagStats,
              s2: Optional[DiagStats], kinds: tuple[str, ...], cdt: np.dtype,
              odt: np.dtype) -> dict[str, np.ndarray]:
    import jax

    args = [x1, s1.cov0, s1.nngp, s1.ntk]
    if x2 is not None:
        args += [x2, s2.cov0, s2.nngp, s2.ntk]
    key = (kinds, cdt.name, odt.name, x2 is None)
    try:
        fn = _jitted(arch, *key)
    except TypeError:  # an unhashable architecture (user Elementwise with unhashable fields)
        fn = _tile_fn(arch, *key)
    with jax_x64(cdt):
        out = fn(*(jax.device_put(np.asarray(a, dtype=cdt), dev) for a in args))
        return {k: np.asarray(v) for k, v in out.items()}

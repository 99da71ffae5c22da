#!/usr/bin/env bash
# GPU benchmark on one machine with an NVIDIA GPU (benchmarks/bench_gpu.py):
# device tiles vs CPU float64, tile throughput vs the cuBLAS GEMM floor, Gram build and
# Nyström-PCG at n = 50k on one GPU. Writes benchmarks/results/gpu.json and prints a table.
#
#   benchmarks/gpu.sh                     # defaults: n=50000, tile 8192, d=784
#   benchmarks/gpu.sh --skip-build        # accuracy and throughput only (~1 min)
#   benchmarks/gpu.sh --dry-run           # tiny sizes, JAX on CPU: checks the script anywhere
#
# Expects Python >= 3.11 with numpy/scipy and CuPy and/or jax[cuda12] possibly preinstalled.
# When ntkscale or its dependencies (dask, distributed, zarr, numcodecs, numba, ...) are
# missing it installs the project from the repository root: offline from the wheels in
# .whl/ when that folder exists, else with `pip install -e .` from the package index.
# PYTHON=... picks the interpreter (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export XLA_PYTHON_CLIENT_PREALLOCATE=false   # JAX and CuPy share the GPU

"$PY" --version
command -v nvidia-smi >/dev/null && nvidia-smi -L || echo "note: nvidia-smi lists no GPU" >&2

if ! "$PY" - <<'EOF' 2>/dev/null
import os, ntkscale, dask, distributed, zarr, numcodecs, numba, sklearn, google_crc32c
assert os.path.realpath(os.path.dirname(ntkscale.__file__)) == os.path.realpath("ntkscale")
EOF
then
    echo "installing ntkscale and its dependencies from $(pwd)" >&2
    if compgen -G ".whl/*.whl" >/dev/null; then
        # offline: dependencies from .whl/; the build backend (setuptools) from this Python,
        # or from .whl/ when it is not installed here
        "$PY" -m pip install --no-index --find-links .whl --no-build-isolation -e . \
            || "$PY" -m pip install --no-index --find-links .whl -e .
    else
        "$PY" -m pip install -e .
    fi
fi
"$PY" -c "import ntkscale, numpy; print('ntkscale', ntkscale.__version__, 'numpy', numpy.__version__)"
for lib in cupy jax; do
    "$PY" -c "import $lib; print('$lib', $lib.__version__)" 2>/dev/null || echo "$lib: not installed" >&2
done

exec "$PY" benchmarks/bench_gpu.py "$@"

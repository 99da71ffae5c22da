"""Record neural-tangents 0.6.5's values for :mod:`cases_more` or, with ``seq1d``, :mod:`cases_seq1d`
(1-d convolutions and pooling on sequences), or with ``convlt``, :mod:`cases_convlt` (``ConvLocal``,
``ConvTranspose``); run in NT's own venv (``make_venv.sh``).

    /tmp/nt-venv/bin/python tests/nt_parity/generate_more.py          # -> nt065_more.npz
    /tmp/nt-venv/bin/python tests/nt_parity/generate_more.py seq1d    # -> nt065_seq1d.npz
    /tmp/nt-venv/bin/python tests/nt_parity/generate_more.py convlt   # -> nt065_convlt.npz

Writes ``nt065_<more|seq1d|convlt>.npz`` next to this file: for every case, NT's ``kernel_fn`` in float64
(``jax_enable_x64``), symmetric (``x2=None``) and cross: ``<case>/<nngp|ntk>/<sym|cross>``,
the ``get=None`` Kernel's ``<case>/cov1/<sym|cross>`` and ``<case>/cov2/cross`` (NT's
``cov2`` is None for ``x2=None``), and ``<case>/is_gaussian``. A case NT refuses is stored
as ``<case>/error`` (its message). Only NT's ``experimental`` subpackage is stubbed.
"""

from __future__ import annotations

import os
import sys
import types

sys.modules["neural_tangents.experimental"] = types.ModuleType("neural_tangents.experimental")

import jax  # noqa: E402
import numpy as np  # noqa: E402

jax.config.update("jax_enable_x64", True)

import neural_tangents  # noqa: E402
from neural_tangents import stax  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import importlib  # noqa: E402


def main(suite: str = "more") -> None:
    cases = importlib.import_module(f"cases_{suite}")
    CASES, inputs = cases.CASES, cases.inputs
    assert neural_tangents.__version__ == "0.6.5", neural_tangents.__version__
    arrays: dict[str, np.ndarray] = {}
    for name, (build, kind) in CASES.items():
        x1, x2 = inputs(kind)
        try:
            _, _, kernel_fn = build(stax)
            for which, (a, b) in {"sym": (x1, None), "cross": (x1, x2)}.items():
                k = kernel_fn(a, b)
                arrays[f"{name}/nngp/{which}"] = np.asarray(k.nngp, np.float64)
                arrays[f"{name}/ntk/{which}"] = np.asarray(k.ntk, np.float64)
                arrays[f"{name}/cov1/{which}"] = np.asarray(k.cov1, np.float64)
                if k.cov2 is not None:
                    arrays[f"{name}/cov2/{which}"] = np.asarray(k.cov2, np.float64)
                arrays[f"{name}/is_gaussian"] = np.asarray(bool(k.is_gaussian))
            status = "ok"
        except Exception as e:  # noqa: BLE001 - recorded: the test knows NT refused it
            arrays[f"{name}/error"] = np.asarray(f"{type(e).__name__}: {e}")
            status = f"{type(e).__name__}: {e}"[:80]
        print(f"{name:32s} {status}")
    np.savez_compressed(os.path.join(HERE, f"nt065_{suite}.npz"), **arrays)


if __name__ == "__main__":
    main(*sys.argv[1:2])

"""Regenerate the neural-tangents 0.6.5 parity fixtures (run in NT's own venv, not ntkscale's).

    bash tests/nt_parity/make_venv.sh /tmp/nt-venv
    /tmp/nt-venv/bin/python tests/nt_parity/generate.py

Writes, next to this file:

* ``nt065_kernels.npz``: for every case of :mod:`cases`, NT's ``kernel_fn`` in float64
  (``jax_enable_x64``) on the case's inputs: ``<case>/<nngp|ntk>/<sym|cross>`` arrays, plus
  the inputs themselves (``<kind>/x1``, ``<kind>/x2``) so the test can check it feeds the same;
  a case NT rejects is recorded in ``nt065_meta.json`` with NT's error.
* ``nt065_signatures.json``: every public name of ``neural_tangents.stax`` with its parameters
  and default values (``repr``), or its kind for non-callables: what "every constructor
  default equals NT's" is checked against.

Only NT's ``experimental`` subpackage (TensorFlow interop, which imports TensorFlow) is
stubbed; nothing NT computes is changed.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
import types

sys.modules["neural_tangents.experimental"] = types.ModuleType("neural_tangents.experimental")

import jax  # noqa: E402
import numpy as np  # noqa: E402

jax.config.update("jax_enable_x64", True)

import neural_tangents  # noqa: E402
from neural_tangents import stax  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cases import CASES, INPUTS, inputs  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def signatures() -> dict:
    out = {}
    for name in sorted(n for n in dir(stax) if not n.startswith("_")):
        obj = getattr(stax, name)
        if inspect.isclass(obj) and issubclass(obj, __import__("enum").Enum):
            out[name] = {"kind": "enum", "members": [m.name for m in obj]}
            continue
        try:
            sig = inspect.signature(obj)
        except (TypeError, ValueError):
            out[name] = {"kind": type(obj).__name__}
            continue
        out[name] = {"kind": "class" if inspect.isclass(obj) else "function",
                     "params": {p.name: {"default": None if p.default is inspect.Parameter.empty else repr(p.default),
                                         "kind": p.kind.name} for p in sig.parameters.values()}}
    return out


def main() -> None:
    arrays: dict[str, np.ndarray] = {}
    meta: dict = {"neural_tangents": neural_tangents.__version__, "jax": jax.__version__,
                  "numpy": np.__version__, "x64": True, "cases": {}}
    for kind in INPUTS:
        arrays[f"{kind}/x1"], arrays[f"{kind}/x2"] = inputs(kind)
    for name, (build, kind) in CASES.items():
        x1, x2 = inputs(kind)
        try:
            _, _, kernel_fn = build(stax)
            for which, (a, b) in {"sym": (x1, None), "cross": (x1, x2)}.items():
                k = kernel_fn(a, b, ("nngp", "ntk"))
                arrays[f"{name}/nngp/{which}"] = np.asarray(k.nngp, np.float64)
                arrays[f"{name}/ntk/{which}"] = np.asarray(k.ntk, np.float64)
            meta["cases"][name] = {"kind": kind, "ok": True}
        except Exception as e:  # noqa: BLE001 - recorded: the test knows NT refused it
            meta["cases"][name] = {"kind": kind, "ok": False, "error": f"{type(e).__name__}: {e}"}
        print(f"{name:32s} {'ok' if meta['cases'][name]['ok'] else meta['cases'][name]['error'][:80]}")
    np.savez_compressed(os.path.join(HERE, "nt065_kernels.npz"), **arrays)
    with open(os.path.join(HERE, "nt065_meta.json"), "w") as f:
        json.dump(meta, f, indent=1, sort_keys=True)
    with open(os.path.join(HERE, "nt065_signatures.json"), "w") as f:
        json.dump(signatures(), f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()

"""Regenerate the neural-tangents 0.6.5 fixtures of sequences, LayerNorm and attention (run in
NT's own venv, not ntkscale's), like ``generate.py``:

    bash tests/nt_parity/make_venv.sh /tmp/nt-venv
    /tmp/nt-venv/bin/python tests/nt_parity/generate_attention.py          # -> nt065_attention.*
    /tmp/nt-venv/bin/python tests/nt_parity/generate_attention.py posemb   # -> nt065_posemb.* (cases_posemb:
        positional embeddings, linear_scaling=False IDENTITY, and FINITE cases: ``<case>/params/<name>``
        from ``init_fn(PRNGKey(0), x1.shape)`` and ``<case>/out`` = ``apply_fn(params, x1)``)

Writes ``nt065_attention.npz`` (``<case>/<nngp|ntk>/<sym|cross>`` float64 arrays and the inputs
``<kind>/x1``, ``<kind>/x2``) and ``nt065_attention_meta.json`` (versions; per case ok, or NT's
error). NT's ``experimental`` subpackage (TensorFlow interop) is stubbed; nothing NT computes
is changed. NT warns at ``init_fn`` of linear-scaling attention only; ``kernel_fn`` is silent.
"""

from __future__ import annotations

import json
import os
import sys
import types

sys.modules["neural_tangents.experimental"] = types.ModuleType("neural_tangents.experimental")

import warnings  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

jax.config.update("jax_enable_x64", True)

import neural_tangents  # noqa: E402
from neural_tangents import stax  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import importlib  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def main(suite: str = "attention") -> None:
    cases = importlib.import_module(f"cases_{suite}")
    CASES, INPUTS, inputs = cases.CASES, cases.INPUTS, cases.inputs
    warnings.simplefilter("ignore")  # NT: "Linear scaling attention used", "FanIn layers assume"
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
        print(f"{name:34s} {'ok' if meta['cases'][name]['ok'] else meta['cases'][name]['error'][:80]}")
    for name, (build, kind) in getattr(cases, "FINITE", {}).items():
        x1, _ = inputs(kind)
        init_fn, apply_fn, _ = build(stax)
        _, params = init_fn(jax.random.PRNGKey(0), x1.shape)
        meta["cases"][name] = {"kind": kind, "ok": True, "params": [p is not None for p in params]}
        for pname, p in zip(cases.PARAMS, params):
            if p is not None:
                arrays[f"{name}/params/{pname}"] = np.asarray(p, np.float64)
        arrays[f"{name}/out"] = np.asarray(apply_fn(params, x1), np.float64)
        print(f"{name:34s} finite ok")
    np.savez_compressed(os.path.join(HERE, f"nt065_{suite}.npz"), **arrays)
    with open(os.path.join(HERE, f"nt065_{suite}_meta.json"), "w") as f:
        json.dump(meta, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main(*sys.argv[1:2])

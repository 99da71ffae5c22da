"""Regenerate the ``nt.predict`` parity fixture (run in NT's own venv, not ntkscale's).

    bash tests/nt_parity/make_venv.sh /tmp/nt-venv
    /tmp/nt-venv/bin/python tests/nt_parity/generate_predict.py

Writes ``nt065_predict.npz`` next to this file: for every entry of
:data:`predict_cases.CALLS` NT 0.6.5's result in float64 (``jax_enable_x64``), flattened by
:func:`predict_cases.flatten` (``<call>/<field>/...``), NT's ``max_learning_rate`` for
:data:`predict_cases.MAX_LR`, the inputs (``data/<name>``, so the test can check it feeds
the same) NT's kernels (``kernel/<which>/<kind>``) and the
signatures of NT's predict functions (``signature/<name>``: ``name=default`` strings). NT's ``experimental`` subpackage
(TensorFlow interop) is stubbed; nothing NT computes is changed.
"""

from __future__ import annotations

import inspect
import os
import sys
import types

sys.modules["neural_tangents.experimental"] = types.ModuleType("neural_tangents.experimental")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import neural_tangents as nt  # noqa: E402
from neural_tangents import predict, stax  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import predict_cases as pc  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> None:
    assert nt.__version__ == "0.6.5", nt.__version__
    d = pc.data()
    dj = {k: jnp.asarray(v) for k, v in d.items()}
    _, _, kernel_fn = pc.arch(stax)
    ks = pc.kernels(kernel_fn, dj)
    arrays: dict[str, np.ndarray] = {f"data/{k}": v for k, v in d.items()}
    for which, k in ks.items():
        for g in ("nngp", "ntk"):
            arrays[f"kernel/{which}/{g}"] = np.asarray(getattr(k, g), np.float64)
    loss_fns = pc.losses(jnp)
    for name, (kind, make, call) in pc.CALLS.items():
        mk, cl = pc.resolve(kind, make, call, dj, ks, loss_fns)
        if kind == "ensemble":
            fn = predict.gradient_descent_mse_ensemble(kernel_fn, dj["x_train"], **mk)
        elif kind == "gp":
            fn = predict.gp_inference(**mk)
        elif kind == "mse":
            fn = predict.gradient_descent_mse(**mk)
        else:
            fn = predict.gradient_descent(**mk)
        out = fn(**cl)
        flat = pc.flatten(out, name)
        arrays.update(flat)
        print(f"{name:24s} " + ", ".join(f"{k.split('/', 1)[1] if '/' in k else '-'}{v.shape}"
                                         for k, v in flat.items()))
    # NT 0.6.5's CPU branch calls scipy's removed ``eigvalsh(eigvals=...)`` (TypeError with the
    # scipy its jax 0.4.30 venv gets); its accelerator branch (jnp.linalg.eigvalsh) is NT's own
    # code too, so the fixture comes from that branch, with NT's error recorded.
    from neural_tangents._src import predict as nt_predict_src
    for name, kw in pc.MAX_LR.items():
        try:
            value = predict.max_learning_rate(ks["train"].ntk, **kw)
        except TypeError as e:
            arrays["max_learning_rate/cpu_error"] = np.asarray(f"{type(e).__name__}: {e}")
            on_cpu, nt_predict_src._is_on_cpu = nt_predict_src._is_on_cpu, lambda x: False
            try:
                value = predict.max_learning_rate(ks["train"].ntk, **kw)
            finally:
                nt_predict_src._is_on_cpu = on_cpu
        arrays[name] = np.asarray(value, np.float64)
    for fname in pc.SIGNATURES:
        params = inspect.signature(getattr(predict, fname)).parameters.values()
        arrays[f"signature/{fname}"] = np.asarray(
            [f"{p.name}={p.default!r}" if p.default is not inspect.Parameter.empty else
             (f"**{p.name}" if p.kind is p.VAR_KEYWORD else p.name) for p in params])
    np.savez_compressed(os.path.join(HERE, "nt065_predict.npz"), **arrays)


if __name__ == "__main__":
    main()

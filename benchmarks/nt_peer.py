"""The neural-tangents side of ``bench_nt.py``: a timing server run in NT's own venv.

    /tmp/nt-venv/bin/python benchmarks/nt_peer.py CASE N SEED

reads lines from stdin: ``run`` times one ``kernel_fn(x, None, ('nngp', 'ntk'))`` of the case
(jitted, compiled untimed at start, float64, outputs blocked on) and prints its seconds;
``check`` prints the NTK as JSON-free raw float64 bytes' hex of its first row (for the value
check); ``quit`` ends. The case's architecture and inputs come from ``nt_cases.py`` (the
same function of a ``stax`` module the ntkscale side builds). Only NT's TensorFlow-interop
subpackage is stubbed.
"""

from __future__ import annotations

import os
import sys
import time
import types

sys.modules["neural_tangents.experimental"] = types.ModuleType("neural_tangents.experimental")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
from neural_tangents import stax  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nt_cases import CASES  # noqa: E402


def main() -> None:
    name, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    build, make_x = CASES[name]
    _, _, kernel_fn = build(stax)
    x = jax.numpy.asarray(make_x(n, seed))
    f = jax.jit(kernel_fn, static_argnames="get")

    def run():
        k = f(x, None, get=("nngp", "ntk"))
        jax.block_until_ready(k)
        return k

    run()  # compile
    print("ready", flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "run":
            t0 = time.perf_counter()
            run()
            print(f"{time.perf_counter() - t0:.9f}", flush=True)
        elif cmd == "check":
            print(np.asarray(run()[1][0], np.float64).tobytes().hex(), flush=True)
        elif cmd == "quit":
            break


if __name__ == "__main__":
    main()

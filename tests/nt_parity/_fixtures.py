"""What the parity tests share: loading a committed NT fixture and comparing a kernel with
NT's (1e-12 relative; where NT's own symmetric diagonal is rounded, a stated looser tolerance
on the diagonal only, see each test module's table)."""

from __future__ import annotations

import json
import os
from typing import Optional

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
RTOL = 1e-12


def load(npz: str, meta: Optional[str] = None) -> tuple[dict, dict]:
    """The arrays of ``npz`` and the JSON ``meta`` (``{}`` without one), from this folder."""
    with np.load(os.path.join(HERE, npz)) as z:
        arrays = {k: z[k] for k in z.files}
    if meta is None:
        return arrays, {}
    with open(os.path.join(HERE, meta)) as f:
        return arrays, json.load(f)


def assert_kernel_close(got, want, what: str, diag_rtol: Optional[float] = None) -> None:
    """``got`` equals NT's ``want`` to :data:`RTOL` (relative to the largest entry); with
    ``diag_rtol``, the diagonal of a square kernel to that instead."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    scale = np.abs(want).max() if want.size else 1.0
    if diag_rtol is not None and got.ndim == 2 and got.shape[0] == got.shape[1]:
        np.testing.assert_allclose(np.diagonal(got), np.diagonal(want), rtol=0, atol=diag_rtol * scale,
                                   err_msg=f"{what} diagonal")
        off = ~np.eye(len(got), dtype=bool)
        got, want = got[off], want[off]
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=RTOL * scale, err_msg=what)


def check_case(nt: dict, name: str, kernel_fn, x1, x2, diag_rtol: dict,
               fields: tuple[str, ...] = ("nngp", "ntk", "cov1", "cov2")) -> None:
    """A case's ``kernel_fn`` against NT's fixture arrays ``nt[f"{name}/{field}/{sym|cross}"]``
    (symmetric ``x2=None`` and cross): every field to 1e-12 relative (the symmetric NTK's
    diagonal to ``diag_rtol[name]`` where NT rounds it), a field NT leaves out is None here, and
    ``is_gaussian`` agrees."""
    import warnings

    for which, (a, b) in {"sym": (x1, None), "cross": (x1, x2)}.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            k = kernel_fn(a, b)
        for f in fields:
            key = f"{name}/{f}/{which}"
            if key not in nt:  # NT's cov2 is None for x2=None
                assert getattr(k, f) is None, key
                continue
            assert_kernel_close(getattr(k, f), nt[key], key,
                                diag_rtol.get(name) if (f, which) == ("ntk", "sym") else None)
        assert bool(k.is_gaussian) == bool(nt[f"{name}/is_gaussian"]), name

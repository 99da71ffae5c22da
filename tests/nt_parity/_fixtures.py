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

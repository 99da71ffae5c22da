"""Width convergence: the empirical NTK of a ReLU MLP approaches the infinite-width NTK like
1/sqrt(width).

Measured (depth 2, W_std = sqrt 2, b_std = 0.1, 2 outputs, n = 10 points in d = 6, float64):
the fitted slope of log mean distance vs log width over widths 32-512 is -0.49 with 24
seeds; with 8 seeds it stays within [-0.53, -0.44] across disjoint seed sets (3 seeds:
[-0.61, -0.34]). A kernel off by a constant factor (the sum over the 2 outputs instead of
the mean) would stay ~1 away from the limit: slope ~0.
"""

import numpy as np
import pytest

pytest.importorskip("jax")

from ntkscale.empirical import mlp, width_sweep  # noqa: E402

X = np.random.default_rng(0).standard_normal((10, 6))


def test_distance_falls_like_inverse_sqrt_width():
    res = width_sweep(mlp(2, "relu", out_dim=2), [32, 128, 512], X, seeds=range(8))
    assert res.distance.shape == (3, 8)
    assert np.all(np.diff(res.mean) < 0)
    assert -0.75 <= res.slope <= -0.3, res.slope
    assert res.mean[-1] < 0.2  # close to the limit at width 512 (measured 0.12)


def test_sweep_checks_its_inputs():
    with pytest.raises(ValueError, match="at least two"):
        width_sweep(mlp(1), [64], X)
    with pytest.raises(ValueError, match="finite"):
        width_sweep(mlp(1), [8, 16], np.full((3, 2), np.nan))
    with pytest.raises(ValueError, match="depth"):
        mlp(0)

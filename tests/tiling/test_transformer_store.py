"""The infinite-width transformer in the tiled pipeline (issue 22): sequence rows flattened
(``Unflatten(1, T, C)``), stored Gram == dense ``kernel_fn``, symmetric and cross."""

import numpy as np
import pytest

from ntkscale.kernels import transformer
from ntkscale.operator import StoredGram
from ntkscale.tiling import build_cross_gram, build_gram


def _rows(n, shape=(5, 3), seed=0):
    return np.random.default_rng(seed).standard_normal((n, int(np.prod(shape))))


@pytest.mark.parametrize("arch", [transformer((5, 3), 2, b_std=0.1),
                                  transformer((5, 3), 1, n_heads=2, readout="flatten",
                                              attention_mechanism="RELU", activation="gelu")])
def test_transformer_gram_tiled_equals_dense(arch):
    """n = 21 with tile 8: edge tiles of 5; float64 stores equal the dense kernel to rounding."""
    X, Y = _rows(21), _rows(9, seed=1)
    url = "memory://transformer-sym"
    build_gram(arch, X, url, get=("nngp", "ntk"), tile=8, dtype=np.float64, client="sync", overwrite=True)
    K = arch.kernel_fn(X, None)
    for kind in ("nngp", "ntk"):
        got = StoredGram(url, kind).to_numpy()
        ref = getattr(K, kind)
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12 * np.abs(ref).max())
        np.testing.assert_array_equal(got, got.T)
    # the rows are the (n, T, C) sequences NT's kernel_fn takes (without the Unflatten)
    body = type(arch)(arch.layers[1:])
    np.testing.assert_allclose(body.kernel_fn(X.reshape(21, 5, 3), None, "ntk"), K.ntk, rtol=1e-13)
    build_cross_gram(arch, Y, X, "memory://transformer-cross", get="ntk", tile=8, dtype=np.float64,
                     client="sync", overwrite=True)
    ref = arch.kernel_fn(Y, X, "ntk")
    np.testing.assert_allclose(StoredGram("memory://transformer-cross", "ntk").to_numpy(), ref,
                               rtol=1e-12, atol=1e-12 * np.abs(ref).max())

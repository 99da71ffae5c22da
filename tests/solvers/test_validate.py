"""Ridge validation: numbers only (no strings or booleans that float() would accept)."""

import numpy as np
import pytest

from ntkscale.solvers.validate import check_ridge


@pytest.mark.parametrize("bad, err", [("0.1", TypeError), (True, TypeError), (np.bool_(False), TypeError),
                                      (-1e-3, ValueError), (np.nan, ValueError), (np.inf, ValueError),
                                      (None, ValueError), ([0.1], ValueError)])
def test_bad_ridges_are_refused(bad, err):
    with pytest.raises(err, match="ridge"):
        check_ridge(bad)


@pytest.mark.parametrize("good", [0, 0.0, 1e-3, np.float32(0.5), np.int64(2)])
def test_numbers_pass(good):
    assert check_ridge(good) == float(good)

"""One ridge check (:func:`ntkscale.linop.check_ridge`) behind every entry that takes a ridge.

Every entry refuses NaN, inf, a negative number, a bool and a string with the same
exception type (:class:`~ntkscale.errors.InvalidRidgeError`, a ValueError and a TypeError)
and the same message; the job config wraps it in a ConfigError that names the key.
"""

import numpy as np
import pytest

from ntkscale.errors import InvalidRidgeError
from ntkscale.linop import DenseGram, check_ridge, check_ridges

BAD = {"nan": float("nan"), "inf": float("inf"), "-inf": -np.inf, "negative": -1e-3, "bool": True,
       "numpy bool": np.bool_(False), "string": "0.1", "none": None, "list": [0.1], "complex": 1 + 0j}
MSG = "must be a finite real number >= 0, got "

rng = np.random.default_rng(0)
_A = rng.standard_normal((12, 4))
K = _A @ _A.T + 12 * np.eye(12)  # shape: (12, 12), positive definite
Y = rng.standard_normal(12)
EVALS, EVECS = np.linalg.eigh(K)
ETA = 1.0 / np.arange(1, 9) ** 2


def _entries():
    from ntkscale.solvers.api import solve
    from ntkscale.solvers.cholesky import cholesky_solve
    from ntkscale.solvers.pcg import pcg
    from ntkscale.spectral import eigenlearning, random_features, selection, theory
    from ntkscale.spectral.curves import empirical_learning_curve, theory_learning_curve
    from ntkscale.spectral.double_descent import ridgewise_double_descent

    return {
        "linop.check_ridge": lambda r: check_ridge(r),
        "linop.check_ridges": lambda r: check_ridges([1e-3, r]),
        "solvers.solve": lambda r: solve(K, Y, r),
        "solvers.cholesky_solve": lambda r: cholesky_solve(K, Y, r),
        "solvers.pcg": lambda r: pcg(DenseGram(K), Y, r),
        "spectral.learning_curve": lambda r: theory.learning_curve(ETA, ETA, [4.0], lam=r),
        "spectral.solve_kappa": lambda r: theory.solve_kappa(ETA, 4.0, r),
        "spectral.eigenlearning": lambda r: eigenlearning.effective_regularization(ETA, 4.0, r),
        "spectral.rf_learning_curve": lambda r: random_features.rf_learning_curve(ETA, ETA, 6, [3.0], r),
        "spectral.gcv": lambda r: selection.gcv(EVALS, EVECS, Y, [1e-3, r]),  # grids: ([0.1] is one)
        "spectral.select_ridge": lambda r: selection.select_ridge(EVALS, EVECS, Y, [1e-3, r]),
        "spectral.empirical_learning_curve": lambda r: empirical_learning_curve(K, Y, [4], ridge=r, n_trials=2),
        "spectral.theory_learning_curve": lambda r: theory_learning_curve((EVALS, EVECS), Y, [4], r),
        "spectral.ridgewise_double_descent": lambda r: ridgewise_double_descent(K, Y, [1e-3, r], 4, trials=2),
    }


ENTRIES = _entries()


@pytest.mark.parametrize("entry", sorted(ENTRIES))
@pytest.mark.parametrize("what", sorted(BAD))
def test_every_entry_refuses_a_bad_ridge_the_same_way(entry, what):
    with pytest.raises(InvalidRidgeError, match=MSG) as e:
        ENTRIES[entry](BAD[what])
    assert isinstance(e.value, ValueError) and isinstance(e.value, TypeError)  # either `except` works


@pytest.mark.parametrize("entry", sorted(ENTRIES))
def test_every_entry_takes_a_good_ridge(entry):
    ENTRIES[entry](np.float32(1e-2))
    ENTRIES[entry](0)


@pytest.mark.parametrize("what", sorted(BAD))
def test_the_message_names_the_value_and_the_fix(what):
    with pytest.raises(InvalidRidgeError) as e:
        check_ridge(BAD[what], "lam")
    text = str(e.value)
    assert text.startswith("lam " + MSG) and repr(BAD[what]) in text and "0 for the ridgeless" in text
    assert ("indefinite" in text) == (what in ("negative", "-inf"))


def test_a_grid_names_its_first_bad_entry():
    np.testing.assert_array_equal(check_ridges(np.array([[0.0, 2.0]])), [0.0, 2.0])
    np.testing.assert_array_equal(check_ridges((np.float32(0.5), 1)), [0.5, 1.0])
    with pytest.raises(InvalidRidgeError, match=r"grid\[2\] must be a finite real number >= 0, got nan"):
        check_ridges(np.array([0.1, 1.0, np.nan, -1.0]), "grid")
    with pytest.raises(InvalidRidgeError, match=r"grid\[1\] .* got bool True"):
        check_ridges([0.1, True], "grid")  # not 1.0: each entry of a list is checked
    with pytest.raises(InvalidRidgeError, match="at least one ridge"):
        check_ridges([], "grid")


@pytest.mark.parametrize("value, key", [(float("nan"), "solver.ridge"), (-1.0, "solver.ridge"),
                                        (float("inf"), "solver.ridge")])
def test_the_job_config_wraps_it_naming_the_key(value, key):
    from ntkscale._config import ConfigError
    from ntkscale.job.config import parse_job

    doc = {"data": {"source": "sklearn", "name": "digits"}, "cluster": {"kind": "sync"},
           "solver": {"ridge": value, "ridge_grid": [1e-3, value]}}
    with pytest.raises(ConfigError, match=f"'{key}' {MSG}"):
        parse_job(doc, environ={})
    doc["solver"] = {"ridge_grid": [1e-3, value]}
    with pytest.raises(ConfigError, match=rf"'solver.ridge_grid\[1\]' {MSG}"):
        parse_job(doc, environ={})


@pytest.mark.parametrize("what", ["nan", "inf", "negative", "bool", "numpy bool"])
def test_the_estimators_refuse_it_before_any_work(what):
    from ntkscale.estimators import NTKRegressor

    with pytest.raises(InvalidRidgeError, match=MSG):
        NTKRegressor(ridge=BAD[what]).fit(_A, Y)

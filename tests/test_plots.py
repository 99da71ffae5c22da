"""Figures: PNGs are written, the plotted data are the inputs, axes are log, bad input fails."""

import importlib
import importlib.util
import struct
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from ntkscale import plots  # noqa: E402
from ntkscale.operator import DenseGram  # noqa: E402
from ntkscale.plots import plot_dynamics, plot_learning_curves, plot_spectrum  # noqa: E402
from ntkscale.solvers.eigen import EigResult  # noqa: E402
from ntkscale.spectral import (EmpiricalSpectrum, PowerLawFit, empirical_spectrum,  # noqa: E402
                               fit_power_law, gradient_flow, learning_curve, learning_curves,
                               mse_loss)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path) -> tuple[int, int]:
    """(width, height) from the IHDR chunk of a PNG, after checking the signature."""
    data = path.read_bytes()
    assert len(data) > 100 and data[:8] == PNG_MAGIC and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def line(ax, label):
    found = [ln for ln in ax.get_lines() if ln.get_label() == label]
    assert len(found) == 1, [ln.get_label() for ln in ax.get_lines()]
    return found[0]


def xy(ax, label) -> tuple[np.ndarray, np.ndarray]:
    d = line(ax, label).get_xydata()
    return d[:, 0], d[:, 1]


# --------------------------------------------------------------------------- spectrum
@pytest.fixture
def power_law_spectrum():
    """n = 80 Gram with eigenvalues n·k^-2 for k <= 50 and 30 exact zeros: eta = k^-2."""
    n, rng = 80, np.random.default_rng(0)
    V, _ = np.linalg.qr(rng.standard_normal((n, n)))
    s = np.zeros(n)
    s[:50] = n * np.arange(1, 51) ** -2.0
    return s, V, rng.standard_normal((n, 2))


def test_spectrum_from_empirical_spectrum(tmp_path, power_law_spectrum):
    s, V, y = power_law_spectrum
    sp = empirical_spectrum(s, V, y)
    fit = fit_power_law(sp.eta, 2, 40)
    assert fit.exponent == pytest.approx(2.0, rel=1e-10)  # exact power law
    fig = plot_spectrum(sp, fit=fit, path=tmp_path / "spectrum.png")
    assert png_size(tmp_path / "spectrum.png") == (2 * 576, 432)  # 2 x (4.8 x 3.6 in) at 120 dpi
    ax, ax2 = fig.axes
    assert (ax.get_xscale(), ax.get_yscale(), ax2.get_xscale()) == ("log", "log", "log")
    assert ax.get_xlabel() == "rank k" and "K/n" in ax.get_ylabel()
    k, e = xy(ax, "eigenvalues")  # the 30 zero modes are left out of the log plot
    np.testing.assert_array_equal(k, np.arange(1, 51))
    np.testing.assert_array_equal(e, sp.eta[:50])
    fk, fe = xy(ax, next(ln.get_label() for ln in ax.get_lines() if "fit" in ln.get_label()))
    np.testing.assert_array_equal(fk, np.arange(2, 41))
    np.testing.assert_allclose(fe, fit.prefactor * fk ** -fit.exponent, rtol=1e-14)
    ck, cp = xy(ax2, "cumulative target power")
    np.testing.assert_array_equal(ck, np.arange(1, 81))
    np.testing.assert_array_equal(cp, sp.cumulative_power)


def test_spectrum_from_eigresult_and_array(tmp_path, power_law_spectrum):
    s, V, _ = power_law_spectrum
    er = EigResult(evals=s[:20], evecs=V[:, :20], passes=1, error_estimate=None,
                   residual_norms=None)
    fig = plot_spectrum(er, path=tmp_path / "eig.png")
    assert png_size(tmp_path / "eig.png") == (576, 432) and len(fig.axes) == 1
    np.testing.assert_allclose(xy(fig.axes[0], "eigenvalues")[1], s[:20] / 80, rtol=1e-15)
    fig = plot_spectrum(np.array([0.25, 1.0, -1e-18, 0.5]))  # plain array: as given, sorted
    k, e = xy(fig.axes[0], "eigenvalues")
    np.testing.assert_array_equal(k, [1, 2, 3])
    np.testing.assert_array_equal(e, [1.0, 0.5, 0.25])


def test_spectrum_fit_of_other_eigenvalues_warns(power_law_spectrum):
    s, V, y = power_law_spectrum
    sp = empirical_spectrum(s, V, y)
    with pytest.warns(UserWarning, match="fit the same eigenvalues"):
        plot_spectrum(sp, fit=fit_power_law(s, 1, 40))  # fitted on K, plotted K/n: 80x off


@pytest.mark.parametrize("arg, kw, exc, match", [
    ([1.0, np.nan], {}, ValueError, "non-finite"),
    (np.ones((3, 3)), {}, ValueError, "1-d"),
    (np.zeros(4), {}, ValueError, "no positive eigenvalue"),
    ([1.0, 0.5], {"fit": (2.0, 1.0)}, TypeError, "PowerLawFit"),
    (PowerLawFit(2.0, 1.0, 1, 5, 1.0), {}, TypeError, "fit="),
    (EmpiricalSpectrum(np.array([0.1, 1.0]), np.ones(2), np.ones((2, 1)), np.array([.5, 1.])),
     {}, ValueError, "descending"),
])
def test_spectrum_bad_input(arg, kw, exc, match):
    with pytest.raises(exc, match=match):
        plot_spectrum(arg, **kw)


# --------------------------------------------------------------------------- learning curves
@pytest.fixture(scope="module")
def curves():
    """Small RBF pool (M = 150), 6 trials: an experiment with spread and its theory."""
    X = np.random.default_rng(1).standard_normal((150, 3))
    K = np.exp(-0.5 * np.sum((X[:, None] - X[None]) ** 2, axis=-1))
    return K, X[:, 0], learning_curves(DenseGram(K), X[:, 0], [5, 10, 20, 40], ridge=1e-2,
                                       noise_std=0.1, n_trials=6, seed=0)


def band_edges(ax) -> np.ndarray:
    (poly,) = ax.collections
    return poly.get_paths()[0].vertices


@pytest.mark.parametrize("band", ["std", "sem", "quantile"])
def test_learning_curves(tmp_path, curves, band):
    _, _, lc = curves
    fig = plot_learning_curves(lc, path=tmp_path / "lc.png", band=band, quantiles=(0.25, 0.75))
    assert png_size(tmp_path / "lc.png") == (576, 432)
    (ax,) = fig.axes
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")
    assert "p" in ax.get_xlabel()
    p, m = xy(ax, "experiment")
    np.testing.assert_array_equal(p, [5, 10, 20, 40])
    np.testing.assert_array_equal(m, lc.experiment_mean)
    np.testing.assert_array_equal(xy(ax, "theory")[1], lc.theory)
    err = lc.experiment.errors
    lo, hi = {"std": (m - err.std(1, ddof=1), m + err.std(1, ddof=1)),
              "sem": (m - lc.experiment_sem, m + lc.experiment_sem),
              "quantile": tuple(np.quantile(err, [0.25, 0.75], axis=1))}[band]
    v = band_edges(ax)
    for x, a, b in zip(p, lo, hi):  # each p contributes its lower and upper edge
        ys = v[v[:, 0] == x, 1]
        assert np.any(np.isclose(ys, a, rtol=1e-12)) and np.any(np.isclose(ys, b, rtol=1e-12))


def test_learning_curves_overlay_and_parts(curves):
    _, _, lc = curves
    th = learning_curve(np.full(10, 0.1), np.full(10, 0.1), [5, 10, 20], 0.0, 0.1)
    eg = th.Eg  # white spectrum, ridgeless, noisy: inf at p = N = 10 (drawn as nan)
    assert np.isinf(eg[1]) and np.all(np.isfinite(eg[[0, 2]]))
    fig = plot_learning_curves([lc, lc.experiment, th], labels=["a", "b", "c"], band="none")
    (ax,) = fig.axes
    assert {ln.get_label() for ln in ax.get_lines()} == {"experiment a", "theory a",
                                                         "experiment b", "theory c"}
    assert not ax.collections  # band='none'
    np.testing.assert_array_equal(xy(ax, "theory c")[0], [5, 10, 20])
    np.testing.assert_array_equal(xy(ax, "theory c")[1], np.where(np.isfinite(eg), eg, np.nan))
    assert line(ax, "theory a").get_color() != line(ax, "experiment b").get_color()
    fig = plot_learning_curves([lc, lc])  # default labels: the ridge
    assert "experiment λ = 0.01" in {ln.get_label() for ln in fig.axes[0].get_lines()}


@pytest.mark.parametrize("kw, exc, match", [
    ({"band": "iqr"}, ValueError, "band must be one of"),
    ({"quantiles": (0.9, 0.1)}, ValueError, "quantiles"),
    ({"labels": ["a", "b"]}, ValueError, "labels has 2 entries"),
])
def test_learning_curves_bad_input(curves, kw, exc, match):
    with pytest.raises(exc, match=match):
        plot_learning_curves(curves[2], **kw)
    with pytest.raises(TypeError, match="LearningCurves"):
        plot_learning_curves({"p": [1, 2]})
    with pytest.raises(TypeError, match="non-empty list"):
        plot_learning_curves([])


# --------------------------------------------------------------------------- dynamics
@pytest.fixture(scope="module")
def dynamics():
    """Joint RBF kernel of 30 train and 10 test points; gradient flow at 0, 1e-2..1e3, inf."""
    X = np.random.default_rng(2).standard_normal((40, 2))
    J = np.exp(-0.5 * np.sum((X[:, None] - X[None]) ** 2, axis=-1))
    y, y_test = np.sin(X[:30, 0]), np.sin(X[30:, 0])
    t = np.concatenate([[0.0], np.geomspace(1e-2, 1e3, 12), [np.inf]])

    def flow(scale):
        w, V = np.linalg.eigh(scale * J[:30, :30])
        return gradient_flow(w, V, y, t, k_test_train=scale * J[30:, :30])
    return flow(1.0), flow(0.7), y_test, t


def test_dynamics(tmp_path, dynamics):
    net, theory, y_test, t = dynamics
    fig = plot_dynamics(net, path=tmp_path / "dyn.png", theory=theory, y_test=y_test,
                        labels=("network", "theory"))
    assert png_size(tmp_path / "dyn.png") == (576, 432)
    (ax,) = fig.axes
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")
    for pred, name in ((net, "network"), (theory, "theory")):
        tt, loss = xy(ax, f"train loss ({name})")
        np.testing.assert_array_equal(tt, t[1:-1])  # t = 0 and t = inf are not on the log axis
        np.testing.assert_array_equal(loss, pred.train_loss[1:-1])
        test_loss = mse_loss(pred.test, y_test)  # independent: the library's loss, shape (T,)
        np.testing.assert_allclose(xy(ax, f"test loss ({name})")[1], test_loss[1:-1], rtol=1e-14)
        inf_line = line(ax, f"test loss ({name}) (t = ∞)").get_ydata()
        np.testing.assert_allclose(inf_line, test_loss[-1], rtol=1e-14)
        assert pred.train_loss[-1] == 0.0  # interpolation: no place on the log axis, left out
        assert f"train loss ({name}) (t = ∞)" not in [ln.get_label() for ln in ax.get_lines()]
    assert line(ax, "train loss (theory)").get_linestyle() == "--"
    assert [t.get_text() for t in ax.get_legend().get_texts()][-1] == "t = ∞"  # one entry
    fig = plot_dynamics(net, logy=False)  # train loss only, default label
    assert fig.axes[0].get_yscale() == "linear"
    assert {ln.get_label() for ln in fig.axes[0].get_lines()} == {"train loss",
                                                                  "train loss (t = ∞)"}
    np.testing.assert_array_equal(line(fig.axes[0], "train loss (t = ∞)").get_ydata(), [0, 0])


def test_dynamics_bad_input(dynamics):
    net, _, y_test, _ = dynamics
    w, V = np.linalg.eigh(np.eye(3))
    no_test = gradient_flow(w, V, np.ones(3), [0.0, 1.0])
    with pytest.raises(ValueError, match="no test outputs"):
        plot_dynamics(no_test, y_test=np.ones(2))
    with pytest.raises(ValueError, match="y_test has 9 values"):
        plot_dynamics(net, y_test=y_test[:9])
    with pytest.raises(ValueError, match="no time 0 < t < inf"):
        plot_dynamics(gradient_flow(w, V, np.ones(3), [0.0, np.inf]))
    with pytest.raises(TypeError, match="Predictions"):
        plot_dynamics({"t": [1.0]})
    with pytest.raises(TypeError, match="theory must be a Predictions"):
        plot_dynamics(net, theory=np.ones(3))


# --------------------------------------------------------------------------- packaging
def test_missing_matplotlib_names_the_extra(monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)  # a None entry makes the import fail
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"pip install 'ntkscale\[plots\]'"):
        plot_spectrum([1.0, 0.5])


ISOLATED = """
import sys
import ntkscale.plots as plots, ntkscale.spectral as spectral
assert "matplotlib" not in sys.modules  # importing the packages does not import matplotlib
assert callable(spectral.double_descent) and callable(plots.plot_double_descent)
plots.plot_spectrum([1.0, 0.5])
assert "matplotlib.pyplot" not in sys.modules  # figures never go through pyplot
"""


def test_no_pyplot():
    """In a fresh interpreter: the packages import without matplotlib, ``double_descent`` is
    the function (not its module), matplotlib is imported only to plot, pyplot never."""
    subprocess.run([sys.executable, "-c", ISOLATED], check=True, timeout=120)


def test_double_descent_exports_are_the_functions():
    import ntkscale.spectral as spectral
    if importlib.util.find_spec("ntkscale.spectral.double_descent") is not None:
        from ntkscale.spectral.double_descent import DoubleDescent, double_descent
        assert spectral.double_descent is double_descent  # not the submodule of the same name
        assert spectral.DoubleDescent is DoubleDescent and callable(spectral.double_descent)
    if importlib.util.find_spec("ntkscale.plots.double_descent") is not None:
        assert callable(plots.plot_double_descent)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        spectral.nope
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        plots.nope

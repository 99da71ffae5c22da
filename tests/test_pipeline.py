"""ntkscale.pipeline: the job's gram / fit / predict stages and the estimator are one pipeline,
so on the same config they give the same numbers."""

import numpy as np
import pytest

from ntkscale import pipeline
from ntkscale.estimators import NTKClassifier, NTKRegressor
from ntkscale.job import parse_job
from ntkscale.job.context import JobContext
from ntkscale.job.model import build_arch
from ntkscale.job.run import run_stages

CASES = {
    # regression on the sphere, float64 store, a given relative ridge, ragged edge tiles
    "sphere": {"data": {"source": "sphere", "d": 8, "n": 260, "n_train": 200, "n_test": 60},
               "model": {"depth": 2, "activation": "erf"},
               "kernel": {"tile": 96, "dtype": "float64", "store_nngp": True},
               "solver": {"ridge": 1e-3}},
    # digits (centered one-hot targets), float32 store, the ridge chosen by GCV
    "digits": {"data": {"source": "sklearn", "name": "digits", "n_train": 300, "n_test": 100},
               "model": {"depth": 2},
               "kernel": {"tile": 128},
               "solver": {"ridge": "gcv", "ridge_grid": [1e-4, 1e-3, 1e-2, 1e-1]}},
}


def _job(tmp_path, case):
    doc = {"job": {"name": case, "out": str(tmp_path / "run"), "stages": ["gram", "fit", "predict"]},
           "cluster": {"kind": "sync"}, **CASES[case]}
    return parse_job(doc, environ={})


def _estimator(cfg):
    """An NTKRegressor with the job's architecture, kernel, ridge, solver and store."""
    s, k = cfg.solver, cfg.kernel
    return NTKRegressor(build_arch(cfg.model), kernel=k["kind"], ridge=s["ridge"],
                        relative_ridge=s["relative_ridge"], solver=s["method"], store=cfg.store,
                        tile=k["tile"] or None, client="sync", store_dtype=k["dtype"],
                        store_nngp=k["store_nngp"], tol=s["tol"], ridge_grid=s["ridge_grid"] or None)


@pytest.mark.parametrize("case", sorted(CASES))
def test_job_and_estimator_give_identical_predictions(tmp_path, case):
    cfg = _job(tmp_path, case)
    metrics = run_stages(cfg, ["gram", "fit", "predict"], report=False)
    job_fit = np.load(tmp_path / "run" / "fit.npz")
    job_pred = np.load(tmp_path / "run" / "predictions.npz")["prediction"]

    ctx = JobContext(cfg)  # the same data, loaded the way the stages load it
    Y, _ = ctx.targets()
    X, Xt = ctx.data.X_train, ctx.data.X_test
    build_id = pipeline.check_store(cfg.store, X, ctx.arch)
    est = _estimator(cfg).fit(X, Y)
    assert pipeline.check_store(cfg.store, X, ctx.arch) == build_id  # the job's store, reused

    assert est.ridge_ == float(job_fit["ridge"]) == metrics["stages"]["fit"]["ridge"]
    np.testing.assert_allclose(est.alpha_, job_fit["alpha"], rtol=1e-12, atol=0)
    pred = est.predict(Xt)
    assert pred.shape == job_pred.shape == (len(Xt), Y.shape[1])
    np.testing.assert_allclose(pred, job_pred, rtol=1e-12, atol=1e-12 * np.abs(job_pred).max())
    if case == "sphere":
        # the float64 store agrees with the in-memory Gram to rounding
        mem = NTKRegressor(build_arch(cfg.model), ridge=est.ridge_).fit(X, Y)
        np.testing.assert_allclose(mem.predict(Xt), job_pred, rtol=1e-8, atol=1e-10)
        # and the NTK-GP posterior std on the store needs the stored NNGP Gram (store_nngp)
        _, std = est.predict(Xt[:5], return_std=True)
        _, std_mem = mem.predict(Xt[:5], return_std=True)
        np.testing.assert_allclose(std, std_mem, rtol=1e-6)
    else:
        assert metrics["stages"]["fit"]["ridge_rule"] == "gcv"
        # the same choice as the job's GCV, and one of the grid's relative ridges
        assert est.ridge_ == pytest.approx(metrics["stages"]["fit"]["ridge"], rel=1e-12)


@pytest.mark.parametrize("name, rule, n_test", [("iris", "loo", 50), ("wine", "gcv", 58)])
def test_classifier_and_job_give_identical_scores_and_ridge(tmp_path, name, rule, n_test):
    """Issue 24, defect 8: NTKClassifier and the job encode classes by one rule (centred
    one-hot, pipeline.encode_classes), so the ridge that GCV / LOO choose and the decision
    scores are the same. (Plain one-hot in the classifier gave scores 0.34 away here.)"""
    grid = list(np.geomspace(1e-4, 10, 21))  # LOO on iris picks an inner point (0.18 x mean diag)
    doc = {"job": {"name": name, "out": str(tmp_path / "run"), "stages": ["gram", "fit", "predict"]},
           "cluster": {"kind": "sync"},
           "data": {"source": "sklearn", "name": name, "n_test": n_test, "preprocess": "sphere"},
           "model": {"depth": 2}, "kernel": {"dtype": "float64", "tile": 64},
           "solver": {"ridge": rule, "ridge_grid": grid}}
    cfg = parse_job(doc, environ={})
    metrics = run_stages(cfg, ["gram", "fit", "predict"], report=False)
    job_scores = np.load(tmp_path / "run" / "predictions.npz")["prediction"]
    d = JobContext(cfg).data

    for store in (cfg.store, None):  # on the job's store, and in memory
        clf = NTKClassifier(build_arch(cfg.model), ridge=rule, relative_ridge=True, store=store,
                            client="sync", store_dtype="float64", ridge_grid=grid).fit(d.X_train, d.y_train)
        scores = clf.decision_function(d.X_test)
        assert scores.shape == job_scores.shape == (n_test, 3)
        assert clf.ridge_ == pytest.approx(metrics["stages"]["fit"]["ridge"], rel=1e-12)
        assert np.max(np.abs(scores - job_scores)) < 1e-10
        assert np.mean(clf.predict(d.X_test) == d.y_test) == metrics["stages"]["predict"]["test_accuracy"]
    np.testing.assert_allclose(job_scores.sum(axis=1), 0, atol=1e-12)  # centred: rows sum to 0


def test_encode_classes_is_centred_one_hot():
    classes = np.array([3, 5, 9])
    Y = pipeline.encode_classes(np.array([5, 3, 9, 7]), classes)  # 7: not a training class
    np.testing.assert_array_equal(Y * 3, [[-1, 2, -1], [2, -1, -1], [-1, -1, 2], [-1, -1, -1]])
    np.testing.assert_array_equal(pipeline.decode_classes(Y[:3], classes), [5, 3, 9])
    np.testing.assert_array_equal(pipeline.encode_targets(np.array([1.5, 2.0])), [[1.5], [2.0]])


def test_stored_kinds_is_one_rule():
    assert pipeline.stored_kinds("nngp") == pipeline.stored_kinds("nngp", True) == ("nngp",)
    assert pipeline.stored_kinds("ntk") == ("ntk",)
    assert pipeline.stored_kinds("ntk", True) == ("nngp", "ntk")
    with pytest.raises(ValueError, match="'ntk' or 'nngp'"):
        pipeline.stored_kinds("rbf")


def test_resolve_ridge_given_relative_and_chosen():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((30, 30))
    K = A @ A.T
    Y = rng.standard_normal((30, 2))
    from ntkscale.linop import DenseGram

    op = DenseGram(K)
    assert pipeline.resolve_ridge(op, Y, 0.5).ridge == 0.5
    rel = pipeline.resolve_ridge(op, Y, 0.5, relative=True)
    assert rel.ridge == pytest.approx(0.5 * np.trace(K) / 30, rel=1e-14)
    assert rel.record() == {"ridge_rule": "given"}
    sel = pipeline.resolve_ridge(op, Y, "loo", grid=[1e-3, 1e-2, 1e-1], relative=True)
    grid = np.array([1e-3, 1e-2, 1e-1]) * np.trace(K) / 30
    brute = [np.mean([np.sum((Y[i] - K[i, np.arange(30) != i] @ np.linalg.solve(
        K[np.ix_(np.arange(30) != i, np.arange(30) != i)] + lam * np.eye(29), Y[np.arange(30) != i])) ** 2)
        for i in range(30)]) for lam in grid]
    assert sel.rule == "loo" and sel.ridge == pytest.approx(grid[int(np.argmin(brute))], rel=1e-12)
    assert sel.record()["ridge_grid"].size == 3
    with pytest.raises(ValueError, match="'gcv' or 'loo'"):
        pipeline.resolve_ridge(op, Y, "aic")


def test_predict_needs_one_training_side():
    from ntkscale import stax

    arch = stax.serial(stax.Dense(8), stax.Relu(), stax.Dense(1))
    X = np.random.default_rng(1).standard_normal((6, 3))
    alpha = np.ones(6)
    with pytest.raises(ValueError, match="X_train .* or store"):
        pipeline.predict(arch, X, alpha)
    with pytest.raises(ValueError, match="build_id"):
        pipeline.predict(arch, X, alpha, store="somewhere")
    out = pipeline.predict(arch, X[:2], alpha, X_train=X)
    K = arch.kernel_fn(X[:2], X, "ntk", dtype=np.float64)
    np.testing.assert_allclose(out, K @ alpha, rtol=1e-13)

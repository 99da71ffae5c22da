"""The stages of a job. Each reads the run directory, does one step, records its metrics.

``gram`` → ``fit`` → ``predict``, and ``spectrum`` / ``curve`` / ``dynamics`` on the stored
train Gram. Stages after ``gram`` refuse a store that was built from other data
(:class:`ntkscale.storage.StoreMismatchError` via the fingerprints in the store).
Registered (config section, report line, planner inputs) in :mod:`ntkscale.job.builtin_stages`.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

import numpy as np

from ..errors import StaleFitError
from .context import JobContext
from .tail import needs_saved_eigs, quadrature_checks, tail_quadrature_stage

log = logging.getLogger("ntkscale.job")

__all__ = ["stage_gram", "stage_fit", "stage_predict", "stage_spectrum",
           "stage_curve", "stage_dynamics"]


def _build_id(ctx: JobContext) -> str:
    """The store's build id, after checking it holds this job's training inputs."""
    from ..pipeline import check_store

    return check_store(ctx.cfg.store, ctx.data.X_train, ctx.arch, build="run the 'gram' stage")


def stage_gram(ctx: JobContext) -> dict:
    """Build (or resume) the train Gram store on the cluster."""
    from ..pipeline import build_store, stored_kinds

    k = ctx.cfg.kernel
    rep = build_store(ctx.arch, ctx.data.X_train, ctx.cfg.store, stored_kinds(k["kind"], k["store_nngp"]),
                      tile=k["tile"] or None, dtype=np.dtype(k["dtype"]), client=ctx.client,
                      progress=ctx.progress, device=k["device"], repair=ctx.repair, overwrite=k["overwrite"])
    return {"store": ctx.cfg.store, "n": rep.shape[0], "tile": rep.tile, "tiles": rep.n_tiles,
            "computed": rep.computed, "resumed": rep.resumed, "kinds": list(rep.kinds),
            "repaired": [[name, list(index)] for name, index in rep.repaired],
            "device": k["device"],
            "build_seconds": rep.seconds, "bytes_on_disk": _du(ctx.cfg.store)}


def _absolute_ridge(ctx: JobContext, op: Any, Y: np.ndarray) -> tuple[float, dict]:
    """The [solver] section's ridge on ``op`` (pipeline.resolve_ridge) and its metrics."""
    from ..pipeline import resolve_ridge

    s = ctx.cfg.solver
    choice = resolve_ridge(op, Y, s["ridge"], relative=s["relative_ridge"], grid=s["ridge_grid"],
                           subsample=s["ridge_subsample"] or None, seed=ctx.cfg.job["seed"],
                           select=s["ridge_select"])
    return choice.ridge, choice.record()


def stage_fit(ctx: JobContext) -> dict:
    """Solve ``(K + λI) α = Y`` on the stored train Gram; writes ``fit.npz``."""
    from ..pipeline import decode_classes, fit

    build_id = _build_id(ctx)
    Y, classes = ctx.targets()
    s = ctx.cfg.solver
    op = ctx.operator(what="solve", every=10)
    lam, sel = _absolute_ridge(ctx, op, Y)
    f = fit(op, Y, lam, solver=s["method"], tol=s["tol"], maxiter=s["maxiter"],
            pcg_rank=s["pcg_rank"], jitter=s["jitter"], seed=ctx.cfg.job["seed"],
            preconditioner=s["preconditioner"])
    res, fitted = f.result, f.fitted(Y)
    out = {"ridge": lam, "ridge_relative": lam / float(np.mean(op.diag())), "method": res.method,
           "solver": f.solver, "auto": res.info.get("auto"),
           "relative_residual": res.residual, "iterations": res.iterations, "passes": res.passes,
           "converged": res.converged, "solve_seconds": res.seconds,
           "train_mse": float(np.mean(np.sum((fitted - Y) ** 2, axis=1))), **sel}
    pre = (res.info or {}).get("preconditioner")
    if pre:  # what PCG's preconditioner cost (kernel columns or passes) and how well it fits
        out.update({f"precond_{k}": v for k, v in pre.items()
                    if k in ("kind", "rank", "columns", "passes", "seconds", "residual_fraction")})
    if classes is not None:
        out["train_accuracy"] = float(np.mean(decode_classes(fitted, classes) == ctx.data.y_train))
    out.update(_regularization_metrics(res.info or {}))
    factor = (res.info or {}).get("factor_url")
    if factor:  # where the tiled Cholesky factor lives (kept for re-fits and predictions), and its phases
        out["factor_store"], out["factor_bytes"] = factor, _du(factor)
        fs = float(res.info.get("factor_seconds", 0.0))
        out.update(factor_seconds=fs, refine_seconds=max(0.0, res.seconds - fs),
                   factor_tiles_computed=res.info.get("factor_computed"), refine_history=list(res.history))
    np.savez(ctx.path("fit.npz"), alpha=f.alpha, ridge=lam, build_id=build_id,
             classes=classes if classes is not None else np.array([]),
             kind=ctx.cfg.kernel["kind"])
    return out


_REGULARIZATION_KEYS = ("regularized", "regularization", "near_singular", "jitter", "jitter_absolute",
                        "jitter_retries", "breakdown_pivot", "min_pivot_relative", "cond_lower_bound", "rank",
                        "eigenvalues_cut", "cutoff", "cutoff_relative", "min_eigenvalue",
                        "interpolation_residual", "mean_diag")


def _regularization_metrics(info: dict) -> dict:
    """What the solver added or cut to make the solve possible
    (:mod:`ntkscale.solvers.regularization`), as flat metrics."""
    return {k: info[k] for k in _REGULARIZATION_KEYS if k in info}


def _load_fit(ctx: JobContext, build_id: str) -> dict:
    return load_fit_file(ctx.cfg, build_id)


def load_fit_file(cfg: Any, build_id: str) -> dict:
    """``fit.npz`` of the run directory ``cfg.out``, checked against the store's ``build_id``
    and the job's kernel kind."""
    import os

    path = os.path.join(cfg.out, "fit.npz")
    try:
        f = dict(np.load(path, allow_pickle=False))
    except FileNotFoundError:
        raise FileNotFoundError(f"no fit in {cfg.out}; run the 'fit' stage first") from None
    if str(f["build_id"]) != build_id or str(f["kind"]) != cfg.kernel["kind"]:
        raise StaleFitError(f"{path} belongs to another Gram store or kernel kind; "
                           "run the 'fit' stage again")
    return f


def stage_predict(ctx: JobContext) -> dict:
    """Test predictions ``K(X*, X) α``, streamed tile by tile on the workers; writes
    ``predictions.npz`` (``prediction`` (m, C), ``target`` (m, C), ``row`` (m,): each test
    row's index in its source, :attr:`ntkscale.data.Dataset.test_index`)."""
    from ..pipeline import decode_classes, predict

    d = ctx.data
    if d.X_test is None or len(d.X_test) == 0:
        return {"skipped": "no test data ([data] n_test / test_fraction)"}
    build_id = _build_id(ctx)
    f = _load_fit(ctx, build_id)
    alpha = f["alpha"].reshape(f["alpha"].shape[0], -1)
    pred = predict(ctx.arch, np.asarray(d.X_test, np.float64), alpha, ctx.cfg.kernel["kind"],
                   store=ctx.cfg.store, build_id=build_id, runner=ctx.runner,
                   device=ctx.cfg.kernel["device"])
    out: dict = {"n_test": int(pred.shape[0])}
    classes = f["classes"] if f["classes"].size else None
    Yt = ctx.encode(d.y_test, classes)
    if classes is not None:
        out["test_accuracy"] = float(np.mean(decode_classes(pred, classes) == d.y_test))
    else:
        out["test_r2"] = float(1 - np.sum((pred - Yt) ** 2) / np.sum((Yt - Yt.mean(0)) ** 2))
    out["test_mse"] = float(np.mean(np.sum((pred - Yt) ** 2, axis=1)))
    np.savez(ctx.path("predictions.npz"), prediction=pred, target=Yt,
             row=np.asarray(d.test_index, np.int64))
    return out


def stage_spectrum(ctx: JobContext) -> dict:
    """Top-k eigenpairs (randomized), eigenvalues of K/n, power-law fit, target power."""
    from ..solvers import randomized_eigh
    from ..spectral import EmpiricalSpectrum, fit_power_law

    _build_id(ctx)
    sp = ctx.cfg.spectrum
    op = ctx.operator(what="eigensolver")
    n = op.shape[0]
    k = min(sp["k"], n - 1)
    er = randomized_eigh(op, k, power_iters=sp["power_iters"], seed=ctx.cfg.job["seed"])
    Y, _ = ctx.targets()
    eta = er.evals / n
    v2c = (er.evecs.T @ Y) ** 2 / n
    total = float(np.sum(Y ** 2) / n)
    v2 = v2c.sum(axis=1)
    spec = EmpiricalSpectrum(eta=eta, v2=v2, v2_per_output=v2c,
                             cumulative_power=np.cumsum(v2) / total if total > 0 else 0 * v2)
    kmin, kmax = sp["fit_window"]
    kmin, kmax = max(1, kmin), min(k, kmax or max(kmin + 2, k // 2))  # the window within the k computed
    fit, why = None, ""
    try:  # a diagnostic: too few ranks or a zero tail (duplicate rows) skip it, with the reason
        fit = fit_power_law(eta, kmin=kmin, kmax=kmax)
    except ValueError as e:
        why = (f"power-law fit skipped on ranks [{kmin}, {kmax}] of k = {k} eigenvalues (n = {n}): {e}; "
               "set 'spectrum.fit_window' within the nonzero eigenvalues")
        log.warning("%s", why)
    tail: dict = {}
    quad = None
    if sp["tail_steps"] and needs_saved_eigs(n) and k < n:
        quad, tail = tail_quadrature_stage(ctx, er.evecs, Y, eta, v2c, float(op.diag().sum()) / n - float(eta.sum()),
                                      _check_ridge(ctx, op))
    np.savez(ctx.path("spectrum.npz"), evals=er.evals, evecs=er.evecs, trace=float(op.diag().sum()),
             **(quad.to_arrays() if quad is not None else {}))
    _figure(ctx, "spectrum", lambda p: _plots().plot_spectrum(spec, fit=fit, path=p))
    return {"k": k, "passes": er.passes, "error_estimate": er.error_estimate, **tail,
            "eta_top": eta[:10], "eta_k": float(eta[-1]),
            "power_law_exponent": fit.exponent if fit else None,
            "power_law_window": [fit.kmin, fit.kmax] if fit else [kmin, kmax],
            "power_law_r2": fit.r2 if fit else None, **({"power_law_skipped": why} if why else {}),
            "target_power_in_top_k": float(spec.cumulative_power[-1]),
            "trace_fraction_in_top_k": float(er.evals.sum() / op.diag().sum())}


def _check_ridge(ctx: JobContext, op: Any) -> float:
    """The ridge the quadrature's convergence is checked at: the fit's, else a numeric
    ``[solver] ridge``, else (a selection rule not run yet) 1e-3 × mean diag."""
    try:
        return float(_load_fit(ctx, _build_id(ctx))["ridge"])
    except (FileNotFoundError, StaleFitError):
        r = ctx.cfg.solver["ridge"]
        scale = float(np.mean(op.diag()))
        return float(r) * (scale if ctx.cfg.solver["relative_ridge"] else 1.0) if not isinstance(r, str) \
            else 1e-3 * scale


#: p / k up to which the pool theory from the top k pairs + power-law tail stayed within 5 % of
#: the full-spectrum theory (Fashion-MNIST NTK pools of 4000 and 12 000; beyond, it runs low:
#: benchmarks/RESULTS.md §00000g.1)
TAIL_TRUST = 15


def stage_curve(ctx: JobContext) -> dict:
    """Empirical learning curve from sub-blocks of the stored Gram next to the theory."""
    from ..spectral import learning_curves

    build_id = _build_id(ctx)
    c = ctx.cfg.curve
    op = ctx.operator()
    n = op.shape[0]
    lo = max(1, min(32, n // 8))  # small pools (n < 16) start at one training point
    p = np.array(c["p"] or np.unique(np.geomspace(lo, max(lo, n // 2), 8).astype(int)))
    if p.max() >= n:
        from .._config import ConfigError

        raise ConfigError(f"'curve.p' has sizes up to {p.max()} but the pool has {n} samples; "
                          "use sizes below n (the rest are the held-out test points)")
    n_test = c["n_test"] or min(2000, n - int(p.max()))
    try:
        lam = float(_load_fit(ctx, build_id)["ridge"])
    except FileNotFoundError:
        lam, _ = _absolute_ridge(ctx, op, ctx.targets()[0])
    eigs, quad = _saved_eigs(ctx, n)
    tail = c["tail"]
    if tail == "auto":
        tail = "quadrature" if quad is not None else "powerlaw"
    elif tail == "quadrature" and eigs is not None and quad is None:
        from .._config import ConfigError

        raise ConfigError("'curve.tail = \"quadrature\"' needs the spectrum stage's tail quadrature, "
                          "which spectrum.npz lacks: run 'spectrum' again with 'spectrum.tail_steps' > 0, "
                          "or use tail = \"powerlaw\"")
    Y, _ = ctx.targets()
    lc = learning_curves(op, Y, p, ridge=lam, noise_std=c["noise_std"], n_trials=c["trials"],
                         n_test=n_test, seed=ctx.cfg.job["seed"], eigs=eigs, tail=tail, quadrature=quad)
    _figure(ctx, "learning_curve", lambda path: _plots().plot_learning_curves(lc, path=path))
    conv = quadrature_checks(lc, eigs, Y, quad, lam, c["noise_std"], float(op.diag().sum())) \
        if tail == "quadrature" and eigs is not None else {}
    return {"p": lc.p, "experiment_mean": lc.experiment_mean, "experiment_sem": lc.experiment_sem, **conv,
            "theory": lc.theory, "relative_deviation": lc.relative_deviation, "ridge": lam,
            "n_test": n_test, "trials": c["trials"],
            "theory_from": (f"top-{eigs.evals.size} eigenpairs + {tail} tail" if eigs is not None
                            else "dense eigh"),
            **({"tail_trusted_to_p": TAIL_TRUST * int(eigs.evals.size)}
               if eigs is not None and tail == "powerlaw" else {})}


def _saved_eigs(ctx: JobContext, n: int) -> tuple[Any, Any]:
    """Eigenpairs and tail quadrature (None if not saved) from the spectrum stage when the
    Gram is too big for a dense eigh; (None, None) otherwise."""
    if not needs_saved_eigs(n):
        return None, None
    try:
        from ..solvers.eigen import EigResult
        from ..spectral.quadrature import TailQuadrature

        s = np.load(ctx.path("spectrum.npz"))
        return (EigResult(evals=s["evals"], evecs=s["evecs"], passes=0, error_estimate=None,
                          residual_norms=None, error_bounds=None, method="randomized"),
                TailQuadrature.from_arrays(s))
    except FileNotFoundError:
        raise FileNotFoundError("the learning-curve theory at this n needs the 'spectrum' stage's "
                                "eigenpairs; run 'spectrum' first") from None


def stage_dynamics(ctx: JobContext) -> dict:
    """Gradient-flow (or GD) train/test predictions of the linearized infinite-width network
    from f0 = 0 (the NTK-GP mean over initializations), by Lanczos on the stored Gram."""
    from ..pipeline import predict
    from ..solvers.dynamics import gradient_descent_op, gradient_flow_op

    build_id = _build_id(ctx)
    dyn = ctx.cfg.dynamics
    kind = ctx.cfg.kernel["kind"]
    op = ctx.operator(what="dynamics", every=10)
    Y, classes = ctx.targets()
    N = Y.size
    trace = float(np.sum(op.diag()))  # >= λmax: the default grid starts before any mode moves
    t = np.array(dyn["t"] or np.geomspace(1e-2, 1e6, 30) * N / trace)
    d = ctx.data
    cross: Callable | None = None
    if d.X_test is not None and len(d.X_test):
        Xt = np.asarray(d.X_test, np.float64)

        def _cross(V: np.ndarray) -> np.ndarray:  # K(X*, X) V streamed on the workers
            return predict(ctx.arch, Xt, V, kind, store=ctx.cfg.store, build_id=build_id,
                           runner=ctx.runner, device=ctx.cfg.kernel["device"])
        cross = _cross
    if dyn["learning_rate"] > 0:
        steps = np.unique(np.round(t / dyn["learning_rate"]).astype(int))
        pr = gradient_descent_op(op, Y, dyn["learning_rate"], steps, k_test_train=cross)
    else:
        pr = gradient_flow_op(op, Y, t, k_test_train=cross)
    out = {"t": pr.t, "train_loss": pr.train_loss, "passes": op.passes}
    Yt = None
    if pr.test is not None:
        Yt = ctx.encode(d.y_test, classes)
        test = pr.test.reshape(pr.t.size, -1, Y.shape[1])
        out["test_loss"] = 0.5 * np.mean((test - Yt[None]) ** 2, axis=(1, 2))
        if classes is not None:
            out["test_accuracy"] = np.mean(classes[np.argmax(test, 2)] == d.y_test[None], axis=1)
    _figure(ctx, "dynamics", lambda path: _plots().plot_dynamics(
        pr, path=path, y_test=None if Yt is None else Yt.reshape(pr.test.shape[1:])))
    return out


def _plots() -> Any:
    from .. import plots

    return plots


def _figure(ctx: JobContext, name: str, draw: Callable[[str], Any]) -> None:
    import os

    path = ctx.path("figures", f"{name}.png")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    t = time.perf_counter()
    try:
        draw(path)
    except ImportError as e:
        log.warning("figure %s skipped: %s", name, e)
        return
    ctx.metrics.setdefault("figures", {})[name] = path
    log.info("figure %s (%.1f s)", path, time.perf_counter() - t)


def _du(url: str) -> int:
    """Bytes under a local store directory (0 for remote stores)."""
    import os

    if "://" in url and not url.startswith("file://"):
        return 0
    root = url[7:] if url.startswith("file://") else url
    return sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(root) for f in fs)

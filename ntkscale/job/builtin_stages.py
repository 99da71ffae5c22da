"""The built-in stages' registrations: config section, report line and planner inputs of
each function in :mod:`ntkscale.job.stages` (the registry: :mod:`ntkscale.job.registry`).

Section schemas (defaults shown)::

    [spectrum]
    enabled = true
    k = 200                       # top eigenpairs (randomized Nyström + power steps)
    power_iters = 2
    fit_window = [2, 0]           # power-law fit ranks [kmin, kmax] (0: k // 2)
    tail_steps = 20               # Lanczos quadrature of the spectrum past the top k: extra
    tail_max_steps = 100          # passes (C + probes columns) from tail_steps until the theory
    tail_tol = 0.005              # moves < tail_tol over 10 steps; only where n > 12 000; 0: off
    tail_probes = 8

    [curve]
    enabled = true
    p = []                        # training sizes (default: 8 log-spaced sizes up to n/2)
    trials = 5
    n_test = 0                    # held-out pool points per trial (0: n - max p, at most 2000)
    noise_std = 0.0
    tail = "auto"                 # theory past the spectrum stage's k pairs (n > dense limit):
                                  # quadrature (the spectrum stage's Lanczos quadrature; auto
                                  # when saved) | powerlaw (ntkscale.spectral.tail) | ridge

    [dynamics]
    enabled = false
    t = []                        # times (default: 30 log-spaced, 1e-2 .. 1e6 x N/λmax)
    learning_rate = 0.0           # > 0: discrete gradient descent, steps = t / learning_rate
                                  # (Lanczos on the stored Gram: no eigendecomposition)
"""

from __future__ import annotations

from typing import Any, Mapping

from .._config import ConfigError, check_keys, get
from .config import JobConfig
from .registry import PlanSizes, Stage, register
from .report import format_number as _f
from .stages import stage_curve, stage_dynamics, stage_fit, stage_gram, stage_predict, stage_spectrum
from .tail import needs_saved_eigs

__all__: list[str] = []


# ---------------------------------------------------------------- section schemas
def _spectrum(t: Mapping[str, Any]) -> dict:
    check_keys(t, ("enabled", "k", "power_iters", "fit_window", "tail_steps", "tail_max_steps", "tail_tol",
                   "tail_probes"), "spectrum")
    win = get(t, "fit_window", list, [2, 0], path="spectrum")
    if len(win) != 2 or any(not isinstance(w, int) or isinstance(w, bool) or w < 0 for w in win):
        raise ConfigError("'spectrum.fit_window' must be two integers [kmin, kmax] (kmax 0: k // 2)")
    return {"enabled": get(t, "enabled", bool, True, path="spectrum"),
            "k": get(t, "k", int, 200, path="spectrum", min=2),
            "power_iters": get(t, "power_iters", int, 2, path="spectrum", min=0, max=20),
            "fit_window": list(win),
            # Lanczos quadrature of the spectrum past the top k (ntkscale.spectral.quadrature):
            # steps = extra passes with C + probes columns, from tail_steps until the theory
            # moves < tail_tol over 10 steps (at most tail_max_steps); only where the curve and
            # forecast stages use the top-k pairs (n > min(dense limit, 12 000)); 0: off
            "tail_steps": get(t, "tail_steps", int, 20, path="spectrum", min=0, max=1000),
            "tail_max_steps": get(t, "tail_max_steps", int, 100, path="spectrum", min=1, max=1000),
            "tail_tol": get(t, "tail_tol", float, 0.005, path="spectrum", min=0),
            "tail_probes": get(t, "tail_probes", int, 8, path="spectrum", min=1, max=256)}


def _positive_list(t: Mapping[str, Any], key: str, path: str) -> list:
    vals = get(t, key, list, [], path=path)
    if any(not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0 for v in vals):
        raise ConfigError(f"'{path}.{key}' must be a list of positive numbers")
    return vals


def _curve(t: Mapping[str, Any]) -> dict:
    check_keys(t, ("enabled", "p", "trials", "n_test", "noise_std", "tail"), "curve")
    p = _positive_list(t, "p", "curve")
    if any(int(v) != v for v in p):
        raise ConfigError("'curve.p' must be a list of integers (training-set sizes)")
    return {"enabled": get(t, "enabled", bool, True, path="curve"), "p": [int(v) for v in p],
            "trials": get(t, "trials", int, 5, path="curve", min=2),
            "n_test": get(t, "n_test", int, 0, path="curve", min=0),
            "noise_std": get(t, "noise_std", float, 0.0, path="curve", min=0),
            # theory from a partial spectrum (n above the dense limit): the tail past the
            # computed pairs by the spectrum stage's Lanczos quadrature (auto: when saved),
            # as power laws (ntkscale.spectral.tail) or as one extra ridge
            "tail": get(t, "tail", str, "auto", path="curve",
                        choices=("auto", "quadrature", "powerlaw", "ridge"))}


def _dynamics(t: Mapping[str, Any]) -> dict:
    check_keys(t, ("enabled", "t", "learning_rate"), "dynamics")
    return {"enabled": get(t, "enabled", bool, False, path="dynamics"),
            "t": [float(v) for v in _positive_list(t, "t", "dynamics")],
            "learning_rate": get(t, "learning_rate", float, 0.0, path="dynamics", min=0)}


# ---------------------------------------------------------------- report lines
def _gram_line(v: dict) -> str:
    return (f"{v['n']}×{v['n']} {'+'.join(v['kinds'])}, tile {v['tile']}, {v['tiles']} tiles "
            f"({v['computed']} computed now), {v['bytes_on_disk'] / 2**30:.2f} GiB on disk")


def _fit_line(v: dict) -> str:
    s = (f"{v['method']}, ridge {_f(v['ridge'])} ({_f(v['ridge_relative'], '.2g')} × mean diag, "
         f"{v.get('ridge_rule')}), residual {_f(v['relative_residual'], '.2g')}, "
         f"{v['passes']} passes")
    s += f", train accuracy {_f(v['train_accuracy'], '.4f')}" if "train_accuracy" in v else ""
    if v.get("regularization"):  # the solver had to regularize (or found K near-singular)
        s += f"; **{v['regularization']}**"
    if v.get("factor_store"):
        s += f"; factor store {v['factor_store']} ({v.get('factor_bytes', 0) / 2**30:.2f} GiB)"
    if "factor_seconds" in v:
        s += (f"; factorization {_f(v['factor_seconds'], '.1f')} s ({v.get('factor_tiles_computed')} tiles computed), "
              f"solves and {v['iterations']} refinement steps {_f(v['refine_seconds'], '.1f')} s")
    return s


def _predict_line(v: dict) -> str:
    acc = f"test accuracy **{_f(v['test_accuracy'], '.4f')}**, " if "test_accuracy" in v else ""
    r2 = f", R² {_f(v['test_r2'], '.4f')}" if "test_r2" in v else ""
    return f"{acc}test MSE {_f(v['test_mse'])}{r2} on {v['n_test']} points"


def _spectrum_line(v: dict) -> str:
    s = (f"top {v['k']} eigenvalues of K/n in {v['passes']} passes; power law exponent "
         f"{_f(v['power_law_exponent'], '.3f')} on ranks {v['power_law_window']}; "
         f"{_f(v['trace_fraction_in_top_k'], '.1%')} of the trace, "
         f"{_f(v['target_power_in_top_k'], '.1%')} of the target power in the top k")
    q = v.get("tail_quadrature")
    if q:
        s += (f"; the rest by Lanczos quadrature ({q['steps']} passes"
              + ("" if q.get("converged", True) else ", **not converged: raise spectrum.tail_max_steps**")
              + f", {q['probes']} probes, "
              f"{_f(q['seconds'], '.0f')} s; tail mass {_f(q['tail_mass_probes'], '.4g')} from the probes "
              f"vs {_f(q['tail_mass'], '.4g')} exact)")
    return s


def _curve_line(v: dict) -> str:
    dev = max(abs(float(x)) for x in v["relative_deviation"])
    s = f"{len(v['p'])} sizes × {v['trials']} trials; max |exp/theory − 1| = {dev:.1%}"
    if "quadrature_half_steps_change" in v:
        s += (f"; theory from the top pairs + Lanczos quadrature of the rest (half its steps move it by "
              f"{v['quadrature_half_steps_change']:.1%}, probe noise ≤ {max(v['theory_probe_se']):.1%})")
    if "tail_trusted_to_p" in v and max(v["p"]) > v["tail_trusted_to_p"]:  # the power-law tail
        s += (f"; theory past p = {v['tail_trusted_to_p']} (15 × the computed pairs) leans on the tail "
              "model and runs low there (measured up to 18 %)")
    return s


def _dynamics_line(v: dict) -> str:
    s = f"{len(v['t'])} times, final train loss {_f(v['train_loss'][-1])}"
    return s + (f", final test loss {_f(v['test_loss'][-1])}" if "test_loss" in v else "")


# ---------------------------------------------------------------- planner inputs
def _solver_plan(cfg: JobConfig, sizes: PlanSizes) -> dict:
    """The ``[solver]`` section as planner inputs (the fit and the learning curve use it)."""
    s = cfg.solver
    selection = isinstance(s["ridge"], str)
    ridge_rel = 1e-3 if selection else float(s["ridge"])
    if not selection and not s["relative_ridge"]:
        ridge_rel = ridge_rel / _mean_diag(sizes.arch, sizes.d, cfg.kernel["kind"])
    return dict(solver=s["method"], ridge_relative=ridge_rel, ridge_selection=selection,
                ridge_subsample=s["ridge_subsample"] or None, pcg_rank=s["pcg_rank"], tol=s["tol"],
                maxiter=s["maxiter"], preconditioner=s["preconditioner"])


def _mean_diag(arch: Any, d: int, kind: str) -> float:
    """Kernel diagonal at an input with ``|x|²/d = 1`` (what sphere preprocessing gives):
    turns an absolute ridge into a relative one before the data is loaded."""
    import numpy as np

    from ..kernels import diag_stats

    st = diag_stats(arch, np.ones((1, d)), dtype=np.float64)
    return float(np.asarray(st.ntk if kind == "ntk" else st.nngp)[0])


def _fit_plan(cfg: JobConfig, sizes: PlanSizes) -> dict:
    return {"fit": True, **_solver_plan(cfg, sizes)}


def _spectrum_plan(cfg: JobConfig, sizes: PlanSizes) -> dict:
    sp = cfg.sections["spectrum"]
    k = min(sp["k"], sizes.n - 1)
    tail = bool(sp["tail_steps"]) and needs_saved_eigs(sizes.n) and k < sizes.n
    return {"spectrum_k": k, "power_iters": sp["power_iters"],  # planned at the first check's steps
            "tail_steps": sp["tail_steps"] if tail else 0,
            "tail_columns": sizes.n_outputs + sp["tail_probes"]}


def _curve_plan(cfg: JobConfig, sizes: PlanSizes) -> dict:
    c = cfg.sections["curve"]
    return {"curve_points": c["p"] or 8, "curve_trials": c["trials"],
            "curve_n_test": c["n_test"] or None, **_solver_plan(cfg, sizes)}


register(Stage("gram", stage_gram, _gram_line, default=True, plan=lambda cfg, sizes: {}, store="builds",
               description="Build (or resume) the train Gram store on the cluster."))
register(Stage("fit", stage_fit, _fit_line, default=True, store="reads", plan=_fit_plan,
               description="Solve (K + λI) α = Y on the stored train Gram; writes fit.npz."))
register(Stage("predict", stage_predict, _predict_line, default=True, store="reads",
               plan=lambda cfg, sizes: {"n_test": sizes.n_test},
               description="Test predictions K(X*, X) α; writes predictions.npz."))
register(Stage("spectrum", stage_spectrum, _spectrum_line, section="spectrum", parse=_spectrum,
               default=True, store="reads",
               plan=_spectrum_plan,
               description="Top-k eigenpairs and power-law fit; writes spectrum.npz."))
register(Stage("curve", stage_curve, _curve_line, section="curve", parse=_curve, default=True, store="reads",
               plan=_curve_plan,
               description="Empirical learning curve next to the theory."))
register(Stage("dynamics", stage_dynamics, _dynamics_line, section="dynamics", parse=_dynamics, store="reads",
               plan=lambda cfg, sizes: {"dynamics_times": len(cfg.sections["dynamics"]["t"]) or 30},
               description="Gradient-flow (or GD) train/test predictions of the linearized network."))

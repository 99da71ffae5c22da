"""Parity cases for ``nt.predict`` vs ``ntkscale.predict``, shared by ``generate_predict.py``
(NT's venv) and ``test_predict_parity.py`` (ntkscale's, no NT).

One architecture, a function of a ``stax`` module (``stax.serial(Dense, Relu, Dense)``), so both
libraries build it from the same code; fixed float64 inputs; and a table ``CALLS`` of predictor
constructions and calls written with symbols (``"kernel"``, ``"x_test"``, ...) that
:func:`resolve` turns into the arrays of the library at hand: NT kernels in the generator,
ntkscale kernels in the test (the porting user's flow: same script, one import changed).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

N_TRAIN, N_TEST, D, C = 8, 4, 5, 3


def arch(stax):
    """``serial(Dense, Relu, Dense)``, NTK parameterization, with biases."""
    return stax.serial(stax.Dense(512, W_std=1.5, b_std=0.1), stax.Relu(),
                       stax.Dense(C, W_std=1.2, b_std=0.05))


def data(seed: int = 7) -> dict[str, np.ndarray]:
    """Inputs, targets (n, C) and (n,), initial outputs; float64."""
    rng = np.random.default_rng(seed)
    x_train = rng.standard_normal((N_TRAIN, D))
    x_test = rng.standard_normal((N_TEST, D))
    y = rng.standard_normal((N_TRAIN, C))
    return {"x_train": x_train, "x_test": x_test, "y": y, "y1": y[:, 0].copy(),
            "f0_train": 0.3 * rng.standard_normal((N_TRAIN, C)),
            "f0_test": 0.3 * rng.standard_normal((N_TEST, C)),
            "f0_train1": 0.2 * rng.standard_normal(N_TRAIN),
            "f0_test1": 0.2 * rng.standard_normal(N_TEST)}


T_ARRAY = [0.0, 0.5, 4.0, 40.0]  # N = y.size = 24; NTK eigenvalues ~ 0.5 ... 40
T_2D = [[1.0, 3.0], [10.0, 30.0]]
T_ODE = [0.5, 4.0, 40.0]  # strictly increasing, as NT's ODE solver wants


def losses(xp) -> dict[str, Callable[[Any, Any], Any]]:
    """Losses of ``gradient_descent`` written with an array module (numpy or jax.numpy)."""
    return {"mse_half": lambda fx, y: 0.5 * xp.mean((fx - y) ** 2),
            "mse": lambda fx, y: xp.mean((fx - y) ** 2)}


#: name -> (function, constructor kwargs, call kwargs); symbols resolved by :func:`resolve`.
CALLS: dict[str, tuple[str, dict, dict]] = {
    # gradient_descent_mse_ensemble(kernel_fn, x_train, y_train, ...)(t, x_test, get, compute_cov)
    "ens_inf_both_cov": ("ensemble", {}, {"t": None, "x_test": "x_test", "get": None, "compute_cov": True}),
    "ens_inf_ntk_mean": ("ensemble", {"diag_reg": 1e-2}, {"t": None, "x_test": "x_test", "get": "ntk"}),
    "ens_t_both_cov_rel": ("ensemble", {"diag_reg": 1e-2, "learning_rate": 0.5},
                           {"t": T_ARRAY, "x_test": "x_test", "get": ("nngp", "ntk"), "compute_cov": True}),
    "ens_tscalar_nngp_abs": ("ensemble", {"diag_reg": 1e-3, "diag_reg_absolute_scale": True},
                             {"t": 2.0, "x_test": "x_test", "get": "nngp", "compute_cov": True}),
    "ens_t2d_ntk_mean": ("ensemble", {}, {"t": T_2D, "x_test": "x_test", "get": "ntk"}),
    "ens_train_t_cov": ("ensemble", {}, {"t": T_ARRAY, "x_test": None, "get": None, "compute_cov": True}),
    "ens_train_inf_cov": ("ensemble", {}, {"t": None, "x_test": None, "get": ("ntk", "nngp"),
                                           "compute_cov": True}),
    "ens_y1_t_cov": ("ensemble", {"y_train": "y1", "trace_axes": ()},
                     {"t": T_ARRAY, "x_test": "x_test", "get": None, "compute_cov": True}),
    # gp_inference(k_train_train, y_train, ...)(get, k_test_train, k_test_test)
    "gp_both_cov": ("gp", {"k_train_train": "kernel"},
                    {"get": None, "k_test_train": "kernel", "k_test_test": "kernel"}),
    "gp_ntkgp_rel": ("gp", {"k_train_train": "kernel", "diag_reg": 1e-2},
                     {"get": ("ntkgp", "ntk"), "k_test_train": "kernel", "k_test_test": "kernel"}),
    "gp_nngp_array_abs": ("gp", {"k_train_train": "nngp", "diag_reg": 1e-3, "diag_reg_absolute_scale": True},
                          {"get": "nngp", "k_test_train": "nngp"}),
    "gp_nngp_array_cov": ("gp", {"k_train_train": "nngp"},
                          {"get": "nngp", "k_test_train": "nngp", "k_test_test": "nngp"}),
    "gp_train_cov": ("gp", {"k_train_train": "kernel"}, {"get": "ntk", "k_test_train": None, "k_test_test": True}),
    # gradient_descent_mse(k_train_train, y_train, ...)(t, fx_train_0, fx_test_0, k_test_train)
    "mse_inf_f0": ("mse", {}, {"t": None, "fx_train_0": "f0_train", "fx_test_0": "f0_test",
                              "k_test_train": "ntk"}),
    "mse_inf_reg_f0": ("mse", {"diag_reg": 1e-2}, {"t": None, "fx_train_0": "f0_train",
                                                   "fx_test_0": "f0_test", "k_test_train": "ntk"}),
    "mse_t_f0_rel": ("mse", {"diag_reg": 1e-2, "learning_rate": 0.3},
                     {"t": T_ARRAY, "fx_train_0": "f0_train", "fx_test_0": "f0_test", "k_test_train": "ntk"}),
    "mse_tscalar_train": ("mse", {}, {"t": 3.0}),
    "mse_t_test_only_abs": ("mse", {"diag_reg": 1e-3, "diag_reg_absolute_scale": True},
                            {"t": T_ARRAY, "fx_train_0": None, "fx_test_0": 0.0, "k_test_train": "ntk"}),
    "mse_t2d_f0": ("mse", {}, {"t": T_2D, "fx_train_0": "f0_train", "fx_test_0": "f0_test",
                              "k_test_train": "ntk"}),
    "mse_y1_t": ("mse", {"y_train": "y1", "trace_axes": ()},
                 {"t": T_ARRAY, "fx_train_0": "f0_train1", "fx_test_0": "f0_test1", "k_test_train": "ntk"}),
    "mse_nngp_t": ("mse", {"k_train_train": "nngp"},
                   {"t": T_ARRAY, "fx_train_0": "f0_train", "fx_test_0": "f0_test", "k_test_train": "nngp"}),
    # gradient_descent(loss, k_train_train, y_train, ...)(t, fx_train_or_state_0, fx_test_0, k_test_train):
    # NT integrates an ODE (rtol = atol = 1.4e-8), the closed form here is exact
    "gd_mse_half": ("gd", {"loss": "mse_half", "learning_rate": 0.5},
                    {"t": T_ODE, "fx_train_or_state_0": "f0_train", "fx_test_0": "f0_test", "k_test_train": "ntk"}),
    "gd_mse_full": ("gd", {"loss": "mse"}, {"t": T_ODE, "fx_train_or_state_0": "f0_train"}),
}

#: functions whose signatures must match NT's (NT's parameters first, same order and defaults)
SIGNATURES = ("gradient_descent_mse_ensemble", "gp_inference", "gradient_descent_mse", "gradient_descent",
              "max_learning_rate")

#: max_learning_rate(ntk_train_train, y_train_size, momentum)
MAX_LR = {"mlr_default": {}, "mlr_size_momentum": {"y_train_size": N_TRAIN * C, "momentum": 0.9}}


def kernels(kernel_fn: Callable, d: dict[str, np.ndarray], asarray: Callable = np.asarray) -> dict[str, Any]:
    """Train-train, test-train, test-test kernels (both kinds) from a library's ``kernel_fn``."""
    ktt = kernel_fn(d["x_train"], None, ("nngp", "ntk"))
    kxt = kernel_fn(d["x_test"], d["x_train"], ("nngp", "ntk"))
    kxx = kernel_fn(d["x_test"], None, ("nngp", "ntk"))
    return {"train": ktt, "test_train": kxt, "test_test": kxx}


def resolve(kind: str, make: dict, call: dict, d: dict, ks: dict, loss_fns: dict) -> tuple[dict, dict]:
    """Constructor and call kwargs with the symbols replaced by data / kernels."""
    def k_of(sym, which):
        if sym is None or sym is True:
            return sym
        k = ks[which]
        return k if sym == "kernel" else getattr(k, sym)

    mk = dict(make)
    mk["y_train"] = d[mk.get("y_train", "y")]
    if kind in ("gp", "mse", "gd"):
        mk["k_train_train"] = k_of(mk.get("k_train_train", "ntk"), "train")
    if kind == "gd":
        mk["loss"] = loss_fns[mk["loss"]]
    cl = dict(call)
    for key in ("x_test", "fx_train_0", "fx_test_0", "fx_train_or_state_0"):
        if isinstance(cl.get(key), str):
            cl[key] = d[cl[key]]
    if "k_test_train" in cl:
        cl["k_test_train"] = k_of(cl["k_test_train"], "test_train")
    if "k_test_test" in cl:
        cl["k_test_test"] = k_of(cl["k_test_test"], "test_test")
    if isinstance(cl.get("t"), list):
        cl["t"] = np.asarray(cl["t"], np.float64)
    return mk, cl


def flatten(out: Any, prefix: str) -> dict[str, np.ndarray]:
    """Arrays of a result (array, tuple, namedtuple of Gaussians) keyed ``prefix/field/...``."""
    if hasattr(out, "_fields"):
        items = zip(out._fields, out)
    elif isinstance(out, tuple):
        items = ((str(i), v) for i, v in enumerate(out))
    else:
        return {prefix: np.asarray(out, np.float64)}
    res: dict[str, np.ndarray] = {}
    for k, v in items:
        res.update(flatten(v, f"{prefix}/{k}"))
    return res

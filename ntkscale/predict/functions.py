"""``gp_inference``, ``gradient_descent_mse``, ``gradient_descent`` and ``max_learning_rate`` with
neural-tangents' names, parameters, defaults and return conventions, on precomputed kernels:
arrays (NumPy, JAX, CuPy; results are NumPy float64), ``Kernel`` namedtuples with ``.nngp`` /
``.ntk``, or stored Grams (:class:`ntkscale.operator.StoredGram`, or a store URL).

Conventions (NT's): loss ``(1/2)(1/N)||f - y||^2`` with ``N = y_train.size``; time
``t x learning_rate``; ``t=None`` is infinite time by a linear solve; ``diag_reg`` is relative
to ``mean(diag K)`` unless ``diag_reg_absolute_scale``; kernels lack the output axes
(``trace_axes`` = every axis of ``y_train`` but the first).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from ._args import (Gaussian, Targets, canonical_get, check_reg, check_time, is_operator, is_url, kernel_part,
                    named_output, opener, to_numpy)
from ._posterior import posterior
from ._train import Cross, TrainKernel, flow_fns

__all__ = ["gp_inference", "gradient_descent_mse", "gradient_descent", "max_learning_rate", "ODEState"]


class _Trains:
    """``kind -> TrainKernel``, built on first use (one per distinct kernel object)."""

    def __init__(self, k_train_train: Any, diag_reg: float, absolute: bool, opts: dict):
        self.part = opener(k_train_train)
        self.reg, self.absolute, self.opts = diag_reg, absolute, opts
        self.by_id: dict[int, TrainKernel] = {}
        self.by_kind: dict[str, TrainKernel] = {}

    def __call__(self, kind: str) -> TrainKernel:
        if kind not in self.by_kind:
            k = self.part(kind)
            if id(k) not in self.by_id:  # one array given for both kinds: one factorization
                self.by_id[id(k)] = TrainKernel(k, self.reg, self.absolute, **self.opts)
            self.by_kind[kind] = self.by_id[id(k)]
        return self.by_kind[kind]

    def info(self) -> list[dict]:
        """What ran so far, per kind (solver, method, passes, residual / estimate)."""
        out, seen = [], set()
        for kind, tr in self.by_kind.items():
            if id(tr) not in seen:
                seen.add(id(tr))
                out.extend({"kind": kind, **d} for d in tr.info)
        return out


def _solver_opts(solver: str, tol: float, n_dense: Optional[int], maxiter: Optional[int],
                 pcg_rank: int = 1000) -> dict:
    return {"solver": solver, "tol": tol, "n_dense": n_dense, "maxiter": maxiter, "pcg_rank": pcg_rank}


def gp_inference(k_train_train: Any, y_train: Any, diag_reg: float = 0., diag_reg_absolute_scale: bool = False,
                 trace_axes: Any = (-1,), *, solver: str = "auto", tol: float = 1e-10,
                 n_dense: Optional[int] = None, maxiter: Optional[int] = None,
                 pcg_rank: int = 1000) -> Callable[..., Any]:
    """Posterior mean [and covariance] of the NNGP, the NTK ensemble at infinite time, or NTK-GP.

    neural-tangents' ``predict.gp_inference``: ``nngp`` is the exact posterior of an infinitely
    wide Bayesian network; ``ntk`` the distribution of an infinite ensemble of infinitely wide
    networks trained by gradient flow for infinite time; ``ntkgp`` the GP posterior with the
    NTK as covariance (He et al. 2020).

    Parameters
    ----------
    k_train_train : array (n, n), ``Kernel`` namedtuple / dict with ``nngp`` / ``ntk``, Gram operator or URL
        Train-train kernel(s). An array is used for every kind asked (as NT does); a
        :class:`ntkscale.operator.StoredGram` (or a namedtuple of them, or a store URL, opened
        per kind) is solved out of core (:func:`ntkscale.solvers.solve`: tiled Cholesky or
        Nyström-PCG; in-memory Cholesky up to ``n_dense``). The NTK covariance needs both kinds.
        A URL's passes run on the running ``distributed.Client`` if there is one, else
        in-process one task at a time (slow at large n: start a ``Client()`` first, or pass
        ``StoredGram(url, kind, client=...)``; ``benchmarks/predict_store.py``).
    y_train : array, shape (n,) or (n, C) (or (n, *out))
    diag_reg : float
        Ridge ``diag_reg * mean(diag K)`` added to ``K`` (absolute with ``diag_reg_absolute_scale``).
    diag_reg_absolute_scale : bool
    trace_axes : tuple of int
        Must be every axis of ``y_train`` but the first (default ``(-1,)``; ``()`` for 1-d y).
    solver, tol, n_dense, maxiter, pcg_rank
        Out-of-core controls (keyword-only, not in NT): :func:`ntkscale.solvers.solve`
        (``tol`` is PCG's relative residual; ``pcg_rank`` its preconditioner's rank).

    Returns
    -------
    predict_fn(get=None, k_test_train=None, k_test_test=None)
        ``get``: 'nngp', 'ntk', 'ntkgp' or a tuple (None: ``('nngp', 'ntk')``).
        ``k_test_train`` (m, n) array, namedtuple, operator (mean only: ``matvec``) or
        ``None`` (train set: ``y_train``). ``k_test_test`` (m, m) (or namedtuple): also return
        the covariance; with ``k_test_train=None`` any non-None value gives ``N(y_train, 0)``.
        Returns the mean (shape of the outputs, (m, *out)) or ``Gaussian(mean, covariance)``
        with covariance (m, m); a namedtuple ``Gaussians`` over ``get`` for a tuple ``get``.
        ``predict_fn.info`` lists what each solve ran.

    References
    ----------
    Lee et al., "Wide neural networks of any depth evolve as linear models under gradient
    descent", NeurIPS 2019, Eq. (16); He, Lakshminarayanan & Teh, "Bayesian deep ensembles
    via the neural tangent kernel", NeurIPS 2020; neural-tangents ``predict.gp_inference``.
    """
    y = Targets(y_train, trace_axes)
    train = _Trains(k_train_train, check_reg(diag_reg), bool(diag_reg_absolute_scale),
                    _solver_opts(solver, tol, n_dense, maxiter, pcg_rank))
    info: list[dict] = []

    def predict_fn(get: Any = None, k_test_train: Any = None, k_test_test: Any = None) -> Any:
        kinds, single = canonical_get(get)
        out = {}
        for g in kinds:
            if g not in ("nngp", "ntk", "ntkgp"):
                raise ValueError(f"get must name 'nngp', 'ntk' or 'ntkgp', got {g!r}")
            k = "ntk" if g == "ntkgp" else g
            if k_test_train is None:  # the train set: N(y_train, 0)
                mean = y.y.copy()
                out[g] = mean if k_test_test is None else \
                    Gaussian(mean, np.zeros_like(train(k).dense("the train-set covariance")))
                continue
            if (g == "ntk" and k_test_test is not None
                    and not (_has_kinds(k_train_train) and _has_kinds(k_test_train))):
                raise ValueError('If `"ntk" in get`, and `k_test_test is not None`, and `k_test_train is '
                                 'not None`, i.e. you request the NTK posterior covariance on the test set, '
                                 'you need both NTK and NNGP train-train and test-train matrices contained '
                                 'in `k_test_train` and `k_train_train`. Hence they must be `namedtuple`s '
                                 'with `nngp` and `ntk` attributes.')
            n = train(k).n
            crosses: dict[str, Cross] = {}

            def cross(kind: str) -> Cross:
                if kind not in crosses:
                    crosses[kind] = Cross(kernel_part(k_test_train, kind), n)
                return crosses[kind]

            k_tt = None if k_test_test is None else (lambda kind: to_numpy(kernel_part(k_test_test, kind)))
            out[g] = posterior(g, train, y, cross, k_tt)
        info[:] = train.info()
        return named_output(out, kinds, single)

    predict_fn.info = info  # type: ignore[attr-defined]
    return predict_fn


def _has_kinds(k: Any) -> bool:
    if isinstance(k, dict):
        return k.get("nngp") is not None and k.get("ntk") is not None
    return is_url(k) or (getattr(k, "nngp", None) is not None and getattr(k, "ntk", None) is not None)


def _check_inputs(fx_train_0: Any, fx_test_0: Any, k_test_train: Any) -> None:
    if fx_train_0 is None and fx_test_0 is None:
        raise ValueError("Both `fx_train_0` and `fx_test_0` are `None`, i.e. no predictions will be computed.")
    if fx_test_0 is not None and k_test_train is None:
        raise ValueError("To get predictions on the test set, please provide `k_test_train` kernel to the "
                         "parent function.")


def _mse_predictor(train: TrainKernel, y: Targets, time_scale: float, learning_rate: float,
                   info: list) -> Callable[..., Any]:
    """predict_fn(t, fx_train_0, fx_test_0, k_test_train) of gradient flow on MSE;
    ``time_scale`` multiplies ``t`` (1 for MSE with NT's 1/2, 2 without it, ...)."""

    def predict_fn(t: Any = None, fx_train_0: Any = 0., fx_test_0: Any = None, k_test_train: Any = None) -> Any:
        _check_inputs(fx_train_0, fx_test_0, k_test_train)
        f0 = None if fx_train_0 is None else y.flat(fx_train_0, y.n, "fx_train_0")
        cross = None if k_test_train is None else Cross(k_test_train, y.n)
        if t is None:
            fx_train = y.y.copy()
            fx_test = None
            if fx_test_0 is not None:
                alpha = train.solve(y.y2 if f0 is None else y.y2 - f0)
                d = cross.apply(alpha)  # shape: (m, C)
                fx_test = np.asarray(to_numpy(fx_test_0) + d.reshape(y.shape((), d.shape[0])))
        else:
            ts, lead = check_time(t, learning_rate * time_scale)
            T = ts.size
            rhs = -y.y2 if f0 is None else f0 - y.y2
            which = (("expm1",) if f0 is not None else ()) + (("phi",) if fx_test_0 is not None else ())
            vals = train.funcs(rhs, flow_fns(ts, 1.0 / y.y.size, which))
            fx_train = fx_test = None
            if f0 is not None:
                fx_train = (f0[None] + vals[:T]).reshape(y.shape(lead, y.n))
            if fx_test_0 is not None:
                ph = vals[-T:]  # phi (f0 - y), shape: (T, n, C)
                d = -cross.apply(ph.transpose(1, 0, 2).reshape(y.n, T * y.C))  # shape: (m, T C)
                m = d.shape[0]
                d = d.reshape(m, T, y.C).transpose(1, 0, 2).reshape(y.shape(lead, m))
                fx_test = np.asarray(np.expand_dims(to_numpy(fx_test_0), tuple(range(len(lead)))) + d)
        info[:] = [dict(d) for d in train.info]
        if fx_train_0 is not None and fx_test_0 is not None:
            return fx_train, fx_test
        return fx_train if fx_test_0 is None else fx_test

    predict_fn.info = info  # type: ignore[attr-defined]
    return predict_fn


def gradient_descent_mse(k_train_train: Any, y_train: Any, learning_rate: float = 1., diag_reg: float = 0.,
                         diag_reg_absolute_scale: bool = False, trace_axes: Any = (-1,), *,
                         solver: str = "auto", tol: float = 1e-10, n_dense: Optional[int] = None,
                         maxiter: Optional[int] = None, pcg_rank: int = 1000) -> Callable[..., Any]:
    """Outputs of function-space gradient flow on MSE, in closed form (NT's ``gradient_descent_mse``).

    ``f_train(t) = y + exp(-K t/N) (f0 - y)``;
    ``f_test(t) = f0(x) + K(x, X) K^-1 (I - exp(-K t/N)) (y - f0)`` with ``K`` the train
    kernel plus NT's ridge, ``t`` in units of ``learning_rate`` and ``N = y_train.size``.

    Parameters
    ----------
    k_train_train : array (n, n), Gram operator or store URL (its NTK)
        Arrays (and in-memory operators up to ``n_dense``) use an eigendecomposition (finite
        t) or a Cholesky factor (t=None), cached, as NT; a stored Gram uses Lanczos
        (:func:`ntkscale.solvers.lanczos_matfuncs`, one pass over the tiles per step for all
        columns and times) and :func:`ntkscale.solvers.solve`.
    y_train : array, shape (n, C) or (n,) (with ``trace_axes=()``)
    learning_rate, diag_reg, diag_reg_absolute_scale, trace_axes
        As NT.
    solver, tol, n_dense, maxiter, pcg_rank
        Out-of-core controls (keyword-only, not in NT; as :func:`gp_inference`).

    Returns
    -------
    predict_fn(t=None, fx_train_0=0., fx_test_0=None, k_test_train=None)
        ``t``: scalar or array of any shape (leading axes of the outputs), ``None`` = infinite
        time (the train outputs are then ``y_train``). ``fx_train_0`` (n, *out) or scalar,
        ``None`` for no train outputs; ``fx_test_0`` (m, *out) or scalar, with ``k_test_train``
        (m, n): array, operator with ``matvec``, or callable ``V -> K(x, X) V``. Returns
        ``fx_train_t``, ``fx_test_t`` or both (a tuple), shapes ``t.shape + (n or m, *out)``.

    References
    ----------
    Jacot, Gabriel & Hongler, "Neural tangent kernel", NeurIPS 2018; Lee et al., NeurIPS 2019,
    Eqs. (9)-(11); neural-tangents ``predict.gradient_descent_mse``.
    """
    y = Targets(y_train, trace_axes)
    k = opener(k_train_train)("ntk")
    train = TrainKernel(k, check_reg(diag_reg), bool(diag_reg_absolute_scale),
                        **_solver_opts(solver, tol, n_dense, maxiter, pcg_rank))
    if train.n != y.n:
        raise ValueError(f"k_train_train is {train.n} x {train.n} but y_train has {y.n} rows")
    return _mse_predictor(train, y, 1.0, float(learning_rate), [])


@dataclass
class ODEState:
    """NT's ``predict.ODEState``: outputs (and momentum variables, unsupported here) of
    :func:`gradient_descent`; passing one returns one."""

    fx_train: Optional[np.ndarray] = None
    fx_test: Optional[np.ndarray] = None
    qx_train: Optional[np.ndarray] = None
    qx_test: Optional[np.ndarray] = None


def mse_scale(loss: Any, y: Targets, seed: int = 0) -> Optional[float]:
    """``c`` when ``loss(f, y) == c (1/2) mean((f - y)^2)`` for every ``f`` (checked on random
    probes to 1e-10), else None. ``loss='mse'`` is ``c = 1``."""
    if isinstance(loss, str):
        return 1.0 if loss.lower() in ("mse", "mean_squared_error") else None
    rng = np.random.default_rng(seed)
    ratios = []
    try:
        if abs(float(loss(y.y.copy(), y.y.copy()))) > 1e-12:
            return None
        for _ in range(3):
            f = y.y + rng.standard_normal(y.y.shape) * (1 + rng.random())
            ratios.append(float(loss(f, y.y.copy())) / (0.5 * float(np.mean((f - y.y) ** 2))))
    except Exception:  # noqa: BLE001 - a loss that cannot take NumPy arrays is not recognized
        return None
    c = ratios[0]
    if c > 0 and all(abs(r - c) <= 1e-10 * c for r in ratios):
        return c
    return None


def gradient_descent(loss: Any, k_train_train: Any, y_train: Any, learning_rate: float = 1.,
                     momentum: Optional[float] = None, trace_axes: Any = (-1,), *, solver: str = "auto",
                     tol: float = 1e-10, n_dense: Optional[int] = None,
                     maxiter: Optional[int] = None, pcg_rank: int = 1000) -> Callable[..., Any]:
    """Function-space gradient descent (flow), NT's ``predict.gradient_descent``, for MSE only.

    NT integrates an ODE for any ``loss``. Here the loss must be recognizably MSE: ``'mse'``
    or a callable equal to ``c (1/2) mean((f - y)^2)`` for a constant ``c > 0`` (checked on
    random probes), e.g. ``lambda fx, y: 0.5 * jnp.mean((fx - y) ** 2)``; the closed form of
    :func:`gradient_descent_mse` (time ``c t``) is then exact where NT's ODE solution is
    accurate to its tolerance (rtol = atol = 1.4e-8).

    Raises
    ------
    NotImplementedError
        Any other loss (cross-entropy, ...): there is no closed form; use
        :func:`gradient_descent_mse` (MSE) or neural-tangents' ODE solver. Also ``momentum``
        (NT's momentum ODE): use ``gradient_descent_mse`` (plain gradient flow).

    Returns
    -------
    predict_fn(t=None, fx_train_or_state_0=0., fx_test_0=None, k_test_train=None)
        As NT: ``t=None`` is infinite time; an :class:`ODEState` in gives one out.

    References
    ----------
    Lee et al., NeurIPS 2019, Sec. 2.2; neural-tangents ``predict.gradient_descent``.
    """
    if momentum is not None:
        raise NotImplementedError(
            "gradient_descent(momentum=...) integrates NT's momentum ODE, which ntkscale does not "
            "implement; use ntkscale.predict.gradient_descent_mse (gradient flow on MSE, closed form) "
            "or neural-tangents for momentum")
    y = Targets(y_train, trace_axes)
    c = mse_scale(loss, y)
    if c is None:
        raise NotImplementedError(
            f"gradient_descent: the loss {getattr(loss, '__name__', loss)!r} is not MSE "
            "(c * 0.5 * mean((f - y)**2)), and only MSE has a closed form here (NT integrates an ODE "
            "for other losses); use ntkscale.predict.gradient_descent_mse for MSE, or neural-tangents' "
            "predict.gradient_descent for other losses")
    k = opener(k_train_train)("ntk")
    train = TrainKernel(k, 0.0, True, **_solver_opts(solver, tol, n_dense, maxiter, pcg_rank))
    inner = _mse_predictor(train, y, c, float(learning_rate), [])

    def predict_fn(t: Any = None, fx_train_or_state_0: Any = 0., fx_test_0: Any = None,
                   k_test_train: Any = None) -> Any:
        if isinstance(fx_train_or_state_0, ODEState):
            st = fx_train_or_state_0
            if fx_test_0 is not None:
                raise ValueError("`fx_test_0` is included in `ODEState` and must be set to `None`.")
            if st.qx_train is not None or st.qx_test is not None:
                raise ValueError("Got passed momentum state variables, while `momentum is None`.")
            f_tr = 0. if st.fx_train is None else st.fx_train
            out = inner(t, f_tr, st.fx_test, k_test_train)
            if st.fx_test is None:
                return ODEState(out, None)
            return ODEState(*out)
        f_tr = 0. if fx_train_or_state_0 is None else fx_train_or_state_0  # NT starts at 0
        if fx_train_or_state_0 is None and fx_test_0 is None:
            raise ValueError("Both `fx_train_0` and `fx_test_0` are `None`, i.e. no predictions will be "
                             "computed.")
        out = inner(t, f_tr, fx_test_0, k_test_train)
        if fx_test_0 is None:
            return out
        return out[1] if fx_train_or_state_0 is None else out

    predict_fn.info = inner.info  # type: ignore[attr-defined]
    return predict_fn


def max_learning_rate(ntk_train_train: Any, y_train_size: Optional[int] = None, momentum: float = 0.,
                      eps: float = 1e-12) -> float:
    """Largest stable learning rate of full-batch GD (+ momentum) on MSE, NT's ``max_learning_rate``.

    ``2 (1 + momentum) N / (lambda_max + eps)`` with ``N = y_train_size`` (default n, i.e.
    one output). ``lambda_max``: LAPACK for arrays, Lanczos (``scipy.sparse.linalg.eigsh``
    on ``matvec``, one pass per step) for a Gram operator.

    References
    ----------
    Lee et al., NeurIPS 2019, Sec. 2.4 and Appendix; Goh, "Why momentum really works",
    Distill 2017; neural-tangents ``predict.max_learning_rate``.
    """
    if is_url(ntk_train_train):
        ntk_train_train = opener(ntk_train_train)("ntk")
    if is_operator(ntk_train_train) and not getattr(ntk_train_train, "in_memory", False):
        from scipy.sparse.linalg import LinearOperator, eigsh

        n = int(ntk_train_train.shape[0])
        lin = LinearOperator((n, n), matvec=lambda v: ntk_train_train.matvec(np.asarray(v, np.float64)),
                             dtype=np.float64)
        top = float(eigsh(lin, k=1, which="LA", tol=1e-10, return_eigenvectors=False)[0])
    else:
        K = to_numpy(ntk_train_train.to_numpy() if is_operator(ntk_train_train) else ntk_train_train)
        if K.ndim != 2 or K.shape[0] != K.shape[1]:
            raise ValueError(f"ntk_train_train must be square (n, n), got {K.shape}")
        import scipy.linalg

        n = K.shape[0]
        top = float(scipy.linalg.eigvalsh(K, subset_by_index=[n - 1, n - 1])[-1])
    factor = n if y_train_size is None else int(y_train_size)
    return 2 * (1 + momentum) * factor / (top + eps)

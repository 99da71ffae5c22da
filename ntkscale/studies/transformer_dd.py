"""Model-wise double descent of a small transformer, next to its empirical-NTK predictions.

One command (``python -m ntkscale.studies.transformer_dd --out DIR [--quick]``, or
``ntkscale study transformer --out DIR``) writes ``results.json``, ``double_descent.png``,
``kernel_move.png`` and ``report.md`` to DIR.

Task: sequences of ``T`` tokens drawn uniformly from ``V`` symbols; the target is the number
of positions ``t >= 1`` holding the same token as position 0, standardized to mean 0 and
variance 1 under the data distribution (comparing every token with the first one is what
attention does; a bag of tokens does not determine it). ``n_train`` training sequences get
label noise ``sigma * xi`` (``xi ~ N(0, 1)``, one draw per seed shared by every width and
noise level); test MSE is measured against the *clean* targets of ``n_test`` sequences.

For every width ``d_model`` (the model-size axis; heads, depth and MLP ratio fixed), every
seed and every noise level:

(a) *measured*: the network (:mod:`.transformer`, NTK parameterization) trained by
    full-batch Adam with a cosine learning-rate decay for a fixed number of steps;
(b) *NTK regression*: the empirical NTK at initialization ``K`` on train ∪ test (float64),
    the linearized network trained to convergence: ``f0 + K_tX K^+ (y - f0)``, ridgeless
    (its test MSE for the seed's noise draw, and its expectation over the noise,
    :func:`ntkscale.spectral.random_features.kernel_limit_error`);
(c) *spectral theory*: Canatar et al.'s ``E_g`` at ``p = n_train`` from the spectrum of
    ``K/M`` of the pool of ``M = n_train + n_test`` sequences and the target weights of the
    residual ``y - f0`` (:func:`ntkscale.spectral.theory_learning_curve`), mapped to the
    held-out rows by :func:`ntkscale.spectral.heldout_error`;
(d) *kernel move*: the empirical NTK on the training set after training vs at init:
    kernel distance ``1 - <K0, Kt>_F / (|K0|_F |Kt|_F)`` (Fort et al. 2020) and
    ``|Kt - K0|_F / |K0|_F``;
(e) *infinite width*: the analytic NTK and NNGP of the closest closed-form architecture
    (:mod:`.transformer_infinite`; it does not depend on the width or the seed), the same
    ridgeless regression, its expected test MSE over the label noise *and* over the
    initial function ``f0 ~ GP(0, NNGP)`` (``infinite_ntk_expected``), the ensemble mean
    ``f0 = 0`` alone, and per seed the MSE for that seed's noise draw.

The ridgeless kernel predictions diverge where the rank of the NTK Gram on the training
set reaches ``n_train`` (the linearized model's interpolation threshold); the rank is
reported with the results. The empirical NTK goes through :func:`empirical_ntk`, a
one-function adapter to ``ntkscale.empirical`` (fallback: ``ntkscale.kernels.network``).

References
----------
Nakkiran et al., "Deep double descent", ICLR 2020 (model-wise double descent with label
noise); Belkin et al., PNAS 116 (2019); Canatar, Bordelon & Pehlevan, Nat. Commun. 12,
2914 (2021); Fort et al., "Deep learning versus kernel learning", NeurIPS 2020 (kernel
distance); Jacot et al., NeurIPS 2018; Lee et al., NeurIPS 2019 (linearized networks).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..spectral import heldout_error, theory_learning_curve
from ..spectral.random_features import kernel_limit_error
from ..spectral.subsets import pinv_weights
from ..kernels.backend import jax_x64
from .transformer import TransformerConfig, init, make_apply, param_count_formula
from .transformer_report import conclusion, report_md, write_outputs  # noqa: F401
from .transformer_measures import _kernel_distance, _krr_realized, _rank, summarize

__all__ = ["StudyConfig", "QUICK", "empirical_ntk", "make_task", "run_study", "summarize",
           "infinite_width",
           "write_outputs", "run", "replot", "main"]


@dataclass(frozen=True)
class StudyConfig:
    """Sizes of the study (defaults: the full run, ~10 CPU-minutes on 2 cores).

    Attributes
    ----------
    vocab, seq_len : int
        Tokens V and sequence length T.
    n_train, n_test : int
        Training sequences n and test sequences (the kernel pool is M = n + n_test).
    widths : tuple of int
        ``d_model`` values, increasing (multiples of ``n_heads``).
    n_heads, depth, mlp_ratio : int
        Fixed across widths.
    noise : tuple of float
        Label-noise standard deviations sigma (targets have unit variance).
    seeds : int
        Initializations (and noise draws) per width.
    steps, lr : int, float
        Full-batch Adam steps and peak learning rate (cosine decay to 0).
    n_log : int
        Points of the recorded train/test loss along training.
    data_seed : int
    """

    vocab: int = 4
    seq_len: int = 8
    n_train: int = 200
    n_test: int = 600
    widths: tuple = (2, 3, 4, 5, 6, 7, 8, 10, 12, 16, 24, 32)
    n_heads: int = 1
    depth: int = 1
    mlp_ratio: int = 2
    noise: tuple = (0.0, 0.5)
    seeds: int = 3
    steps: int = 2000
    lr: float = 1e-2
    n_log: int = 10
    data_seed: int = 0

    def model(self, width: int) -> TransformerConfig:
        return TransformerConfig(vocab=self.vocab, seq_len=self.seq_len, d_model=int(width),
                                 n_heads=self.n_heads, depth=self.depth,
                                 mlp_ratio=self.mlp_ratio, n_out=1, parameterization="ntk")


QUICK = StudyConfig(n_train=48, n_test=64, widths=(2, 4, 8), seeds=1, steps=200, n_log=4)


def _jax():
    import jax
    import jax.numpy as jnp

    return jax, jnp


def empirical_ntk(apply_fn: Callable[[Any, Any], Any], params: Any, x1: Any,
                  x2: Any = None) -> np.ndarray:
    """Empirical NTK Gram ``J(x1) J(x2)^T / k`` (averaged over the k outputs), shape (n1, n2),
    as float64: :func:`ntkscale.empirical.empirical_ntk` (row Jacobians contracted leaf by
    leaf, or NTK-vector products when they do not fit memory)."""
    from ..empirical import empirical_ntk as ntk

    return np.asarray(ntk(apply_fn, params, x1, x2, method="auto", trace=True), dtype=np.float64)


def make_task(cfg: StudyConfig) -> dict:
    """Token sequences and clean targets: ``x_train`` (n, T), ``y_train`` (n,), test likewise.

    ``y = (c - mu) / s`` with ``c = #{t >= 1: x_t = x_0}`` ~ Binomial(T - 1, 1/V), ``mu`` and
    ``s`` its mean and standard deviation.
    """
    rng = np.random.default_rng(cfg.data_seed)
    x = rng.integers(0, cfg.vocab, size=(cfg.n_train + cfg.n_test, cfg.seq_len))
    c = np.sum(x[:, 1:] == x[:, :1], axis=1).astype(np.float64)
    q = 1.0 / cfg.vocab
    y = (c - (cfg.seq_len - 1) * q) / math.sqrt((cfg.seq_len - 1) * q * (1 - q))
    n = cfg.n_train
    return {"x_train": x[:n], "y_train": y[:n], "x_test": x[n:], "y_test": y[n:]}


def _noise_draws(cfg: StudyConfig) -> np.ndarray:
    """Standard normal label-noise draws, shape (seeds, n_train): seed s uses rng(1000 + s)."""
    return np.stack([np.random.default_rng(1000 + s).standard_normal(cfg.n_train)
                     for s in range(cfg.seeds)])


def _trainer(apply_fn: Callable, x_tr: Any, x_te: Any, y_te: Any, steps: int, lr: float,
             n_log: int) -> Callable:
    """``train(params, y) -> (params, train_mse (n_log,), test_mse (n_log,))``, jitted and
    vmapped over a leading run axis: full-batch Adam on ``mean((f - y)^2)``, learning rate
    ``lr (1 + cos(pi t / steps)) / 2``; losses after each of ``n_log`` equal segments."""
    jax, jnp = _jax()
    seg = max(steps // n_log, 1)
    total = seg * n_log
    b1, b2, eps = 0.9, 0.999, 1e-8

    def mse(p: Any, x: Any, y: Any) -> Any:
        return jnp.mean((apply_fn(p, x)[:, 0] - y) ** 2)

    def train(params: Any, y: Any) -> Any:
        grad = jax.grad(mse)
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)

        def step(i: Any, state: Any) -> Any:
            p, m, v = state
            g = grad(p, x_tr, y)
            t = i + 1.0
            rate = lr * 0.5 * (1.0 + jnp.cos(jnp.pi * i / total))
            m = jax.tree_util.tree_map(lambda a, b: b1 * a + (1 - b1) * b, m, g)
            v = jax.tree_util.tree_map(lambda a, b: b2 * a + (1 - b2) * b * b, v, g)
            p = jax.tree_util.tree_map(
                lambda a, mm, vv: a - rate * (mm / (1 - b1 ** t))
                / (jnp.sqrt(vv / (1 - b2 ** t)) + eps), p, m, v)
            return p, m, v

        def segment(state: Any, start: Any) -> Any:
            state = jax.lax.fori_loop(start, start + seg, step, state)
            return state, (mse(state[0], x_tr, y), mse(state[0], x_te, y_te))

        state, (tr, te) = jax.lax.scan(segment, (params, zeros, zeros), jnp.arange(n_log) * seg)
        return state[0], tr, te

    return jax.jit(jax.vmap(train))


def _ntk64(apply_fn: Callable, params: Any, x: np.ndarray) -> np.ndarray:
    """Empirical NTK Gram of ``x`` in float64 (for ranks and the ridgeless pseudo-inverse)."""
    jax, jnp = _jax()
    with jax_x64(np.float64):
        p64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype=jnp.float64), params)
        K = empirical_ntk(apply_fn, p64, jnp.asarray(x))
    return (K + K.T) / 2


def _width_runs(cfg: StudyConfig, width: int, task: dict, xi: np.ndarray) -> dict:
    """Everything measured and predicted at one width: arrays indexed [noise, seed]."""
    jax, jnp = _jax()
    mcfg = cfg.model(width)
    apply_fn = make_apply(mcfg)
    n, S, Z = cfg.n_train, cfg.seeds, len(cfg.noise)
    x_pool = np.concatenate([task["x_train"], task["x_test"]])
    y_pool = np.concatenate([task["y_train"], task["y_test"]])
    M = x_pool.shape[0]
    sig = np.asarray(cfg.noise, dtype=np.float64)
    t0 = time.perf_counter()
    params0 = [init(jax.random.PRNGKey(s), mcfg) for s in range(S)]
    out: dict = {name: np.full((Z, S), np.nan) for name in (
        "test_mse", "train_mse", "ntk_krr", "ntk_krr_expected", "spectral", "spectral_pool",
        "kernel_distance", "kernel_rel_change")}
    rank_train, rank_pool, rank_train_6 = [], [], []
    K0_train = []
    for s, p0 in enumerate(params0):
        K = _ntk64(apply_fn, p0, x_pool)  # shape: (M, M)
        f0 = np.asarray(apply_fn(p0, jnp.asarray(x_pool)), dtype=np.float64)[:, 0]
        r = y_pool - f0  # the linearized model learns the residual of its initial function
        Ktr, Ktx = K[:n, :n], K[n:, :n]
        K0_train.append(Ktr)
        rank_train.append(_rank(Ktr))
        rank_train_6.append(_rank(Ktr, 1e-6))
        rank_pool.append(_rank(K))
        evals, evecs = np.linalg.eigh(K)
        for z, sg in enumerate(sig):
            noisy = r[:n] + sg * xi[s]
            pred = _krr_realized(Ktr, Ktx, noisy)
            out["ntk_krr"][z, s] = float(np.mean((pred - r[n:]) ** 2))
            out["ntk_krr_expected"][z, s] = kernel_limit_error(Ktr, Ktx, r[:n], r[n:], 0.0,
                                                               float(sg) ** 2)
            curve = theory_learning_curve((evals, evecs), r, [n], 0.0, float(sg))
            out["spectral_pool"][z, s] = float(curve.Eg[0])
            out["spectral"][z, s] = float(heldout_error(curve, M, 0.0)[0])
    t_kernel = time.perf_counter() - t0

    t0 = time.perf_counter()
    train = _trainer(apply_fn, jnp.asarray(task["x_train"]), jnp.asarray(task["x_test"]),
                     jnp.asarray(task["y_test"], dtype=jnp.float32), cfg.steps, cfg.lr,
                     cfg.n_log)
    # runs ordered (noise, seed): the same init and noise draw at every noise level
    stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *params0)
    runs = jax.tree_util.tree_map(lambda a: jnp.concatenate([a] * Z), stacked)
    Y = np.concatenate([task["y_train"][None, :] + sg * xi for sg in sig])  # (Z*S, n)
    trained, tr_curve, te_curve = train(runs, jnp.asarray(Y, dtype=jnp.float32))
    tr_curve, te_curve = np.asarray(tr_curve, np.float64), np.asarray(te_curve, np.float64)
    out["train_mse"][:] = tr_curve[:, -1].reshape(Z, S)
    out["test_mse"][:] = te_curve[:, -1].reshape(Z, S)
    t_train = time.perf_counter() - t0

    t0 = time.perf_counter()
    for z in range(Z):
        for s in range(S):
            p1 = jax.tree_util.tree_map(lambda a, i=z * S + s: a[i], trained)
            K1 = _ntk64(apply_fn, p1, task["x_train"])
            out["kernel_distance"][z, s], out["kernel_rel_change"][z, s] = \
                _kernel_distance(K0_train[s], K1)
    t_move = time.perf_counter() - t0
    res = {k: v.tolist() for k, v in out.items()}
    res.update(width=int(width), params=param_count_formula(mcfg), rank_train=rank_train,
               rank_train_rtol1e6=rank_train_6, rank_pool=rank_pool,
               train_curve=tr_curve.reshape(Z, S, -1).tolist(),
               test_curve=te_curve.reshape(Z, S, -1).tolist(),
               seconds={"kernel": round(t_kernel, 2), "train": round(t_train, 2),
                        "kernel_after": round(t_move, 2)})
    return res


def infinite_width(cfg: StudyConfig, task: dict, xi: np.ndarray) -> dict:
    """Ridgeless regression with the analytic infinite-width NTK (float64, computed once).

    The linearized infinite network predicts ``f0_t + A (y + sigma xi - f0_X)`` with
    ``A = K_tX K^+`` (the cut of :func:`_krr_realized`) and ``f0 ~ GP(0, NNGP)``; its test
    MSE averaged over ``f0`` is that of the mean predictor ``A (y + sigma xi)`` plus
    ``mean_t diag(S_tt - 2 A S_Xt + A S_XX A^T)`` (``S``: NNGP). Returns lists indexed by
    noise (``ntk_expected``: also averaged over the label noise via
    :func:`kernel_limit_error`; ``ntk_mean_expected``: ``f0 = 0``, the infinite ensemble's
    mean) and ``ntk`` [noise][seed] for the seeds' noise draws.
    """
    from .transformer_infinite import analytic_kernels

    t0 = time.perf_counter()
    n = cfg.n_train
    x_pool = np.concatenate([task["x_train"], task["x_test"]])
    S, K = analytic_kernels(cfg.model(cfg.widths[-1]), x_pool)
    Ktr, Ktx = K[:n, :n], K[n:, :n]
    w, V = np.linalg.eigh(Ktr)
    A = Ktx @ (V * pinv_weights(w, 0.0, float(np.mean(np.diag(Ktr))))) @ V.T  # (t, n)
    f0_term = float(np.mean(np.diag(S[n:, n:]) - 2 * np.sum(A * S[n:, :n], axis=1)
                            + np.sum((A @ S[:n, :n]) * A, axis=1)))
    out: dict = {"ntk_expected": [], "ntk_mean_expected": [], "ntk": [],
                 "f0_variance_term": f0_term, "rank_train": _rank(Ktr)}
    for sg in cfg.noise:
        mean_err = kernel_limit_error(Ktr, Ktx, task["y_train"], task["y_test"], 0.0,
                                      float(sg) ** 2)
        out["ntk_mean_expected"].append(mean_err)
        out["ntk_expected"].append(mean_err + f0_term)
        out["ntk"].append([float(np.mean((A @ (task["y_train"] + sg * x) - task["y_test"]) ** 2))
                           + f0_term for x in xi])
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out


def run_study(cfg: StudyConfig, log: Optional[Callable[[str], None]] = None) -> dict:
    """Run every width; returns the ``results.json`` dict (config, rows, summary, seconds)."""
    t0 = time.perf_counter()
    c0 = time.process_time()
    task = make_task(cfg)
    xi = _noise_draws(cfg)
    inf = infinite_width(cfg, task, xi)
    if log:
        log(f"infinite width (analytic NTK): expected test MSE "
            f"{np.round(inf['ntk_expected'], 3).tolist()} seconds={inf['seconds']}")
    rows = []
    for w in cfg.widths:
        rows.append(_width_runs(cfg, int(w), task, xi))
        if log:
            r = rows[-1]
            log(f"d_model={w:3d} params={r['params']:6d} rank(K_train)={r['rank_train']} "
                f"test={np.round(r['test_mse'], 3).tolist()} "
                f"ntk={np.round(r['ntk_krr_expected'], 3).tolist()} seconds={r['seconds']}")
    return {"config": asdict(cfg), "rows": rows, "summary": summarize(cfg, rows),
            "infinite": inf,
            "infinite_ntk_expected": {f"{sg:g}": v for sg, v in zip(cfg.noise,
                                                                     inf["ntk_expected"])},
            "target_variance_test": float(np.var(task["y_test"])),
            "wall_seconds": round(time.perf_counter() - t0, 1),
            "cpu_seconds": round(time.process_time() - c0, 1)}


# ---------------------------------------------------------------- figures and report

def _print(line: str) -> None:
    print(line, flush=True)


def run(out: str, quick: bool = False, log: Optional[Callable[[str], None]] = _print,
        cfg: Optional[StudyConfig] = None, command: Optional[str] = None) -> dict:
    """The whole study: run it and write its outputs to ``out``.

    ``quick``: :data:`QUICK` sizes (about a minute); ``cfg`` overrides both; ``command`` is
    the command line quoted in report.md.
    """
    from ..storage.ownership import check_dir

    check_dir(out, "study", key="--out")  # before the study's minutes of work
    cfg = cfg or (QUICK if quick else StudyConfig())
    res = run_study(cfg, log=log)
    res["command"] = command or ("python -m ntkscale.studies.transformer_dd --out " + out
                                 + (" --quick" if quick else ""))
    write_outputs(res, out, res["command"])
    if log:
        log(f"wrote {out}/results.json, double_descent.png, kernel_move.png, report.md "
            f"({res['wall_seconds']} s)")
    return res


def replot(out: str) -> dict:
    """Recompute the summary and rewrite results.json, the figures and report.md from the
    per-seed rows of ``out/results.json`` (no training; for changes to the write-up only)."""
    with open(os.path.join(out, "results.json")) as f:
        res = json.load(f)
    cfg = StudyConfig(**{k: tuple(v) if isinstance(v, list) else v
                         for k, v in res["config"].items()})
    res["summary"] = summarize(cfg, res["rows"])
    res["replotted"] = True
    cmd = res.get("command") or f"python -m ntkscale.studies.transformer_dd --out {out}"
    write_outputs(res, out, cmd)
    return res


def main(argv: Optional[Sequence[str]] = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m ntkscale.studies.transformer_dd",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (~1 min): a smoke test")
    ap.add_argument("--replot", action="store_true",
                    help="rewrite the summary, figures and report from OUT/results.json")
    args = ap.parse_args(argv)
    if args.replot:
        replot(args.out)
    else:
        run(args.out, quick=args.quick)


if __name__ == "__main__":  # pragma: no cover
    main()

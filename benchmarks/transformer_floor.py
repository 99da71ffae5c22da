"""Why the study transformer's mean empirical NTK stops approaching the analytic kernel.

The analytic point of the transformer study (``ntkscale.studies.transformer_infinite``) is
neural-tangents' closed form: keys and queries tied, logits ``k.k / d`` (``linear_scaling``).
The study model (``ntkscale.studies.transformer``, ``attention='standard'``) has independent
``W_Q``, ``W_K`` and logits ``q.k / sqrt(d)``. This script measures, on the test's inputs
(6 sequences, V = T = 4, one head, depth 1, MLP ratio 2, float64), for widths d and S seeds:

* ``stax``: the analytic architecture's own finite network
  (``infinite_transformer(cfg, width=d)``) vs its kernel;
* ``standard``: the study model as it is (tanh GELU) vs the tied kernel;
* ``tied_linear``: the study model with ``attention='tied_linear'`` vs the tied kernel;
* ``linear``: independent keys and queries with ``1/d`` logits vs the kernel with logits 0
  (uniform attention, ``W_key_std = 0``), the limit Hron et al. give for that scaling;
* paired differences at the same seed (the same parameters): ``standard - tied_linear``;
  the share of the NTK that passes through the attention logits, ``K - K_nologit`` where
  ``K_nologit`` is the NTK with the attention weights held fixed (a ``stop_gradient`` on
  ``transformer.attention_weights``, patched in this script only), for ``standard`` and
  ``tied_linear``; of it, the query/key weights' share of ``standard`` (its ``wq``, ``wk``
  leaves); ``standard_nologit - tied_linear_nologit`` (random vs deterministic attention
  weights on the value path alone); and exact minus tanh GELU.

Columns: ``gap`` = ``|mean_s K_s - K_ref|_F / |K_ref|_F``; ``noise`` = the standard error of
that mean, ``sqrt(sum of per-entry variances / S) / |K_ref|_F`` (a gap at or below it is
noise); ``per-seed`` = mean over seeds of ``|K_s - K_ref|_F / |K_ref|_F``.

Usage::

    python benchmarks/transformer_floor.py                    # widths 64 ... 1024, 32 seeds
    python benchmarks/transformer_floor.py --widths 64 256 --seeds 8

Writes ``benchmarks/runs/transformer-floor/floor.json``.

References
----------
Hron, Bahri, Sohl-Dickstein & Novak, "Infinite attention: NNGP and NTK for deep attention
networks", ICML 2020 (d^-1/2 scaling: the logits tend to a Gaussian process; d^-1 scaling:
to their mean).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "runs" / "transformer-floor"
N, VOCAB, SEQ = 6, 4, 4


def _gram(jax, jnp, J, n):
    """Per-leaf ``J J^T`` (n, n) of a Jacobian pytree, as {leaf path: array}."""
    out = {}
    for path, j in jax.tree_util.tree_flatten_with_path(J)[0]:
        j = jnp.reshape(j, (n, -1))
        out[jax.tree_util.keystr(path)] = j @ j.T
    return out


def _stats(Ks, ref):
    """gap, noise, bias estimate and per-seed gap of kernels Ks (S, n, n) against ref."""
    D = np.asarray(Ks) - ref
    S, nref = D.shape[0], np.linalg.norm(ref)
    Dm = D.mean(0)
    var = float(np.sum((D - Dm) ** 2) / (S - 1)) if S > 1 else float("nan")
    b2 = float(np.sum(Dm ** 2)) - var / S
    return {"gap": float(np.linalg.norm(Dm) / nref), "noise": float(np.sqrt(var / S) / nref),
            "bias_estimate": float(np.sign(b2) * np.sqrt(abs(b2)) / nref),
            "per_seed": float(np.mean(np.linalg.norm(D, axis=(1, 2))) / nref)}


def _no_logit_grad(jax, tf, fn):
    """``fn`` with the attention weights held fixed in differentiation (patched while traced)."""

    def apply(p, x):
        orig = tf.attention_weights
        tf.attention_weights = lambda *a: jax.lax.stop_gradient(orig(*a))
        try:
            return fn(p, x)
        finally:
            tf.attention_weights = orig

    return apply


def run(widths, seeds, gelu_seeds):
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    from ntkscale.studies import transformer as tf
    from ntkscale.studies.transformer_infinite import (analytic_kernels, infinite_transformer,
                                                        one_hot_positions)

    x = np.random.default_rng(0).integers(0, VOCAB, size=(N, SEQ))  # the test's inputs
    xj, xo = jnp.asarray(x), jnp.asarray(one_hot_positions(x, VOCAB))

    def cfg(d, **kw):
        return tf.TransformerConfig(vocab=VOCAB, seq_len=SEQ, d_model=d, n_heads=1, **kw)

    k_tied = analytic_kernels(cfg(8), x)[1]
    k_unif = analytic_kernels(cfg(8, attention="linear"), x)[1]
    rows = []
    for d in widths:
        t0 = time.perf_counter()
        models = {"standard": cfg(d), "tied_linear": cfg(d, attention="tied_linear"),
                  "linear": cfg(d, attention="linear"),
                  "standard_exact_gelu": cfg(d, gelu_approximate=False)}
        models.update(standard_nologit=models["standard"],
                      tied_linear_nologit=models["tied_linear"])
        jac = {}
        for name, c in models.items():
            fn = tf.make_apply(c)
            if name.endswith("_nologit"):
                fn = _no_logit_grad(jax, tf, fn)
            jac[name] = jax.jit(lambda p, fn=fn: _gram(
                jax, jnp, jax.jacrev(lambda q: fn(q, xj)[:, 0])(p), N))
        init_s, apply_s, _ = infinite_transformer(cfg(d), width=d)
        jac["stax"] = jax.jit(lambda p: _gram(
            jax, jnp, jax.jacrev(lambda q: apply_s(q, xo)[:, 0])(p), N))
        init = {name: jax.jit(lambda key, c=c: tf.init(key, c)) for name, c in models.items()}
        K = {name: [] for name in jac}
        qk = []
        for s in range(seeds):
            key = jax.random.PRNGKey(s)
            for name in models:
                if name == "standard_exact_gelu" and s >= gelu_seeds:
                    continue
                parts = {k: np.asarray(v) for k, v in jac[name](init[name](key)).items()}
                K[name].append(sum(parts.values()))
                if name == "standard":
                    qk.append(sum(v for k, v in parts.items() if "'wq'" in k or "'wk'" in k))
            _, ps = init_s(key, xo.shape)
            K["stax"].append(sum(np.asarray(v) for v in jac["stax"](ps).values()))
        K = {k: np.asarray(v) for k, v in K.items()}
        g = len(K["standard_exact_gelu"])
        row = {"width": int(d), "seeds": int(seeds),
               "stax_vs_kernel": _stats(K["stax"], k_tied),
               "standard_vs_tied_kernel": _stats(K["standard"], k_tied),
               "standard_vs_uniform_kernel": _stats(K["standard"], k_unif),
               "tied_linear_vs_tied_kernel": _stats(K["tied_linear"], k_tied),
               "linear_vs_uniform_kernel": _stats(K["linear"], k_unif),
               "linear_vs_tied_kernel": _stats(K["linear"], k_tied),
               # paired: the same seed's parameters (relative to |k_tied|)
               "paired_standard_minus_tied_linear": _stats(
                   K["standard"] - K["tied_linear"] + k_tied, k_tied),
               "standard_qk_share": _stats(np.asarray(qk) + k_tied, k_tied),
               "standard_logit_path_share": _stats(
                   K["standard"] - K["standard_nologit"] + k_tied, k_tied),
               "tied_linear_logit_path_share": _stats(
                   K["tied_linear"] - K["tied_linear_nologit"] + k_tied, k_tied),
               "paired_nologit_standard_minus_tied_linear": _stats(
                   K["standard_nologit"] - K["tied_linear_nologit"] + k_tied, k_tied),
               "paired_exact_minus_tanh_gelu": _stats(
                   K["standard_exact_gelu"] - K["standard"][:g] + k_tied, k_tied),
               "seconds": round(time.perf_counter() - t0, 1)}
        rows.append(row)
        yield row


def _fmt(st, digits=2):
    return f"{100 * st['gap']:.{digits}f} ±{100 * st['noise']:.{digits}f}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[64, 128, 256, 512, 1024])
    ap.add_argument("--seeds", type=int, default=32)
    ap.add_argument("--gelu-seeds", type=int, default=4,
                    help="seeds for the exact-vs-tanh GELU pair (it is nearly deterministic)")
    ap.add_argument("--out", default=str(OUT / "floor.json"))
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    load0 = os.getloadavg()
    cols = [("stax_vs_kernel", "stax own net"), ("standard_vs_tied_kernel", "standard"),
            ("tied_linear_vs_tied_kernel", "tied_linear"), ("linear_vs_uniform_kernel",
                                                           "linear vs unif."),
            ("paired_standard_minus_tied_linear", "std - tied (pair)"),
            ("standard_logit_path_share", "std logit path"), ("standard_qk_share", "of it Q/K"),
            ("paired_nologit_standard_minus_tied_linear", "value path s-t"),
            ("tied_linear_logit_path_share", "tied logit path"),
            ("paired_exact_minus_tanh_gelu", "GELU ex-tanh")]
    print("relative Frobenius gap in % (± standard error of the mean over seeds)")
    print(f"{'d':>5} | " + " | ".join(f"{c[1]:>17}" for c in cols) + " | per-seed std/tied | s")
    rows = []
    for row in run(args.widths, args.seeds, args.gelu_seeds):
        rows.append(row)
        print(f"{row['width']:5d} | " + " | ".join(
            f"{_fmt(row[c[0]], 4 if 'gelu' in c[0] else 2):>17}" for c in cols)
              + f" | {100 * row['standard_vs_tied_kernel']['per_seed']:5.2f} / "
              f"{100 * row['tied_linear_vs_tied_kernel']['per_seed']:5.2f} | {row['seconds']}",
              flush=True)
    res = {"inputs": {"n": N, "vocab": VOCAB, "seq_len": SEQ, "rng": "default_rng(0)"},
           "model": {"n_heads": 1, "depth": 1, "mlp_ratio": 2, "parameterization": "ntk"},
           "seeds": args.seeds, "gelu_seeds": args.gelu_seeds, "rows": rows,
           "wall_seconds": round(time.perf_counter() - t0, 1),
           "load_average_start_end": [list(load0), list(os.getloadavg())],
           "machine": platform.platform(), "python": platform.python_version()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    print(f"wrote {args.out} ({res['wall_seconds']} s)")


if __name__ == "__main__":
    main()

"""``report.md``: a short human-readable summary of a run directory's metrics."""

from __future__ import annotations

import os
from typing import Any

from .config import JobConfig

__all__ = ["write_report", "format_report"]


def _f(x: Any, fmt: str = ".4g") -> str:
    try:
        return format(float(x), fmt)
    except (TypeError, ValueError):
        return str(x)


def format_report(cfg: JobConfig, m: dict) -> str:
    """Markdown text from a metrics dict (as in ``metrics.json``)."""
    st = m.get("stages", {})
    d, mdl, k = m.get("data", {}), cfg.model, cfg.kernel
    lines = [f"# ntkscale run: {cfg.job['name']}", ""]
    lines += [f"- data: {d.get('name', '?')} ({d.get('task', '?')}), n_train = {d.get('n_train')}, "
              f"n_test = {d.get('n_test')}, d = {d.get('d')}",
              f"- model: depth-{mdl['depth']} {mdl['activation']} net, W_std = {_f(mdl['W_std'])}, "
              f"b_std = {_f(mdl['b_std'])}, {mdl['parameterization']} parameterization; "
              f"kernel {k['kind'].upper()}",
              f"- cluster: {_cluster_line(m.get('cluster', {}))}",
              f"- total time {_f(m.get('total_seconds', 0), '.1f')} s; peak memory: client "
              f"{_f(m.get('memory', {}).get('client_gib', 0), '.2f')} GiB, worker max "
              f"{_f(m.get('memory', {}).get('worker_max_gib', 0), '.2f')} GiB", ""]
    lines += ["| stage | seconds | result |", "|---|---:|---|"]
    for name, v in st.items():
        lines.append(f"| {name} | {_f(v.get('seconds', 0), '.1f')} | {_summary(name, v)} |")
    lines.append("")
    if "curve" in st:
        c = st["curve"]
        lines += ["## Learning curve (test MSE; experiment = mean ± SEM over trials)", "",
                  "| p | experiment | ± | theory | exp/theory − 1 |", "|---:|---:|---:|---:|---:|"]
        for row in zip(c["p"], c["experiment_mean"], c["experiment_sem"], c["theory"],
                       c["relative_deviation"]):
            lines.append("| " + " | ".join([str(row[0])] + [_f(x) for x in row[1:4]]
                                            + [f"{float(row[4]):+.1%}"]) + " |")
        lines.append("")
    figs = m.get("figures", {})
    if figs:
        lines += ["## Figures", ""] + [f"![{n}](figures/{os.path.basename(p)})" for n, p in figs.items()]
    return "\n".join(lines) + "\n"


def _cluster_line(c: dict) -> str:
    if not c:
        return "?"
    parts = [str(c.get("kind", "?"))]
    for key in ("address", "workers", "threads_per_worker", "dashboard"):
        if c.get(key):
            parts.append(f"{key} {c[key]}")
    if c.get("tls"):
        parts.append("TLS")
    return ", ".join(parts)


def _summary(name: str, v: dict) -> str:
    if "skipped" in v:
        return f"skipped: {v['skipped']}"
    if name == "gram":
        return (f"{v['n']}×{v['n']} {'+'.join(v['kinds'])}, tile {v['tile']}, {v['tiles']} tiles "
                f"({v['computed']} computed now), {v['bytes_on_disk'] / 2**30:.2f} GiB on disk")
    if name == "fit":
        s = (f"{v['method']}, ridge {_f(v['ridge'])} ({_f(v['ridge_relative'], '.2g')} × mean diag, "
             f"{v.get('ridge_rule')}), residual {_f(v['relative_residual'], '.2g')}, "
             f"{v['passes']} passes")
        return s + (f", train accuracy {v['train_accuracy']:.4f}" if "train_accuracy" in v else "")
    if name == "predict":
        acc = f"test accuracy **{v['test_accuracy']:.4f}**, " if "test_accuracy" in v else ""
        r2 = f", R² {v['test_r2']:.4f}" if "test_r2" in v else ""
        return f"{acc}test MSE {_f(v['test_mse'])}{r2} on {v['n_test']} points"
    if name == "spectrum":
        return (f"top {v['k']} eigenvalues of K/n in {v['passes']} passes; power law exponent "
                f"{_f(v['power_law_exponent'], '.3f')} on ranks {v['power_law_window']}; "
                f"{v['trace_fraction_in_top_k']:.1%} of the trace, "
                f"{v['target_power_in_top_k']:.1%} of the target power in the top k")
    if name == "curve":
        dev = max(abs(float(x)) for x in v["relative_deviation"])
        return f"{len(v['p'])} sizes × {v['trials']} trials; max |exp/theory − 1| = {dev:.1%}"
    if name == "dynamics":
        s = f"{len(v['t'])} times, final train loss {_f(v['train_loss'][-1])}"
        return s + (f", final test loss {_f(v['test_loss'][-1])}" if "test_loss" in v else "")
    return ""


def write_report(cfg: JobConfig, metrics: dict, path: str) -> str:
    """Write ``report.md`` and return its text."""
    text = format_report(cfg, metrics)
    with open(path, "w") as f:
        f.write(text)
    return text

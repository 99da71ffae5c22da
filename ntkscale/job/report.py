"""``report.md``: a short human-readable summary of a run directory's metrics."""

from __future__ import annotations

import os
from typing import Any

from . import registry
from .config import JobConfig

__all__ = ["write_report", "format_report", "format_number"]


def format_number(x: Any, fmt: str = ".4g") -> str:
    """``x`` formatted as a number (``fmt``), or as text when it is not one."""
    try:
        return format(float(x), fmt)
    except (TypeError, ValueError):
        return str(x)


def _net(mdl: dict) -> str:
    """``depth-3 relu net`` (fully connected) or ``cntk, 2 conv layers 3x3 SAME, relu, 28x28x1 images``
    (``3-tap`` windows and ``8x8 sequences`` for ``sequence_shape``)."""
    kind = mdl.get("architecture", "fc")
    if kind == "fc":
        return f"depth-{mdl['depth']} {mdl['activation']} net"
    if kind == "transformer":
        seq = mdl.get("sequence_shape") or []
        shape = "x".join(str(v) for v in (seq or mdl["image_shape"]))
        return (f"transformer, {mdl['depth']} blocks ({mdl.get('heads', 1)}-head {mdl.get('attention')} attention, "
                f"LayerNorm, {mdl['activation']} MLP), {mdl.get('readout')} readout, "
                f"{shape} {'sequences' if seq else 'images'}")
    seq = mdl.get("sequence_shape") or []
    shape = "x".join(str(v) for v in (seq or mdl["image_shape"]))
    what = "sequences" if seq else "images"
    if kind == "cntk":
        window = f"{mdl['filter']}-tap" if seq else f"{mdl['filter']}x{mdl['filter']}"
        return (f"cntk, {mdl['depth']} conv layers {window} {mdl['padding']} + "
                f"{mdl['activation']}, Flatten readout, {shape} {what}")
    pool = "2-tap" if seq else "2x2"
    return f"myrtle-{mdl['depth']} ({mdl['activation']}, {pool} average pooling), {shape} {what}"


def format_report(cfg: JobConfig, m: dict) -> str:
    """Markdown text from a metrics dict (as in ``metrics.json``)."""
    st = m.get("stages", {})
    d, mdl, k = m.get("data", {}), cfg.model, cfg.kernel
    lines = [f"# ntkscale run: {cfg.job['name']}", ""]
    lines += [f"- data: {d.get('name', '?')} ({d.get('task', '?')}), n_train = {d.get('n_train')}, "
              f"n_test = {d.get('n_test')}, d = {d.get('d')}",
              *([f"- task {d.get('task')}: {d['task_reason']}"] if d.get("task_reason") else []),
              *[f"- **warning** (task): {w}" for w in d.get("task_doubts", [])],
              f"- model: {_net(mdl)}, W_std = {format_number(mdl['W_std'])}, "
              f"b_std = {format_number(mdl['b_std'])}, {mdl['parameterization']} parameterization; "
              f"kernel {k['kind'].upper()}",
              f"- cluster: {_cluster_line(m.get('cluster', {}))}",
              f"- total time {format_number(m.get('total_seconds', 0), '.1f')} s; peak memory: client "
              f"{format_number(m.get('memory', {}).get('client_gib', 0), '.2f')} GiB, worker max "
              f"{format_number(m.get('memory', {}).get('worker_max_gib', 0), '.2f')} GiB", ""]
    lines += ["| stage | seconds | result |", "|---|---:|---|"]
    for name, v in st.items():
        lines.append(f"| {name} | {format_number(v.get('seconds', 0), '.1f')} | {_summary(name, v)} |")
    lines.append("")
    if "curve" in st:
        c = st["curve"]
        lines += ["## Learning curve (test MSE; experiment = mean ± SEM over trials)", "",
                  "| p | experiment | ± | theory | exp/theory − 1 |", "|---:|---:|---:|---:|---:|"]
        for row in zip(c["p"], c["experiment_mean"], c["experiment_sem"], c["theory"],
                       c["relative_deviation"]):
            lines.append("| " + " | ".join([str(row[0])] + [format_number(x) for x in row[1:4]]
                                            + [f"{float(row[4]):+.1%}"]) + " |")
        lines.append("")
    figs = m.get("figures", {})
    if figs:
        lines += ["## Figures", ""] + [f"![{n}](figures/{os.path.basename(p)})" for n, p in figs.items()]
    return "\n".join(lines) + "\n"


def _cluster_line(c: dict) -> str:
    if not c:
        return "?"
    from ..clusters.ledger import summary_line

    parts = [str(c.get("kind", "?"))]
    if "workers_joined" in c or c.get("kind") == "sync":  # the worker ledger: what ran
        keys: tuple[str, ...] = ("address", "dashboard")
        parts.append(summary_line(c))
    else:  # metrics.json of an older run
        keys = ("address", "workers", "threads_per_worker", "dashboard")
    for key in keys:
        if c.get(key):
            parts.append(f"{key} {c[key]}")
    if c.get("tls"):
        parts.append("TLS")
    return ", ".join(parts)


def _summary(name: str, v: dict) -> str:
    """The stage's one-line result (its registered ``summary``); skipped stages say why."""
    if "skipped" in v:
        return f"skipped: {v['skipped']}"
    try:
        stage = registry.get_stage(name)
    except ValueError:  # metrics of a stage this version does not know
        return ""
    return stage.summary(v)


def write_report(cfg: JobConfig, metrics: dict, path: str) -> str:
    """Write ``report.md`` and return its text."""
    text = format_report(cfg, metrics)
    with open(path, "w") as f:
        f.write(text)
    return text

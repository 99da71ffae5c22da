"""One list of job stages: name, config section, run function, report line, planner inputs.

Everything that lists stages reads this registry: the job schema (``job.stages`` choices,
the stage-owned config sections and their defaults), :func:`ntkscale.job.run_stages`,
``report.md``, the CLI's per-stage commands and the planner (``ntkscale plan``). A stage
is one module that calls :func:`register` once; its module name goes into
:data:`STAGE_MODULES` (the built-in stages: :mod:`ntkscale.job.builtin_stages`).

    >>> from ntkscale.job.registry import stage_names
    >>> stage_names()[:3]
    ('gram', 'fit', 'predict')
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional

if TYPE_CHECKING:
    from .config import JobConfig
    from .context import JobContext

__all__ = ["SHARED_SECTIONS", "Stage", "PlanSizes", "register", "get_stage", "stages", "stage_names",
           "default_stages", "stage_sections", "active_stages", "STAGE_MODULES"]

#: Modules that register stages, imported (in this order) on the first registry lookup.
#: Adding a stage: write its module (one ``register(Stage(...))`` call) and list it here.
STAGE_MODULES = ("ntkscale.job.builtin_stages", "ntkscale.job.export", "ntkscale.job.forecast")


@dataclass(frozen=True)
class PlanSizes:
    """What the planner knows besides the config: sizes of the data and the architecture.

    Attributes
    ----------
    n, d : int
        Training rows and input features.
    n_test : int
        Test rows.
    n_outputs : int
        Right-hand sides C (classes for one-hot classification).
    arch : Layer
        The ``[model]`` section as an architecture (:func:`ntkscale.job.model.build_arch`).
    """

    n: int
    d: int
    n_test: int
    n_outputs: int
    arch: Any


@dataclass(frozen=True)
class Stage:
    """One stage of a job.

    Attributes
    ----------
    name : str
        The stage name (``job.stages`` entry, CLI command, ``metrics.json`` key).
    run : callable
        ``run(ctx: JobContext) -> dict``: does the step and returns its metrics (a
        ``"skipped"`` entry says why nothing was done).
    summary : callable
        ``summary(metrics: dict) -> str``: its one-line result in ``report.md``.
    section : str, optional
        The config table the stage owns (``[spectrum]``); ``None`` for stages configured by
        the shared sections only (``[kernel]``, ``[solver]``).
    parse : callable, optional
        ``parse(table: dict) -> dict``: validates the section (errors name the key, as
        :class:`ntkscale._config.ConfigError`) and fills its defaults; required with ``section``.
        A section with an ``enabled`` key switches the stage: off removes a default stage
        from ``job.run``, on adds an optional one to ``job.stages``.
    default : bool
        Part of the default ``job.stages``.
    plan : callable, optional
        ``plan(cfg: JobConfig, sizes: PlanSizes) -> dict``: the stage's inputs to the planner,
        as keyword arguments of :func:`ntkscale.plan.estimate` (e.g. ``spectrum_k``). The
        cost formulas live in :mod:`ntkscale.plan` (layer 8, above the job); ``None``: the
        planner has no cost model for this stage and says so in the plan's notes.
    description : str
        One line for the CLI's command help.
    store : {'reads', 'builds', 'none'}
        What the stage does with the train Gram store: the run's pre-flight check (before
        anything is written) asks a stage that ``'reads'`` it for a finished store of this
        job's data and model, and one that ``'builds'`` it for a location it may write.
    needs : tuple of (stage, file)
        Files of the run directory the stage reads, and the stage that writes each: the
        pre-flight check refuses a run where such a stage is neither run before it nor has
        left its file (e.g. ``forecast`` needs ``spectrum``'s ``spectrum.npz``).
    check : callable, optional
        ``check(ctx: JobContext) -> None``: what the stage can verify once the data are loaded
        (their size, say), run by the pre-flight before anything is written or computed; raises
        :class:`ntkscale._config.ConfigError` naming the setting.
    """

    name: str
    run: Callable[["JobContext"], dict]
    summary: Callable[[dict], str]
    section: Optional[str] = None
    parse: Optional[Callable[[Mapping[str, Any]], dict]] = None
    default: bool = False
    plan: Optional[Callable[["JobConfig", PlanSizes], dict]] = None
    description: str = ""
    store: str = "none"
    needs: tuple = ()
    check: Optional[Callable[["JobContext"], None]] = None

    def __post_init__(self) -> None:
        if self.store not in ("reads", "builds", "none"):
            raise ValueError(f"stage {self.name!r}: store must be 'reads', 'builds' or 'none'")
        if (self.section is None) != (self.parse is None):
            raise ValueError(f"stage {self.name!r}: give both section and parse, or neither")


_REGISTRY: dict[str, Stage] = {}
_loaded = _loading = False
#: The job file's tables that no stage owns (read by several stages and the planner).
SHARED_SECTIONS = ("job", "data", "cluster", "model", "kernel", "solver")


def register(stage: Stage) -> Stage:
    """Add a stage (listed in call order: ``STAGES``, the CLI, ``config.resolved.json``); returns it.

    Raises
    ------
    ValueError
        The name or the section is taken (by another stage or a shared section).
    """
    _load()  # the built-in stages first, whoever registers first
    if stage.name in _REGISTRY:
        raise ValueError(f"a stage named {stage.name!r} is already registered")
    taken = set(SHARED_SECTIONS) | {s.section for s in _REGISTRY.values() if s.section}
    if stage.section in taken:
        raise ValueError(f"stage {stage.name!r}: config section [{stage.section}] is already used")
    _REGISTRY[stage.name] = stage
    return stage


def _load() -> None:
    global _loaded, _loading
    if _loaded or _loading:  # _loading: a stage module's own imports came back here
        return
    _loading = True
    try:
        for mod in STAGE_MODULES:
            importlib.import_module(mod)
        _loaded = True
    finally:
        _loading = False


def stages() -> tuple[Stage, ...]:
    """Every registered stage, in run order."""
    _load()
    return tuple(_REGISTRY.values())


def stage_names() -> tuple[str, ...]:
    """The names of :func:`stages`."""
    return tuple(s.name for s in stages())


def get_stage(name: str) -> Stage:
    """The stage called ``name``; a ``ValueError`` listing the stages otherwise."""
    _load()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown stage {name!r}; stages are: {', '.join(_REGISTRY)}") from None


def default_stages() -> list[str]:
    """``job.stages`` when the job file does not list them."""
    return [s.name for s in stages() if s.default]


def stage_sections() -> dict[str, Stage]:
    """Config section name → the stage that owns it."""
    return {s.section: s for s in stages() if s.section}


def active_stages(cfg: "JobConfig") -> list[str]:
    """The stages ``ntkscale run`` runs: ``job.stages`` less the default stages whose section
    says ``enabled = false``."""
    out = []
    for name in cfg.job["stages"]:
        st = get_stage(name)
        sec = cfg.sections.get(st.section, {}) if st.section else {}
        if st.default and sec.get("enabled", True) is False:
            continue
        out.append(name)
    return out

"""The import direction of the package's layers, enforced by an AST walk over ntkscale/.

Each top-level unit (module or subpackage) has a layer; a unit imports only from its own
layer or lower ones. The pure-math units (kernels, empirical, spectral, solvers) also import no
operator, tiling, store or cluster code, and no dask/zarr/fsspec. Imports under
``if TYPE_CHECKING:`` are annotations only and not counted. The map is README's
"Architecture" section; a change that needs an upward import moves code instead.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "ntkscale"

# lowest first; a unit may import units of its own layer or below
LAYERS = [
    {"errors", "linop", "_config", "_blas", "kernels", "empirical", "stax", "testing",
     "__version__"},                              # 0 contracts, pure math, the BLAS-thread guard
    {"storage", "runner"},                        # 1 zarr stores; the dask runner
    {"tiling", "data"},                           # 2 tiles as tasks; datasets
    {"operator", "_blocks"},                      # 3 the stored operator
    {"spectral"},                                 # 4 theory, curves (on the operator contract)
    {"solvers"},                                  # 5 solvers (on the operator contract)
    {"pipeline"},                                 # 6 the fit/predict core of estimators and job
    {"estimators", "plots", "clusters", "predict"},  # 7 sklearn and nt.predict facades, figures, cluster specs
    {"job", "studies"},                           # 8 the job: config, stages, report; studies
    {"plan"},                                     # 9 the planner (reads the parsed JobConfig)
    {"cli", "demo", "__init__"},                  # 10 entry points
]
RANK = {unit: i for i, units in enumerate(LAYERS) for unit in units}
PURE = {"kernels", "empirical", "spectral", "solvers"}
PURE_MAY_IMPORT = {"errors", "linop", "kernels", "empirical", "stax", "spectral", "solvers", "_config",
                   "testing", "_blas"}
HEAVY = {"dask", "distributed", "zarr", "fsspec", "numcodecs"}
# known exceptions, each with its reason (issue 13 lists them; remove an entry when fixed)
ALLOWED: dict[tuple[str, str], str] = {}
ALLOWED_HEAVY: dict[tuple[str, str], str] = {}


def _unit(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return "__init__" if parts == ("__init__",) else parts[0]


def _package(path: pathlib.Path) -> list[str]:
    parts = ["ntkscale", *path.relative_to(ROOT).with_suffix("").parts]
    return parts if path.name == "__init__.py" else parts[:-1]


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skip


def _imports(path: pathlib.Path, source: str | None = None):
    """(target unit or third-party top name, is_internal, line) for every import in a file."""
    tree = ast.parse(path.read_text() if source is None else source, filename=str(path))
    skip = _type_checking_nodes(tree)
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = _package(path)[: len(_package(path)) - node.level + 1]
                target = base + (node.module.split(".") if node.module else [])
            else:
                target = (node.module or "").split(".")
            if target[0] != "ntkscale":
                yield target[0], False, node.lineno
            elif len(target) == 1:  # from ntkscale import x / from . import x (at the top)
                for alias in node.names:
                    yield alias.name, True, node.lineno
            else:
                yield target[1], True, node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "ntkscale":
                    if len(parts) > 1:
                        yield parts[1], True, node.lineno
                else:
                    yield parts[0], False, node.lineno


FILES = sorted(ROOT.rglob("*.py"))


def test_every_unit_has_a_layer():
    units = {_unit(f) for f in FILES}
    assert units - set(RANK) == set(), "new top-level unit: give it a layer in tests/test_layers.py"


def test_imports_go_down():
    bad = []
    for f in FILES:
        src = _unit(f)
        for target, internal, line in _imports(f):
            if not internal or target == src or target not in RANK:
                continue
            if RANK[target] > RANK[src] and (src, target) not in ALLOWED:
                bad.append(f"{f.relative_to(ROOT.parent)}:{line}: {src} (layer {RANK[src]}) imports "
                           f"{target} (layer {RANK[target]})")
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_pure_units_see_only_contracts():
    bad = []
    for f in FILES:
        src = _unit(f)
        if src not in PURE:
            continue
        for target, internal, line in _imports(f):
            if internal and target not in PURE_MAY_IMPORT:
                bad.append(f"{f.relative_to(ROOT.parent)}:{line}: {src} imports ntkscale.{target}")
            if not internal and target in HEAVY:
                bad.append(f"{f.relative_to(ROOT.parent)}:{line}: {src} imports {target}")
    assert not bad, ("pure-math units must see the operator contract (ntkscale.linop) only:\n"
                     + "\n".join(bad))


def test_only_storage_touches_zarr_and_fsspec():
    bad = []
    for f in FILES:
        src = _unit(f)
        for target, internal, line in _imports(f):
            if not internal and target in ("zarr", "fsspec", "numcodecs") and src not in ("storage", "plan") \
                    and (src, target) not in ALLOWED_HEAVY:
                bad.append(f"{f.relative_to(ROOT.parent)}:{line}: {src} imports {target}")
    assert not bad, "zarr/fsspec outside ntkscale/storage:\n" + "\n".join(bad)


@pytest.mark.parametrize("source, expect", [
    ("from ..operator import StoredGram\n", ("operator", True)),
    ("import zarr\n", ("zarr", False)),
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..operator import X\n", ("typing", False)),
    ("from . import pcg\n", ("solvers", True)),
    ("from .. import stax\n", ("stax", True)),
])
def test_the_walker_sees_imports(source, expect):
    # the checker itself can fail: relative imports resolve, TYPE_CHECKING blocks are skipped
    got = [(t, i) for t, i, _ in _imports(ROOT / "solvers" / "api.py", source)]
    assert got == [expect]

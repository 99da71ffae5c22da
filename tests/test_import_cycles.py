"""No import circle anywhere in ntkscale, and ``ntkscale/kernels/`` as a one-way stack (issue 22).

The graph is read from the source (AST), like ``../shared/tools/import_cycles.py``: an
import counts wherever it is written, at the top of a module or inside a function (a
function-level import only runs later; it still makes the two modules one unit that cannot
be understood, tested or moved apart). An import under ``if TYPE_CHECKING:`` is an
annotation and does not count. A name taken from a package's ``__init__`` (``from . import
NAME``) is an edge to that ``__init__``; a submodule taken from it (``from . import mod``)
is an edge to the submodule.

``tests/test_layers.py`` checks the direction between the top-level units; this file checks
that inside them nothing runs in a circle, and that ``kernels/`` keeps the order of its house
(STYLE.md): state and array math, the ``Layer`` base, the layer families (which never import
each other), the combinators, the name lists, the entry points.
"""

from __future__ import annotations

import ast
import pathlib
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "ntkscale"


# ----------------------------------------------------------------------------
# The checker
# ----------------------------------------------------------------------------
def module_files(root: pathlib.Path) -> dict[str, pathlib.Path]:
    """Dotted module name -> file, for every ``.py`` file under the package ``root``."""
    mods = {}
    for f in sorted(root.rglob("*.py")):
        parts = f.relative_to(root.parent).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return mods


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skip


def _known(name: str, mods: dict) -> str:
    """``name`` or its longest prefix that is a module of the package ('' if none)."""
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name


def import_targets(path: pathlib.Path, name: str, mods: dict) -> set[str]:
    """Modules of the package that module ``name`` (file ``path``) imports."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skip = _type_checking_nodes(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    own = {".".join(package.split(".")[:i]) for i in range(1, package.count(".") + 2)}  # ancestors
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                src = ".".join(base + ([node.module] if node.module else []))
            else:
                src = node.module or ""
            for alias in node.names:
                sub = f"{src}.{alias.name}"
                if sub in mods:  # a submodule: it runs; its package runs too unless it is ours
                    out.add(sub)
                    if src not in own:
                        out.add(_known(src, mods))
                else:  # a name: the module that defines it
                    out.add(_known(src, mods))
        elif isinstance(node, ast.Import):
            out |= {_known(alias.name, mods) for alias in node.names}
    return {t for t in out if t and t != name}


def import_graph(root: pathlib.Path) -> dict[str, set[str]]:
    """Module -> modules of the same top-level package it imports."""
    mods = module_files(root)
    return {name: import_targets(f, name, mods) for name, f in mods.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles: strongly connected sets of two or more modules (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return sorted(found)


GRAPH = import_graph(ROOT)


def test_no_import_circle_in_ntkscale():
    found = circles(GRAPH)
    assert not found, "import circles (python ../shared/tools/import_cycles.py ntkscale):\n" + "\n".join(
        f"  {len(c)} modules: " + ", ".join(c) for c in found)


def test_the_walker_resolves_the_real_imports():
    # not vacuous: relative, function-level and package imports all become edges
    assert {"ntkscale.kernels.base", "ntkscale.kernels.fused", "ntkscale.kernels.images"} <= \
        GRAPH["ntkscale.kernels.api"]
    assert "ntkscale.kernels._numba_kernels" in GRAPH["ntkscale.kernels.fused"]  # inside a function
    assert "ntkscale.kernels" in GRAPH["ntkscale.tiling.build"]  # from ..kernels import Layer


# ----------------------------------------------------------------------------
# The checker can fail: synthetic packages
# ----------------------------------------------------------------------------
def _package(tmp_path: pathlib.Path, files: dict[str, str]) -> pathlib.Path:
    root = tmp_path / "pkg"
    for rel, src in {"__init__.py": "", **files}.items():
        f = root / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(textwrap.dedent(src))
    return root


@pytest.mark.parametrize("files, expect", [
    pytest.param({"a.py": "from .b import f\n", "b.py": "from .a import g\n"},
                 [["pkg.a", "pkg.b"]], id="two modules"),
    pytest.param({"a.py": "from .b import f\n", "b.py": "def h():\n    from .a import g\n"},
                 [["pkg.a", "pkg.b"]], id="function-level import counts"),
    pytest.param({"a.py": "from .b import f\n",
                  "b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import g\n"},
                 [], id="TYPE_CHECKING import does not count"),
    pytest.param({"a.py": "from . import b\n", "b.py": "import pkg.a\n"},
                 [["pkg.a", "pkg.b"]], id="submodule via the package, absolute import"),
    pytest.param({"__init__.py": "from .a import f\nVERSION = 1\n", "a.py": "from . import VERSION\n"},
                 [["pkg", "pkg.a"]], id="a name from the package init"),
    pytest.param({"__init__.py": "from .a import f\n", "a.py": "from . import b\n", "b.py": "x = 1\n"},
                 [], id="a submodule from the own package is not a circle"),
    pytest.param({"sub/__init__.py": "", "sub/x.py": "from .. import c\n", "c.py": "from .sub.x import y\n"},
                 [["pkg.c", "pkg.sub.x"]], id="nested package, from .. import"),
    pytest.param({"a.py": "from .b import f\n", "b.py": "from .c import f\n", "c.py": "from .a import f\n",
                  "d.py": "from .a import f\n"},
                 [["pkg.a", "pkg.b", "pkg.c"]], id="three-module circle, d outside it"),
])
def test_the_checker_finds_circles(tmp_path, files, expect):
    assert circles(import_graph(_package(tmp_path, files))) == expect


# ----------------------------------------------------------------------------
# kernels/: the house, lowest first (STYLE.md; README "Architecture")
# ----------------------------------------------------------------------------
KERNELS_STACK = [
    # (level, modules, highest level its modules may import from)
    ("state and array math", {"state", "backend", "validate", "elementwise", "spatial", "train", "posemb",
                              "elementwise_nt", "_numba_kernels", "_numba_conv", "_numba_pool", "windows"}, 0),
    ("Layer base, registration tables, entry-point hooks", {"base"}, 0),
    ("layer families (never each other)", {"dense", "activations", "activations_nt", "conv", "tile_kernel",
                                           "refused", "norm", "attention", "conv_variants"}, 1),
    ("combinators (the base only, like a family)", {"combinators"}, 1),
    ("name lists", {"layers", "registry"}, 4),
    ("entry points", {"fused", "conv_fused", "images", "network", "presets", "api", "batching"}, 5),
    ("package namespace", {"__init__"}, 5),
]
KERNEL_LEVEL = {m: i for i, (_, mods, _) in enumerate(KERNELS_STACK) for m in mods}


def _kernels_unit(module: str) -> str:
    return "__init__" if module == "ntkscale.kernels" else module.rpartition(".")[2]


def test_every_kernels_module_has_a_level():
    units = {_kernels_unit(m) for m in GRAPH if m == "ntkscale.kernels" or m.startswith("ntkscale.kernels.")}
    assert units - set(KERNEL_LEVEL) == set(), \
        "new module in ntkscale/kernels/: give it a level in KERNELS_STACK (tests/test_import_cycles.py)"


def test_kernels_imports_go_down_the_stack():
    bad = []
    for module, targets in GRAPH.items():
        if not (module == "ntkscale.kernels" or module.startswith("ntkscale.kernels.")):
            continue
        src = KERNEL_LEVEL[_kernels_unit(module)]
        for t in sorted(targets):
            if not t.startswith("ntkscale.kernels."):
                continue
            dst = KERNEL_LEVEL[_kernels_unit(t)]
            if dst > KERNELS_STACK[src][2]:
                bad.append(f"{module} ({KERNELS_STACK[src][0]}) imports {t} ({KERNELS_STACK[dst][0]})")
    assert not bad, "kernels/ imports against the stack:\n" + "\n".join(bad)

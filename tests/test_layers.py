"""The import layers of the shipped packages (docs/architecture.md), enforced.

Every import of every shipped module counts: module level, inside functions, under
``TYPE_CHECKING`` (a type-only cycle still ties two modules together) and relative ones.
A module may import only modules of its own layer or lower ones, nothing may form an
import cycle, and nothing shipped may import test code. ``importlib`` by name (the
``collab`` command table) is not an import and is not seen.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ("collab", "edge_node", "cloud_node", "coordinator")

# Lowest first. "pkg.*" is the package and everything below it; a plain name is that module.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "foundation",
        (
            "collab.errors",
            "collab.log",
            "collab.extras",
            "collab.signals",
            "collab.metrics_http",
            "collab.procs",
            "collab.settings",
            "collab.yamlcfg",
            "collab.setting_keys",
            "collab.files",
        ),
    ),
    # formats and the example model zoo: each depends on the foundation only
    (
        "leaves",
        (
            "collab.bundle",
            "collab.chain",
            "collab.codec.*",
            "collab.ort",
            "collab.proto.*",
            "collab.models.*",
        ),
    ),
    (
        "mechanisms",
        (
            "collab.net.*",
            "collab.transport",
            "collab.rpc_status",
            "collab.split.*",
            "collab.emulator.*",
        ),
    ),
    ("decision", ("collab.decision",)),
    # the libraries each role is built from; ``collab`` is the SDK facade over collab.edge
    (
        "services",
        (
            "collab",
            "collab.edge.*",
            "collab.control.*",
            "collab.fl.*",
            "collab.optimize.*",
            "cloud_node.*",
        ),
    ),
    ("roles", ("coordinator.*", "edge_node.*")),
    ("applications", ("collab.scenario.*", "collab.deploy.*", "collab.cli", "collab.cli_fl")),
)
TEST_ONLY = ("tests", "pytest", "hypothesis", "trustme")


@dataclass(repr=False)  # pytest prints fixture values: keep failures readable
class ImportGraph:
    """Edges between the modules of some packages: importer -> {imported: first line}."""

    edges: dict[str, dict[str, int]] = field(default_factory=dict)
    external: dict[str, dict[str, int]] = field(default_factory=dict)  # top-level names outside
    missing: list[str] = field(default_factory=list)  # imports of package modules that do not exist


def module_files(root: Path, packages: Iterable[str]) -> dict[str, tuple[Path, bool]]:
    """Module name -> (file, is a package) for every ``.py`` file of ``packages`` under ``root``."""
    out: dict[str, tuple[Path, bool]] = {}
    for pkg in packages:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            is_pkg = parts[-1] == "__init__"
            out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


def import_graph(root: Path, packages: Sequence[str]) -> ImportGraph:
    files = module_files(root, packages)
    g = ImportGraph()
    for name, (path, is_pkg) in files.items():
        edges = g.edges.setdefault(name, {})
        external = g.external.setdefault(name, {})
        here = name if is_pkg else name.rpartition(".")[0]

        def add(
            target: str,
            line: int,
            *,
            edges: dict[str, int] = edges,
            name: str = name,
            external: dict[str, int] = external,
            path: Path = path,
        ) -> None:
            if target.split(".")[0] not in packages:
                external.setdefault(target.split(".")[0], line)
            elif target in files:
                if target != name:
                    edges.setdefault(target, line)
            else:
                g.missing.append(f"{path.relative_to(root)}:{line}: no module {target}")

        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    add(alias.name, node.lineno)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")[: len(here.split(".")) - node.level + 1]
                    module = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    module = node.module or ""
                for (
                    alias
                ) in node.names:  # `from pkg import mod` imports pkg.mod, else a name of pkg
                    sub = f"{module}.{alias.name}"
                    add(sub if sub in files else module, node.lineno)
    return g


def tangles(edges: Mapping[str, Mapping[str, int]]) -> list[set[str]]:
    """Strongly connected components of more than one module (Tarjan), smallest name first."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[set[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, {})):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for v in sorted(edges):
        if v not in index:
            connect(v)
    return sorted(out, key=min)


def find_cycles(edges: Mapping[str, Mapping[str, int]]) -> list[list[str]]:
    """One cycle (a path ending where it starts) per tangle."""
    return [_cycle_in(comp, edges) for comp in tangles(edges)]


def _cycle_in(comp: set[str], edges: Mapping[str, Mapping[str, int]]) -> list[str]:
    """The shortest cycle through the component's smallest module (breadth-first)."""
    start = min(comp)
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(edges.get(v, {})):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [*reversed(path), start]
                if w in comp and w not in parent:
                    parent[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"not a cycle: {comp}")


def layer_of(module: str, layers: Sequence[tuple[str, Sequence[str]]]) -> int | None:
    """Index of the module's layer: an exact entry, else the longest ``pkg.*`` containing it."""
    best: tuple[int, int] | None = None  # (specificity, layer)
    for i, (_, entries) in enumerate(layers):
        for e in entries:
            if e == module:
                return i
            pkg = e.removesuffix(".*")
            if (
                e.endswith(".*")
                and (module == pkg or module.startswith(pkg + "."))
                and (best is None or len(pkg) > best[0])
            ):
                best = (len(pkg), i)
    return None if best is None else best[1]


def layer_violations(
    edges: Mapping[str, Mapping[str, int]], layers: Sequence[tuple[str, Sequence[str]]]
) -> list[str]:
    out = []
    for src in sorted(edges):
        a = layer_of(src, layers)
        for dst, line in sorted(edges[src].items()):
            b = layer_of(dst, layers)
            if a is not None and b is not None and b > a:
                out.append(f"{src}:{line} ({layers[a][0]}) imports {dst} ({layers[b][0]})")
    return out


def _cycle_text(cycle: Sequence[str], edges: Mapping[str, Mapping[str, int]]) -> str:
    return (
        " -> ".join(f"{a}:{edges[a][b]}" for a, b in itertools.pairwise(cycle)) + f" -> {cycle[-1]}"
    )


@pytest.fixture(scope="module")
def shipped() -> ImportGraph:
    return import_graph(ROOT, SHIPPED)


def _none(found: Sequence[str], what: str) -> None:
    assert not found, f"{len(found)} {what}:\n" + "\n".join(found)


def test_every_shipped_import_resolves(shipped: ImportGraph) -> None:
    _none(shipped.missing, "imports of shipped modules that do not exist")


def test_shipped_modules_have_no_import_cycles(shipped: ImportGraph) -> None:
    _none(
        [
            f"{_cycle_text(_cycle_in(t, shipped.edges), shipped.edges)}  (tangled: {', '.join(sorted(t))})"
            for t in tangles(shipped.edges)
        ],
        "import cycles",
    )


def test_every_shipped_module_has_a_layer(shipped: ImportGraph) -> None:
    _none(
        [m for m in sorted(shipped.edges) if layer_of(m, LAYERS) is None],
        "modules in no layer (add them to LAYERS and docs/architecture.md)",
    )


def test_shipped_modules_import_only_their_layer_or_lower(shipped: ImportGraph) -> None:
    _none(layer_violations(shipped.edges, LAYERS), "imports of a higher layer")


def test_nothing_shipped_imports_test_code(shipped: ImportGraph) -> None:
    _none(
        [
            f"{m}:{ext[t]} imports {t}"
            for m, ext in sorted(shipped.external.items())
            for t in sorted(ext)
            if t in TEST_ONLY
        ],
        "imports of test code",
    )


def _tree(root: Path, files: Mapping[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


def test_checker_finds_cycles_through_function_level_relative_and_type_only_imports(
    tmp_path: Path,
) -> None:
    root = _tree(
        tmp_path,
        {
            "app/__init__.py": "",
            "app/a.py": "def f():\n    from . import b\n",  # function level, relative
            "app/b.py": "from app.sub.c import g\n",
            "app/sub/__init__.py": "",
            "app/sub/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..a import f\n",
            "app/d.py": "import app.a\n",  # into the cycle, not part of it
            "app/e.py": "import app.f\n",
            "app/f.py": "from app import e\n",
        },
    )
    g = import_graph(root, ["app"])
    assert g.edges["app.a"] == {"app.b": 2} and g.edges["app.sub.c"] == {"app.a": 3}
    assert g.external["app.sub.c"] == {"typing": 1} and g.missing == []
    cycles = find_cycles(g.edges)
    assert cycles == [["app.a", "app.b", "app.sub.c", "app.a"], ["app.e", "app.f", "app.e"]]
    assert _cycle_text(cycles[0], g.edges) == "app.a:2 -> app.b:1 -> app.sub.c:3 -> app.a"
    assert find_cycles({"x": {"y": 1}, "y": {}}) == []


def test_checker_reports_upward_imports_and_missing_modules(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "app/__init__.py": "",
            "app/low.py": "import json\n\ndef f():\n    from app.high import h\n",
            "app/high.py": "from app.low import f\nfrom app import gone\nimport app.nothing\n",
            "app/mid/__init__.py": "from .x import y\n",
            "app/mid/x.py": "",
        },
    )
    layers = (("base", ("app", "app.low")), ("mid", ("app.mid.*",)), ("top", ("app.high",)))
    g = import_graph(root, ["app"])
    assert layer_violations(g.edges, layers) == ["app.low:4 (base) imports app.high (top)"]
    assert g.missing == [
        "app/high.py:3: no module app.nothing"
    ]  # `from app import gone`: a name of app
    assert g.edges["app.mid"] == {"app.mid.x": 1}
    assert [layer_of(m, layers) for m in ("app", "app.mid", "app.mid.x", "app.other")] == [
        0,
        1,
        1,
        None,
    ]

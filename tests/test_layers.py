"""The engine's layers point down: what each package may import, and no import cycles.

Every module under ``engine/`` is parsed with ``ast``; its imports are all of them —
at module level, inside functions, and under ``TYPE_CHECKING`` — because a lazy import
that only hides a cycle is still a cycle, and a type-only import is still a dependence.
An import names the deepest engine module it reaches: ``from engine.compile import
lower`` is an edge to ``engine.compile.lower``, ``from engine.data import DataError``
one to the package ``engine.data``. Parent packages a Python import also runs (the
``__init__`` of ``engine``) are not edges: they are not what the module depends on.

From the bottom up: ``engine.spec`` (the language: YAML, expressions, schemas,
diagnostics) → ``engine.graph`` (expanded networks and the training graph) →
``engine.load`` / ``engine.checks`` (the spec pipeline) → ``engine.compile`` →
``engine.train``; ``engine.data`` sits beside compile and train, except for its
torch-free facts modules, which the spec layer may read.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]
ENGINE = ROOT / "engine"

# Leaf facts the spec layer may read: torch-free, importing nothing above engine.spec.
SPEC_MAY_READ = frozenset({"engine.data.kinds", "engine.data.options"})


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: dict[str, Path] = {module_name(p): p for p in sorted(ENGINE.rglob("*.py"))}


def _deepest(name: str) -> str | None:
    """The deepest engine module that ``name`` (a module or a name inside one) is in."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in MODULES:
            return candidate
    return None


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join([*base, node.module] if node.module else base)


def imports_of(module: str) -> dict[str, int]:
    """Engine modules ``module`` imports, each with the line of its first import."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: dict[str, int] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(node, module, path.name == "__init__.py")
            names = [f"{source}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            target = _deepest(name)
            if target is not None and target != module:
                found.setdefault(target, node.lineno)
    return found


def import_graph() -> nx.DiGraph:
    graph = nx.DiGraph()
    graph.add_nodes_from(MODULES)
    for module in MODULES:
        for target, line in imports_of(module).items():
            graph.add_edge(module, target, line=line)
    return graph


GRAPH = import_graph()


def _in(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def _upward(layer: str, above: tuple[str, ...], allowed: frozenset[str] = frozenset()) -> list[str]:
    return [
        f"{MODULES[m].relative_to(ROOT)}:{GRAPH.edges[m, t]['line']}: {m} imports {t}"
        for m, t in GRAPH.edges
        if _in(m, (layer,)) and _in(t, above) and t not in allowed
    ]


def test_the_import_graph_sees_lazy_and_submodule_imports() -> None:
    # The parser itself: a function-level import, and `from package import module`.
    assert "engine.compile.build" in imports_of("engine")  # inside engine.build()
    assert "engine.compile.lower" in imports_of("engine.compile.network")


def test_spec_imports_nothing_above_it() -> None:
    above = (
        "engine.graph",
        "engine.load",
        "engine.checks",
        "engine.compile",
        "engine.train",
        "engine.data",
    )
    assert _upward("engine.spec", above, SPEC_MAY_READ) == []


def test_what_the_spec_layer_reads_reaches_nothing_above_it() -> None:
    # The facts modules it may read, and whatever they import in turn (a shared
    # error class), are leaves: nothing of graph, load, checks, compile or train.
    reached = set().union(*(nx.descendants(GRAPH, m) for m in GRAPH if _in(m, ("engine.spec",))))
    above = ("engine.graph", "engine.load", "engine.checks", "engine.compile", "engine.train")
    assert sorted(m for m in reached if _in(m, above) or m == "engine.data") == []


def test_graph_imports_nothing_above_it() -> None:
    above = ("engine.load", "engine.checks", "engine.compile", "engine.train")
    assert _upward("engine.graph", above) == []


def test_compile_imports_nothing_of_train() -> None:
    assert _upward("engine.compile", ("engine.train",)) == []


def _cycles(packages: tuple[str, ...]) -> list[list[str]]:
    """Each import cycle among ``packages``' modules, once, as the path that closes it."""
    sub = GRAPH.subgraph(m for m in GRAPH if _in(m, packages))
    found = []
    for component in nx.strongly_connected_components(sub):
        if len(component) > 1:
            cycle = nx.find_cycle(sub.subgraph(component))
            found.append([a for a, _ in cycle] + [cycle[-1][1]])
    return sorted(found)


def _shown(cycles: list[list[str]]) -> str:
    return "\n".join(" → ".join(c) for c in cycles)


@pytest.mark.parametrize(
    "packages",
    [
        ("engine.spec",),
        ("engine.graph",),
        ("engine.compile",),
        ("engine.train",),
        ("engine.data",),
    ],
    ids=lambda p: p[0],
)
def test_no_import_cycle_inside_a_package(packages: tuple[str, ...]) -> None:
    cycles = _cycles(packages)
    assert not cycles, "import cycles:\n" + _shown(cycles)


def test_no_import_cycle_in_the_engine() -> None:
    cycles = _cycles(("engine",))
    assert not cycles, "import cycles:\n" + _shown(cycles)


NO_TORCH = """
import sys
sys.argv = {argv!r}
{code}
assert 'torch' not in sys.modules, 'torch was imported'
"""


def _without_torch(code: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", NO_TORCH.format(code=code, argv=argv)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_loading_a_spec_imports_no_torch() -> None:
    result = _without_torch(
        "import engine.load\nengine.load.load_spec('specs/esrgan.yaml')", ["-c"]
    )
    assert result.returncode == 0, result.stderr


def test_cli_validate_imports_no_torch() -> None:
    code = (
        "import runpy\n"
        "try:\n"
        "    runpy.run_path('cli.py', run_name='__main__')\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, f'validate exited {exc.code}'"
    )
    result = _without_torch(code, ["cli.py", "validate", "specs/esrgan.yaml"])
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout

"""Names that collide with torch or Python: validate refuses them at the name, and every
name it accepts compiles and trains (a node named ``half`` once failed in ``run`` with
torch's KeyError "attribute 'half' already exists")."""

from __future__ import annotations

import io
import keyword
import re
from pathlib import Path

import pytest
import torch
from torch import fx, nn

import engine
from engine.compile.network import CompiledNetwork
from engine.graph.names import MODULE_ATTRIBUTES
from engine.load import check_spec

#: Suspicious names, and where each is refused: network nodes (``node``), network
#: inputs (``input``), training-graph nodes (``graph``).
NAMES: dict[str, set[str]] = {
    **{n: {"node"} for n in ("half", "float", "double", "cuda", "cpu", "to", "type")},
    **{n: {"node"} for n in ("forward", "train", "eval", "training", "state_dict")},
    **{n: {"node"} for n in ("parameters", "modules", "apply", "compile", "code", "graph")},
    **{n: {"node"} for n in ("meta", "padding", "size_guard", "_private", "__init__")},
    **{n: {"node", "input"} for n in ("self", "if", "class", "lambda", "None", "import")},
    "data": {"node", "input", "graph"},
    **{n: {"input"} for n in ("torch", "operator", "reverse", "heat")},
    **{n: set() for n in ("match", "case", "x", "out", "lr", "sr", "inputs", "print", "G")},
}
NET = """\
spec: 1
name: names
scale: 2
blocks:
  Inner:
    inputs: [feed]
    nodes:
{inner}
    output: {inner_last}
networks:
  G:
    inputs: {inputs}
    nodes:
      head: {{block: conv, in: [{input_names}], out: 4}}
{nodes}
      inner: {{block: Inner, in: {last}}}
      up: {{block: pixel_shuffle, in: inner, scale: 2}}
      tail: {{block: conv, in: up, out: 3}}
    outputs: {{sr: tail}}
"""
GRAPH = """\
graph:
{graph}
optimizers:
  G: {{type: adam, params: G, lr: 1.0e-4}}
train:
  iterations: 1
  phases:
    - {{name: main, steps: [{{optimizer: G, minimize: {{{minimize}}}}}]}}
data:
  train: {{type: sr, hr: "builtin:photos", crop_size: 16, batch_size: 1}}
"""


def chain(names: list[str], start: str, indent: int) -> tuple[str, str]:
    """Nodes named ``names``, each reading the one before (convs and stateless scales
    by turns, so every name is tried as a submodule and as a value in generated code)."""
    lines, last = [], start
    for i, name in enumerate(names):
        block = "conv, out: 4" if i % 2 == 0 else "scale, factor: 1.0"
        lines.append(" " * indent + f"{name}: {{block: {block}, in: {last}}}")
        last = name
    return "\n".join(lines), last


def network_spec(
    tmp: Path, *, nodes: list[str], inner: list[str], inputs: list[str], graph: str = ""
) -> Path:
    inner_text, inner_last = chain(inner, "feed", 6)
    node_text, last = chain(nodes, "head", 6)
    text = NET.format(
        inner=inner_text or "      same: {block: scale, in: feed, factor: 1.0}",
        inner_last=inner_last if inner else "same",
        inputs="{" + ", ".join(f"{n}: 3" for n in inputs) + "}",
        input_names=", ".join(inputs),
        nodes=node_text,
        last=last,
    )
    path = tmp / "names.yaml"
    path.write_text(text + graph, encoding="utf-8")
    return path


def errors_of(path: Path) -> list[tuple[int, str]]:
    spec, diags = check_spec(path)
    assert spec is None
    return [(d.loc.line, d.message) for d in diags.errors if d.loc is not None]


def line_of(path: Path, text: str) -> int:
    lines = path.read_text(encoding="utf-8").splitlines()
    return next(i for i, line in enumerate(lines, 1) if line.strip().startswith(text))


def test_a_node_named_half_is_refused_at_its_line(tmp_path: Path) -> None:
    path = network_spec(tmp_path, nodes=["half"], inner=[], inputs=["image"])
    assert errors_of(path) == [
        (
            line_of(path, "half:"),
            "node name 'half' is taken: the compiled network is a torch module, and its "
            "attribute 'half' would collide with a node of that name; rename the node "
            "(e.g. 'half_')",
        )
    ]


REFUSED = [(name, where) for name, places in NAMES.items() for where in sorted(places)]


@pytest.mark.parametrize(("name", "where"), REFUSED, ids=[f"{n}-{w}" for n, w in REFUSED])
def test_a_refused_name_is_refused_where_it_is_written(
    name: str, where: str, tmp_path: Path
) -> None:
    """As a network node (and a node inside a composite block), as a network input, as
    a graph node: an error at each place the name is written, naming it."""
    nodes = [name] if where == "node" else []
    graph = ""
    if where == "graph":
        graph = GRAPH.format(
            graph=f"  {name}: {{call: G, in: data.lr}}\n"
            f"  pix: {{loss: l1, in: [{name}.sr, data.hr]}}",
            minimize="pix: 1.0",
        )
    inputs = [name] if where == "input" else ["image"]
    # (a composite's node 'data' is never reached: the reference 'data' fails first)
    inner = nodes if name != "data" else []
    path = network_spec(tmp_path, nodes=nodes, inner=inner, inputs=inputs, graph=graph)
    text = path.read_text(encoding="utf-8").splitlines()
    written = [f"  {name}: " if where == "graph" else f"      {name}: ", f"{{{name}: 3}}"]
    expected = [i for i, line in enumerate(text, 1) if any(w in line for w in written)]
    found = [(line, m) for line, m in errors_of(path) if f"name '{name}'" in m]
    assert sorted(line for line, _ in found) == expected, found
    assert all("rename the" in m for _, m in found)


def test_every_accepted_name_compiles_and_trains(tmp_path: Path) -> None:
    """Every name of NAMES that is not refused somewhere serves there: as network nodes
    (submodules and values; state_dict keys keep the names), inside a composite block,
    as call, op and loss nodes of a training graph that runs an iteration, and as
    network inputs."""
    from engine.train.runner import prepare

    nodes = [n for n, where in NAMES.items() if "node" not in where]
    graph_names = [n for n, where in NAMES.items() if "graph" not in where]
    # Three calls of G, each through a chain of ops to a loss: every graph name in one
    # of the three roles, and few forward passes.
    calls, losses, ops = graph_names[:3], graph_names[3:6], graph_names[6:]
    lines, minimize = [], []
    for i, (call, loss) in enumerate(zip(calls, losses, strict=True)):
        lines.append(f"  {call}: {{call: G, in: data.lr}}")
        last = f"{call}.sr"
        for op in ops[i::3]:
            lines.append(f"  {op}: {{op: scale, in: {last}, factor: 1.0}}")
            last = op
        lines.append(f"  {loss}: {{loss: l1, in: [{last}, data.hr]}}")
        minimize.append(loss)
    graph = GRAPH.format(graph="\n".join(lines), minimize=", ".join(f"{m}: 1.0" for m in minimize))
    (tmp_path / "a").mkdir()
    path = network_spec(tmp_path / "a", nodes=nodes, inner=nodes, inputs=["image"], graph=graph)
    spec, diags = check_spec(path)
    assert spec is not None, [str(d) for d in diags.errors]
    keys = set(engine.build(spec)["G"].state_dict())
    assert {f"{n}.weight" for n in nodes[0::2]} | {f"inner.{n}.weight" for n in nodes[0::2]} <= keys
    run = prepare(spec, tmp_path / "run", stream=io.StringIO(), live=False, data=False)
    try:
        assert spec.settings.train is not None
        run.phase = spec.settings.train.phases[0]
        run.enter_phase(run.phase)
        batch = {"lr": torch.rand(1, 3, 8, 8), "hr": torch.rand(1, 3, 16, 16)}
        logged = run.iteration(0, run.phase, batch)
    finally:
        run.close()
    assert logged is not None and sorted(logged) == sorted(minimize)

    inputs = [n for n, where in NAMES.items() if "input" not in where]
    (tmp_path / "b").mkdir()
    path = network_spec(tmp_path / "b", nodes=[], inner=[], inputs=inputs)
    spec, diags = check_spec(path)
    assert spec is not None, [str(d) for d in diags.errors]
    out = engine.build(spec)["G"](**{n: torch.rand(1, 3, 8, 8) for n in inputs})
    assert out.shape == (1, 3, 16, 16)


def test_the_reserved_attributes_cover_the_installed_torch() -> None:
    """Validation lists torch's module attributes without importing torch; every public
    attribute a compiled network has is on the list (a newer torch may add some)."""
    network = CompiledNetwork(nn.Module(), fx.Graph())
    attributes = set(dir(network)) | set(vars(network)) | set(dir(nn.Module))
    public = {a for a in attributes if re.fullmatch(r"[A-Za-z0-9]\w*", a)}
    assert public - MODULE_ATTRIBUTES == set(), "add these to engine/graph/names.py"
    assert not MODULE_ATTRIBUTES & set(keyword.kwlist)

"""Rendering expanded graphs: a tree of node names, Graphviz DOT, or Mermaid."""

from __future__ import annotations

from typing import Any

from engine.graph.model import Network, TrainingGraph


def _short(params: dict[str, Any], limit: int = 4) -> str:
    items = [f"{k}={v}" for k, v in params.items()]
    if len(items) > limit:
        items = [*items[:limit], "…"]
    return ", ".join(items)


def _sources(attrs: dict[str, Any]) -> list[str]:
    """One entry per argument; sources concatenated along channels show as cat(a, b)."""
    args = [v for values in attrs.get("ports", {}).values() for v in values]
    return [str(v[0]) if len(v) == 1 else f"cat({', '.join(map(str, v))})" for v in args]


def network_tree(net: Network) -> dict[str, Any]:
    """Nested dict: path part → subtree; leaves hold (block, params, inputs)."""
    root: dict[str, Any] = {}
    for name in net.graph.nodes:
        attrs = net.node(name)
        parts = name.split(".")
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        else:
            if attrs["kind"] == "input":
                node[parts[-1]] = ("input", {"channels": attrs["channels"]}, [])
            else:
                node[parts[-1]] = (attrs["block"], attrs["params"], _sources(attrs))
    return root


def leaf_label(name: str, leaf: tuple[str, dict[str, Any], list[str]]) -> str:
    block, params, inputs = leaf
    args = _short(params)
    text = f"{name}: {block}" + (f"({args})" if args else "")
    if inputs:
        text += "  ← " + ", ".join(inputs)
    return text


def tree_lines(net: Network) -> list[str]:
    """The network as indented plain text (for pipes and tests)."""
    lines = [
        f"{net.name}  (inputs: {', '.join(f'{k}[{c}]' for k, c in net.inputs.items())}; "
        f"outputs: {', '.join(f'{k} ← {_value(v)}' for k, v in net.outputs.items())})"
    ]

    def walk(tree: dict[str, Any], depth: int) -> None:
        for key, value in tree.items():
            pad = "  " * depth
            if isinstance(value, dict):
                lines.append(f"{pad}{key}")
                walk(value, depth + 1)
            else:
                lines.append(pad + leaf_label(key, value))

    walk(network_tree(net), 1)
    return lines


def _value(value: list[Any]) -> str:
    return "+".join(str(s) for s in value)


def _dot_id(name: str) -> str:
    return '"' + name.replace('"', r"\"") + '"'


def network_dot(net: Network) -> str:
    lines = [f"digraph {_dot_id(net.name)} {{", "  rankdir=TB;", "  node [shape=box, fontsize=10];"]
    for name, attrs in net.graph.nodes(data=True):
        label = name if attrs["kind"] == "input" else f"{name}\\n{attrs['block']}"
        shape = ", shape=ellipse" if attrs["kind"] == "input" else ""
        lines.append(f"  {_dot_id(name)} [label={_dot_id(label)}{shape}];")
    for u, v in net.graph.edges:
        lines.append(f"  {_dot_id(u)} -> {_dot_id(v)};")
    for port, value in net.outputs.items():
        out = f"output:{port}"
        lines.append(f"  {_dot_id(out)} [shape=ellipse];")
        lines.extend(f"  {_dot_id(s.node)} -> {_dot_id(out)};" for s in value)
    lines.append("}")
    return "\n".join(lines)


def _mermaid_id(name: str) -> str:
    return "n_" + "".join(ch if ch.isalnum() else "_" for ch in name)


def network_mermaid(net: Network) -> str:
    lines = ["flowchart TD"]
    for name, attrs in net.graph.nodes(data=True):
        label = name if attrs["kind"] == "input" else f"{name}<br/>{attrs['block']}"
        open_, close = ("([", "])") if attrs["kind"] == "input" else ("[", "]")
        lines.append(f'  {_mermaid_id(name)}{open_}"{label}"{close}')
    lines.extend(f"  {_mermaid_id(u)} --> {_mermaid_id(v)}" for u, v in net.graph.edges)
    return "\n".join(lines)


def training_lines(tg: TrainingGraph) -> list[str]:
    lines = ["graph"]
    for name, attrs in tg.graph.nodes(data=True):
        if attrs["kind"] in ("data", "invalid"):
            continue
        inputs = [u for u, _ in tg.graph.in_edges(name)]
        params = _short(attrs.get("params") or {})
        target = f"{attrs['kind']} {attrs['target']}" + (f"({params})" if params else "")
        lines.append(f"  {name}: {target}  ← {', '.join(inputs)}")
    return lines


def training_dot(tg: TrainingGraph) -> str:
    lines = ['digraph "graph" {', "  node [fontsize=10];"]
    shapes = {"call": "box", "op": "box, style=rounded", "loss": "octagon", "data": "ellipse"}
    for name, attrs in tg.graph.nodes(data=True):
        if attrs["kind"] == "invalid":
            continue
        label = name if attrs["kind"] == "data" else f"{name}\\n{attrs['kind']} {attrs['target']}"
        lines.append(f"  {_dot_id(name)} [label={_dot_id(label)}, shape={shapes[attrs['kind']]}];")
    lines.extend(f"  {_dot_id(u)} -> {_dot_id(v)};" for u, v in tg.graph.edges)
    lines.append("}")
    return "\n".join(lines)


def training_mermaid(tg: TrainingGraph) -> str:
    lines = ["flowchart LR"]
    for name, attrs in tg.graph.nodes(data=True):
        if attrs["kind"] == "invalid":
            continue
        label = name if attrs["kind"] == "data" else f"{name}<br/>{attrs['kind']} {attrs['target']}"
        lines.append(f'  {_mermaid_id(name)}["{label}"]')
    lines.extend(f"  {_mermaid_id(u)} --> {_mermaid_id(v)}" for u, v in tg.graph.edges)
    return "\n".join(lines)

"""The training graph: network calls, ops and losses over the data.

Each entry of ``graph:`` is one node: ``call: G`` runs a network, ``op: detach`` applies
a parameter-free block, ``loss: l1`` computes a loss. References are ``node``,
``node.port`` and ``data.<key>``. The graph also tells which networks a loss can send
gradients to, which the phase checks use.
"""

from __future__ import annotations

from typing import Any

import networkx as nx

from engine.graph.model import Network, PortBindings, Source, TrainingGraph
from engine.spec.catalog import Catalog, CatalogEntry
from engine.spec.diagnostics import Diagnostics, did_you_mean, quote_list
from engine.spec.schema_check import check_schema
from engine.spec.skeleton import DATASET_PROVIDES
from engine.spec.yamlio import Doc

KINDS = ("call", "op", "loss")


class TrainingGraphBuilder:
    def __init__(
        self,
        catalog: Catalog,
        networks: dict[str, Network | None],
        network_names: list[str],
        data_keys: tuple[str, ...] | None,
        diags: Diagnostics,
    ) -> None:
        self.catalog = catalog
        self.networks = networks
        self.network_names = network_names
        self.data_keys = data_keys
        self.diags = diags

    def build(self, nodes: dict[str, Any], doc: Doc) -> TrainingGraph:
        """``doc`` is rooted at the ``graph:`` section."""
        tg = TrainingGraph()
        g = tg.graph
        outputs: dict[str, list[str] | None] = {}
        for name, node in nodes.items():
            if not isinstance(node, dict):
                continue
            info = self._classify(name, node, doc)
            outputs[name] = info["outputs"] if info else None
            g.add_node(name, **(info or {"kind": "invalid"}), loc=doc.key_loc((name,)))
        for name, node in nodes.items():
            if isinstance(node, dict) and g.nodes[name]["kind"] != "invalid":
                self._connect(name, node, doc, g, outputs)
        self._check_cycles(g, doc)
        return tg

    # ------------------------------------------------------------------ nodes
    def _classify(self, name: str, node: dict[str, Any], doc: Doc) -> dict[str, Any] | None:
        kinds = [k for k in KINDS if k in node]
        at = doc.key_loc((name,))
        if len(kinds) != 1:
            if "block" in node:
                self.diags.error(
                    doc.key_loc((name, "block")),
                    f"graph node '{name}': use 'op:' "
                    "for a block in the training graph ('block:' is for networks)",
                )
            else:
                self.diags.error(
                    at,
                    f"graph node '{name}' needs exactly one of 'call:', 'op:' or "
                    f"'loss:'" + (f", got {quote_list(kinds)}" if kinds else ""),
                )
            return None
        kind = kinds[0]
        target = node[kind]
        node_doc = doc.subtree((name,))
        if kind == "call":
            return self._call(name, target, node, node_doc)
        entry = self.catalog.get(target) if isinstance(target, str) else None
        if entry is None:
            wanted = ("loss",) if kind == "loss" else ("op", "module")
            self.diags.error(
                node_doc.loc((kind,)),
                f"unknown {'loss' if kind == 'loss' else 'block'}"
                f" '{target}'{did_you_mean(str(target), self.catalog.names(*wanted))}",
            )
            return None
        if kind == "loss" and entry.kind != "loss":
            self.diags.error(node_doc.loc((kind,)), f"'{target}' is not a loss; use 'op: {target}'")
            return None
        if kind == "op" and entry.kind == "loss":
            self.diags.error(node_doc.loc((kind,)), f"'{target}' is a loss; use 'loss: {target}'")
            return None
        if kind == "op" and entry.trainable:
            self.diags.error(
                node_doc.loc((kind,)),
                f"block '{target}' has trainable parameters; put it in a network and 'call:' it",
            )
            return None
        params = {k: v for k, v in node.items() if k not in (kind, "in")}
        errors = check_schema(
            entry.validator,
            params,
            node_doc,
            self.diags,
            namer=lambda p: (
                f"parameter '{p[0]}' of {kind} '{target}'" if p else f"{kind} '{target}'"
            ),
            key_word="parameter",
        )
        if errors:
            return None
        return {
            "kind": kind,
            "target": target,
            "params": params,
            "entry": entry,
            "inputs": entry.inputs,
            "outputs": list(entry.outputs) if kind == "op" else ["out"],
        }

    def _call(
        self, name: str, target: Any, node: dict[str, Any], node_doc: Doc
    ) -> dict[str, Any] | None:
        for key in node:
            if key not in ("call", "in"):
                self.diags.error(
                    node_doc.key_loc((key,)),
                    f"unknown key '{key}' in call node "
                    f"'{name}'{did_you_mean(key, ['call', 'in'])}; a call takes 'call' "
                    "and 'in'",
                )
        if target not in self.network_names:
            self.diags.error(
                node_doc.loc(("call",)),
                f"unknown network '{target}'{did_you_mean(str(target), self.network_names)}",
            )
            return None
        net = self.networks.get(target)
        if net is None:
            return None  # the network itself has errors, already reported
        return {
            "kind": "call",
            "target": target,
            "params": {},
            "entry": None,
            "inputs": tuple(net.inputs),
            "outputs": list(net.outputs),
        }

    # ------------------------------------------------------------------ edges
    def _connect(
        self,
        name: str,
        node: dict[str, Any],
        doc: Doc,
        g: nx.DiGraph,
        outputs: dict[str, list[str] | None],
    ) -> None:
        attrs = g.nodes[name]
        raw = node.get("in")
        ports: tuple[str, ...] = attrs["inputs"]
        entry: CatalogEntry | None = attrs["entry"]
        what = (
            f"network '{attrs['target']}'"
            if attrs["kind"] == "call"
            else f"{attrs['kind']} '{attrs['target']}'"
        )
        if raw is None:
            if ports:
                self.diags.error(
                    doc.key_loc((name,)),
                    f"graph node '{name}' has no input: add "
                    f"'in:' ({what} takes {', '.join(ports)})",
                )
            return
        refs: list[tuple[str | None, Any, tuple]] = []
        variadic = entry is not None and entry.variadic
        single_concat = len(ports) == 1 and not variadic
        if isinstance(raw, dict):
            for port, value in raw.items():
                if port not in ports:
                    self.diags.error(
                        doc.key_loc((name, "in", port)),
                        f"{what} has no input '{port}'"
                        f"{did_you_mean(port, ports)}; inputs: {quote_list(ports)}",
                    )
                    continue
                items = value if isinstance(value, list) else [value]
                for i, ref in enumerate(items):
                    path = (name, "in", port, i) if isinstance(value, list) else (name, "in", port)
                    refs.append((port, ref, path))
        else:
            items = raw if isinstance(raw, list) else [raw]
            for i, ref in enumerate(items):
                path = (name, "in", i) if isinstance(raw, list) else (name, "in")
                refs.append((None, ref, path))
            minimum = entry.min_inputs if entry is not None else len(ports)
            if not variadic and not single_concat and not minimum <= len(items) <= len(ports):
                count = str(len(ports)) if minimum == len(ports) else f"{minimum} to {len(ports)}"
                self.diags.error(
                    doc.loc((name, "in")),
                    f"{what} takes {count} inputs ({', '.join(ports)}), got {len(items)}",
                )
        bindings: PortBindings = {}
        for i, (port, ref, path) in enumerate(refs):
            source = self._resolve(ref, doc.loc(path), g, outputs)
            if source is None:
                attrs["broken"] = True  # later checks stay quiet about this node
                continue
            g.add_edge(source.node, name)
            if port is None:  # positional
                port = ports[0] if (variadic or single_concat) else ports[min(i, len(ports) - 1)]
            groups = bindings.setdefault(port, [])
            if variadic or not groups:
                groups.append([source])
            else:
                groups[0].append(source)  # several sources on one port: concatenated
        attrs["ports"] = bindings
        if isinstance(raw, dict):
            required = ports[: entry.min_inputs] if entry is not None else ports
            missing = [p for p in required if p not in raw]
            if missing:
                self.diags.error(
                    doc.loc((name, "in")),
                    f"graph node '{name}': input {quote_list(missing)} of {what} is not connected",
                )

    def _resolve(
        self, ref: Any, at: Any, g: nx.DiGraph, outputs: dict[str, list[str] | None]
    ) -> Source | None:
        if not isinstance(ref, str):
            return None
        base, _, port = ref.partition(".")
        if base == "data":
            if self.data_keys is None:
                self.diags.error(at, f"'{ref}' needs a 'data:' section with a 'train:' dataset")
                return None
            if port not in self.data_keys:
                types = [t for t, keys in DATASET_PROVIDES.items() if port in keys]
                elsewhere = f" (type {' or '.join(types)} does)" if types else ""
                self.diags.error(
                    at,
                    f"unknown data key '{port}'{did_you_mean(port, self.data_keys)};"
                    f" this dataset provides {quote_list(f'data.{k}' for k in self.data_keys)}"
                    + elsewhere,
                )
                return None
            g.add_node(ref, kind="data", loc=None)
            return Source(ref)
        if base not in outputs:
            self.diags.error(at, f"unknown reference '{base}'{did_you_mean(base, outputs)}")
            return None
        ports = outputs[base]
        if ports is None:
            return None
        if g.nodes[base]["kind"] == "loss":
            self.diags.error(
                at,
                f"'{base}' is a loss; losses are minimized in 'train.phases', not used as inputs",
            )
            return None
        if not port:
            if len(ports) > 1 and "out" not in ports:
                self.diags.error(
                    at,
                    f"'{base}' has several outputs ({quote_list(ports)}): write "
                    f"'{base}.{ports[0]}'",
                )
                return None
            return Source(base, "out" if "out" in ports else ports[0])
        if port not in ports:
            self.diags.error(
                at,
                f"'{base}' has no output '{port}'{did_you_mean(port, ports)}; "
                f"outputs: {quote_list(ports)}",
            )
            return None
        return Source(base, port)

    def _check_cycles(self, g: nx.DiGraph, doc: Doc) -> None:
        for component in nx.strongly_connected_components(g):
            if len(component) > 1:
                first = min(component, key=lambda n: g.nodes[n]["loc"] or doc.loc(()))
                cycle = nx.find_cycle(g.subgraph(component), source=first)
                path = " → ".join([*(u for u, _ in cycle), cycle[0][0]])
                self.diags.error(doc.loc((first, "in")), f"cycle in the training graph: {path}")


def gradient_networks(
    tg: TrainingGraph, networks: dict[str, Network | None]
) -> dict[str, set[str]]:
    """For each graph node, the trainable networks its value can send gradients to."""
    g = tg.graph
    reach: dict[str, set[str]] = {}
    if not nx.is_directed_acyclic_graph(g):
        return {n: set() for n in g}
    for name in nx.topological_sort(g):
        attrs = g.nodes[name]
        found: set[str] = set()
        entry = attrs.get("entry")
        if attrs["kind"] != "data" and not (entry is not None and not entry.grad):
            for pred in g.predecessors(name):
                found |= reach[pred]
        if attrs["kind"] == "call":
            net = networks.get(attrs["target"])
            if net is not None and net.trainable:
                found.add(attrs["target"])
        reach[name] = found
    return reach

"""The training graph: network calls, ops and losses over the data.

Each entry of ``graph:`` is one node: ``call: G`` runs a network, ``op: detach`` applies
a parameter-free block, ``loss: l1`` computes a loss. References are ``node``,
``node.port`` and ``data.<key>``. The graph also tells which networks a loss can send
gradients to, which the phase checks use.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import networkx as nx

from engine.graph.cycles import cycles, report_cycles
from engine.graph.flow import LOGDET
from engine.graph.model import Network, Source, TrainingGraph
from engine.graph.names import graph_node_problem
from engine.graph.ports import Ports, Value, bind, resolve_reference
from engine.spec.catalog import Catalog
from engine.spec.diagnostics import Diagnostics, Loc, did_you_mean, quote_list
from engine.spec.schema_check import check_schema
from engine.spec.skeleton import DATASET_PROVIDES
from engine.spec.yamlio import Doc

KINDS = ("call", "op", "loss")
#: The keys of a call node.
CALL_KEYS = ("call", "in", "reverse", "heat")


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
            reserved = graph_node_problem(str(name))
            if reserved is not None:
                self.diags.error(doc.key_loc((name,)), reserved)
                outputs[name] = None
                g.add_node(name, kind="invalid", loc=doc.key_loc((name,)))
                continue
            info = self._classify(name, node, doc)
            outputs[name] = info["outputs"] if info else None
            g.add_node(name, **(info or {"kind": "invalid"}), loc=doc.key_loc((name,)))
        for name, node in nodes.items():
            if isinstance(node, dict) and g.nodes[name]["kind"] != "invalid":
                self._connect(name, node, doc, g, outputs)
        cyclic = report_cycles(
            g, list(nodes), lambda n: doc.loc((n, "in")), "the training graph", self.diags
        )
        for name in cyclic:
            g.nodes[name]["broken"] = True  # reported: checks downstream stay quiet
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
                # `los: l1` is a misspelt key of the node, not a parameter of anything
                misspelt = [k for k in node if k not in KINDS and did_you_mean(k, KINDS)]
                hint = (
                    f"; '{misspelt[0]}' is no key of a graph node{did_you_mean(misspelt[0], KINDS)}"
                    if misspelt and not kinds
                    else ""
                )
                self.diags.error(
                    doc.key_loc((name, misspelt[0])) if hint else at,
                    f"graph node '{name}' needs exactly one of 'call:', 'op:' or "
                    f"'loss:'" + (f", got {quote_list(kinds)}" if kinds else "") + hint,
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
            if key not in CALL_KEYS:
                self.diags.error(
                    node_doc.key_loc((key,)),
                    f"unknown key '{key}' in call node "
                    f"'{name}'{did_you_mean(key, CALL_KEYS)}; a call takes 'call', 'in', "
                    "and for an invertible network 'reverse' and 'heat'",
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
        reverse = node.get("reverse") is True
        if "heat" in node and not reverse:
            self.diags.error(
                node_doc.key_loc(("heat",)),
                f"call node '{name}': 'heat' is the temperature of a reverse call; add "
                "'reverse: true'",
            )
        if not reverse:
            outputs = list(net.outputs) + ([LOGDET] if net.flow is not None else [])
            inputs = tuple(net.inputs)
            return {**self._call_info(target, inputs, len(inputs), outputs), "reverse": False}
        plan = net.flow
        if plan is None:
            self.diags.error(
                node_doc.loc(("reverse",)),
                f"call node '{name}': network '{target}' is not invertible; 'reverse: true' "
                "needs a network with 'flow: INPUT'",
            )
            return None
        heat = node.get("heat", 1.0)
        info = self._call_info(target, plan.reverse_inputs, len(plan.conditions), [plan.input])
        return {**info, "reverse": True, "heat": float(heat)}

    @staticmethod
    def _call_info(
        target: str, inputs: tuple[str, ...], required: int, outputs: list[str]
    ) -> dict[str, Any]:
        return {
            "kind": "call",
            "target": target,
            "params": {},
            "entry": None,
            "inputs": inputs,
            "required": required,
            "outputs": outputs,
        }

    # ------------------------------------------------------------------ edges
    def _connect(
        self,
        name: str,
        node: dict[str, Any],
        doc: Doc,
        g: nx.DiGraph[str],
        outputs: dict[str, list[str] | None],
    ) -> None:
        attrs = g.nodes[name]
        entry = attrs["entry"]
        inputs: tuple[str, ...] = attrs["inputs"]
        if attrs["kind"] == "call":  # a network takes each of its inputs
            ports = Ports(inputs, False, attrs["required"], f"network '{attrs['target']}'")
        else:
            what = f"{attrs['kind']} '{attrs['target']}'"
            ports = Ports(inputs, entry.variadic, entry.min_inputs, what)

        def resolve(ref: str, at: Loc | None) -> Value | None:
            source = self._resolve(ref, at, g, outputs)
            return None if source is None else [source]

        binding = bind(
            node.get("in"), ports, resolve, doc, (name,), self.diags, f"graph node '{name}'"
        )
        for source in binding.sources:  # kept even when the binding failed: cycles, use
            g.add_edge(source.node, name)
        attrs["ports"] = binding.ports or {}
        if binding.ports is None:
            attrs["broken"] = True  # later checks stay quiet about this node

    def _resolve(
        self, ref: str, at: Loc | None, g: nx.DiGraph[str], outputs: dict[str, list[str] | None]
    ) -> Source | None:
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
        if base in outputs and g.nodes[base]["kind"] == "loss":
            self.diags.error(
                at,
                f"'{base}' is a loss; losses are minimized in 'train.phases', not used as inputs",
            )
            return None
        found = resolve_reference(ref, outputs, at, self.diags)
        return None if found is None else Source(*found)


def gradient_networks(
    tg: TrainingGraph, networks: Mapping[str, Network | None]
) -> dict[str, set[str]]:
    """For each graph node, the trainable networks its value can send gradients to."""
    g = tg.graph
    # Nodes on a cycle (an error, already reported) reach nothing; the rest is a DAG.
    reach: dict[str, set[str]] = {n: set() for component in cycles(g) for n in component}
    acyclic = g.subgraph([n for n in g if n not in reach])
    for name in nx.topological_sort(acyclic):
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

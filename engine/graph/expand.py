"""Expansion: composite blocks and ``repeat`` become one graph of leaf blocks per network.

Names are hierarchical and predictable: a node ``body`` with ``repeat: 23`` becomes
``body.0`` … ``body.22``; a composite node ``rdb1`` inside it contributes
``body.7.rdb1.conv3``. Parameters are substituted (``$nf``, ``$nf * 2``) as each
instance is expanded, then checked against the leaf block's schema. All problems go to
the diagnostics; expansion carries on past them so that one run reports everything.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Any

import networkx as nx

from engine.graph import flow
from engine.graph.cycles import cycles, report_cycles
from engine.graph.model import Network, PortBindings, Source
from engine.graph.names import input_problem, node_problem
from engine.graph.ports import Ports, Value, bind, references, resolve_reference
from engine.spec.catalog import Catalog
from engine.spec.diagnostics import Diagnostics, Loc, did_you_mean, quote_list
from engine.spec.expr import ExprError, is_expression, substitute
from engine.spec.inits import Init, parse_init
from engine.spec.library import BlockDef, BlockTable
from engine.spec.schema_check import check_schema
from engine.spec.yamlio import Doc, Path, as_dict

#: Keys of a node that are not parameters of its block.
NODE_KEYS = ("block", "in", "repeat", "when", "chain", "init", "share", "as")
#: Keys a ``share:`` node may have beside it.
SHARE_KEYS = ("share", "in")
#: Keys a ``chain:`` node may have beside its items.
CHAIN_KEYS = ("chain", "in", "when", "init")
MAX_REPEAT = 100_000
MAX_NODES = 2_000_000
MAX_NESTING = 16

#: A node as seen by its neighbours: its outputs by port (None: it failed to expand).
Outputs = dict[str, Value] | None


def sources_of(bindings: PortBindings) -> list[Source]:
    return [source for values in bindings.values() for value in values for source in value]


class _TooBig(Exception):
    pass


@dataclass(frozen=True)
class _Structure:
    """What is checked once per definition: the order to expand its nodes in, its
    outputs, and the nodes that wait for their inputs (see ``Expander._order``)."""

    order: list[str]
    outputs: dict[str, tuple[str, Path]]
    waiting: frozenset[str]


@dataclass(frozen=True)
class _What:
    """What a node runs: a leaf block (its catalog entry) or a composite, and its ports."""

    entry: Any
    composite: BlockDef | None
    ports: Ports


#: The key of a scope that holds where its parameters were set (no expression can name
#: it: it is no identifier).
ORIGINS = "@origins"

#: The prefix of what a switched-off node without inputs gives its readers.
OFF = "@off:"

#: What a node that failed gives its readers (see ``Expander._resolve``).
FAILED = Source("@failed")

#: The input side of a chain: one input, fed to its first item.
_ONE_INPUT = Ports(("x",), False, 1, "a chain")


class Expander:
    """Expands the networks of one spec; shares the block table and the diagnostics."""

    def __init__(
        self,
        catalog: Catalog,
        table: BlockTable,
        diags: Diagnostics,
        global_scope: dict[str, Any],
        spec_dir: FsPath | None,
        origins: dict[str, Loc | None] | None = None,
    ) -> None:
        self.catalog = catalog
        # Where each top-level parameter was set (a line, or an override), for messages
        # about the values that came from it.
        self.global_scope = {**global_scope, ORIGINS: dict(origins or {})}
        self.table = table
        self.diags = diags
        self.spec_dir = spec_dir
        self.graph: nx.DiGraph[str] = nx.DiGraph()
        self._structures: dict[int, _Structure] = {}
        # Outputs of nodes expanded before their inputs were known (see _order), by alias.
        self._aliases: dict[str, Outputs] = {}
        self._pending: list[str] = []  # leaves whose inputs name an alias
        self._failed = False  # a node failed, and its readers were expanded on FAILED
        self._valid_params: set[tuple[str, str]] = set()
        # The init of the composite or chain being expanded, for the leaves inside.
        self._inherited: Init | None = None
        # (prefix of a node that shares weights, prefix of the node it shares them with)
        self._sharing: list[tuple[str, str]] = []
        # The outputs of each copy of a repeated node, by the id of its scope and its
        # name, so that `body.7` can name copy 7 (SRFlow taps RRDB blocks 1, 8, 15, 22).
        self._copies: dict[tuple[int, str], list[Outputs]] = {}
        # Items of chains named with `as:`, by scope and chain: name → copy index.
        self._item_names: dict[tuple[int, str], dict[str, int]] = {}

    # ----------------------------------------------------------------- networks
    def network(
        self, name: str, data: dict[str, Any], doc: Doc, *, block_alone: bool = False
    ) -> Network | None:
        """Expand one entry of ``networks:`` (``doc`` is rooted at it). ``block_alone``:
        a library's block checked as a network of its own, so a block made of flow steps
        transforms its first input (a network says so with ``flow:``)."""
        self.graph = nx.DiGraph()
        self._aliases, self._pending, self._failed = {}, [], False
        try:
            network = self._network(name, data, doc)
        except _TooBig:
            return None
        if self._failed:
            return None  # what failed was reported; the rest was expanded to check it
        if network is not None:
            for port, value in network.outputs.items():
                off = [s.node.removeprefix(OFF) for s in value if s.node.startswith(OFF)]
                if off:
                    self.diags.error(
                        network.loc,
                        f"network '{name}': output '{port}' is '{off[0]}', which is switched "
                        "off by 'when'",
                    )
                    return None
        if network is not None and isinstance(data.get("pad"), str):
            network.pad = data["pad"]
        if network is not None and self._aliases:
            network = self._wired(network)
        if network is None:
            return None
        flow_input = data.get("flow") if isinstance(data.get("flow"), str) else None
        if block_alone and network.inputs and flow.has_steps(network, self.catalog):
            flow_input = next(iter(network.inputs))
        network.flow = flow.plan(network, flow_input, self.catalog, doc.loc(("flow",)), self.diags)
        if flow_input is not None and network.flow is None:
            return None
        return network

    def _wired(self, network: Network) -> Network | None:
        """Replace the aliases of nodes expanded before their inputs were known by what
        they stand for, then judge cycles on the expanded graph."""
        ok = True
        for leaf in self._pending:
            attrs = self.graph.nodes[leaf]
            ports: PortBindings = {}
            for port, values in attrs["ports"].items():
                ports[port] = []
                for value in values:
                    resolved = self._unaliased(value, attrs.get("loc"), ())
                    if resolved is None:
                        ok = False
                    else:
                        ports[port].append(resolved)
            attrs["ports"] = ports
            self.graph.add_edges_from((s.node, leaf) for v in ports.values() for g in v for s in g)
        outputs = {}
        for port, value in network.outputs.items():
            resolved = self._unaliased(value, network.loc, ())
            if resolved is None:
                ok = False
            else:
                outputs[port] = resolved
        if not ok:
            return None
        network.outputs = outputs
        what = f"network '{network.name}'"
        if report_cycles(
            self.graph, list(self.graph), lambda n: self.graph.nodes[n].get("loc"), what, self.diags
        ):
            return None
        return network

    def _unaliased(self, value: Value, at: Loc | None, trail: tuple[Source, ...]) -> Value | None:
        result: Value = []
        for source in value:
            if not source.node.startswith("@"):
                result.append(source)
                continue
            outputs = self._aliases.get(source.node)
            if outputs is None:  # the node failed, and was reported
                return None
            if source.port not in outputs:  # switched off by `when`: it has only 'out'
                self.diags.error(
                    at,
                    f"'{source.node[1:]}' has no output '{source.port}' when it is switched "
                    f"off; outputs: {quote_list(outputs)}",
                )
                return None
            if source in trail:  # outputs that are inputs, round and round: no leaf between
                path = " → ".join(s.node[1:] for s in (*trail[trail.index(source) :], source))
                self.diags.error(at, f"cycle through outputs only: {path}")
                return None
            inner = self._unaliased(outputs[source.port], at, (*trail, source))
            if inner is None:
                return None
            result.extend(inner)
        return result

    def _network(self, name: str, data: dict[str, Any], doc: Doc) -> Network | None:
        loc = doc.loc(())
        trainable = data.get("trainable", True) is not False
        use = data.get("use")
        declared = data.get("inputs") if isinstance(data.get("inputs"), dict) else None
        if use is not None and "nodes" in data:
            self.diags.error(
                doc.key_loc(("use",)), f"network '{name}': give either 'use:' or 'nodes:', not both"
            )
            return None
        if isinstance(use, str):
            return self._used_network(name, use, data, doc, declared, trainable)
        if "nodes" not in data:
            self.diags.error(loc, f"network '{name}' needs 'nodes:' (or 'use: Block')")
            return None
        if declared is None:
            self.diags.error(
                loc,
                f"network '{name}' needs 'inputs:' mapping each input to its "
                "channel count, e.g. inputs: {lr: 3}",
            )
            return None
        scope = dict(self.global_scope)
        origins: dict[str, Loc | None] = dict(scope[ORIGINS])
        scope[ORIGINS] = origins
        params = as_dict(data.get("params"))
        for key, raw in params.items():
            try:
                scope[key] = substitute(raw, scope)
                origins[key] = doc.loc(("params", key))
            except ExprError as exc:
                self.diags.error(doc.loc(("params", key)), str(exc))
        bindings = {}
        for input_name, channels in declared.items():
            reserved = input_problem(str(input_name))
            if reserved is not None:
                self.diags.error(doc.key_loc(("inputs", input_name)), reserved)
            self.graph.add_node(
                input_name, kind="input", channels=channels, loc=doc.key_loc(("inputs", input_name))
            )
            bindings[input_name] = [Source(input_name)]
        outputs = self._body("", data, doc, scope, bindings, (), f"network '{name}'")
        if outputs is None:
            return None
        return Network(name, self.graph, dict(declared), outputs, trainable, loc)

    def _used_network(
        self,
        name: str,
        use: str,
        data: dict[str, Any],
        doc: Doc,
        declared: dict[str, Any] | None,
        trainable: bool,
    ) -> Network | None:
        at = doc.loc(("use",))
        block = self.table.lookup(use, self.spec_dir, at)
        if block is None:
            if "#" not in use:
                known = list(self.table.defs)
                self.diags.error(
                    at,
                    f"network '{name}': unknown block '{use}'"
                    f"{did_you_mean(use, known)}; 'use:' takes a composite block "
                    "or 'lib/file.yaml#Block'",
                )
            return None
        channels = dict.fromkeys(block.inputs, 3)
        for key, count in (declared or {}).items():
            if key not in channels:
                self.diags.error(
                    doc.key_loc(("inputs", key)),
                    f"network '{name}': block "
                    f"'{block.name}' has no input '{key}'{did_you_mean(key, channels)}",
                )
            else:
                channels[key] = count
        bindings = {}
        for input_name, count in channels.items():
            reserved = input_problem(str(input_name))
            if reserved is not None:  # the block's input becomes the network's
                self.diags.error(doc.loc(("use",)), f"network '{name}': block {reserved}")
            self.graph.add_node(input_name, kind="input", channels=count, loc=doc.loc(("use",)))
            bindings[input_name] = [Source(input_name)]
        raw = as_dict(data.get("params"))
        params = {}
        for key, value in raw.items():  # `use:` params may be expressions over the globals
            try:
                params[key] = substitute(value, self.global_scope)
            except ExprError as exc:
                self.diags.error(doc.loc(("params", key)), str(exc))
                return None
        scope = self._composite_scope(block, params, doc, ("params",), dict(self.global_scope))
        if scope is None:
            return None
        outputs = self._body(
            "", block.data, block.doc, scope, bindings, (block.name,), f"block '{block.name}'"
        )
        if outputs is None:
            return None
        return Network(name, self.graph, channels, outputs, trainable, doc.loc(()))

    # -------------------------------------------------------------------- bodies
    def _body(
        self,
        prefix: str,
        body: dict[str, Any],
        doc: Doc,
        scope: dict[str, Any],
        bindings: dict[str, Value],
        stack: tuple[str, ...],
        owner: str,
    ) -> dict[str, Value] | None:
        """Expand the ``nodes:`` of a network or a composite block instance."""
        nodes = body.get("nodes")
        if not isinstance(nodes, dict):
            return None
        local: dict[str, Outputs] = {k: {"out": v} for k, v in bindings.items()}
        structure = self._structure(body, nodes, doc, bindings, owner)
        for name in nodes:
            local.setdefault(name, None)  # nodes in cycles stay None: already reported
        for name in structure.waiting:  # read before they are expanded: by alias
            alias = f"@{prefix}{name}"
            local[name] = {port: [Source(alias, port)] for port in self._output_ports(nodes[name])}
        for name in structure.order:
            node = nodes[name]
            if isinstance(node, dict) and "share" in node:
                local[name] = self._shared(prefix, name, node, nodes, doc, scope, local, stack)
            elif isinstance(node, dict):
                local[name] = self._node(prefix, name, node, doc, scope, local, stack)
            else:
                local[name] = None
            if name in structure.waiting:
                self._aliases[f"@{prefix}{name}"] = local[name]
        result: dict[str, Value] = {}
        try:
            for port, (ref, path) in structure.outputs.items():
                value = self._resolve(ref, local, doc.loc(path), owner)
                if value is None:
                    return None
                result[port] = value
            return result
        finally:
            for key in [k for k in self._copies if k[0] == id(local)]:
                del self._copies[key]
            for key in [k for k in self._item_names if k[0] == id(local)]:
                del self._item_names[key]

    def _structure(
        self,
        body: dict[str, Any],
        nodes: dict[str, Any],
        doc: Doc,
        bindings: dict[str, Value],
        owner: str,
    ) -> _Structure:
        """Order and outputs of a definition: checked once, reused by every instance."""
        key = id(body)
        if key not in self._structures:
            for name in nodes:
                reserved = node_problem(str(name))
                if reserved is not None:
                    self.diags.error(doc.key_loc(("nodes", name)), reserved)
                if name in bindings:
                    self.diags.error(
                        doc.key_loc(("nodes", name)),
                        f"node '{name}' has the same name as an input of {owner}",
                    )
            deps = self._local_dependencies(nodes, set(bindings), doc)
            order, waiting = self._order(deps, nodes, doc, owner)
            outputs_spec = self._declared_outputs(body, nodes)
            self._check_reachability(deps, outputs_spec, nodes, bindings, doc, owner)
            self._structures[key] = _Structure(order, outputs_spec, waiting)
        return self._structures[key]

    @staticmethod
    def _declared_outputs(
        body: dict[str, Any], nodes: dict[str, Any]
    ) -> dict[str, tuple[str, Path]]:
        if isinstance(body.get("outputs"), dict):
            return {
                p: (r, ("outputs", p)) for p, r in body["outputs"].items() if isinstance(r, str)
            }
        if isinstance(body.get("output"), str):
            return {"out": (body["output"], ("output",))}
        last = list(nodes)[-1]
        return {"out": (last, ("nodes", last))}

    def _local_dependencies(
        self, nodes: dict[str, Any], inputs: set[str], doc: Doc
    ) -> nx.DiGraph[str]:
        deps: nx.DiGraph[str] = nx.DiGraph()
        deps.add_nodes_from(inputs)
        deps.add_nodes_from(nodes)
        for name, node in nodes.items():
            if not isinstance(node, dict):
                continue
            items = node.get("chain")
            chained = items if isinstance(items, list) else []
            side = [i.get("in") for i in chained if isinstance(i, dict)]  # a chain item's
            for ref, _ in [r for raw in [node.get("in"), *side] for r in references(raw)]:
                base = ref.split(".", 1)[0]
                if base in deps:
                    deps.add_edge(base, name)
            shared = node.get("share")
            if isinstance(shared, str) and shared in nodes and shared != name:
                deps.add_edge(shared, name)  # its weights must exist first
        return deps

    def _order(
        self, deps: nx.DiGraph[str], nodes: dict[str, Any], doc: Doc, owner: str
    ) -> tuple[list[str], frozenset[str]]:
        """The order to expand the nodes in, and those that wait for their inputs.

        A cycle among leaf nodes is a mistake, reported here. One through a composite
        (or a chain, or a block chosen by an expression) may be none: NAFNet's encoders
        feed its downsamplers, which feed the encoders' next level, and the leaves
        inside form no cycle. Such nodes are expanded with their inputs unresolved
        (``waiting``); cycles are then judged on the expanded graph.
        """
        leaf_cycles: set[str] = set()
        waiting: set[str] = set()
        for component in cycles(deps):
            if all(self._plain_leaf(nodes.get(n)) for n in component):
                leaf_cycles |= component
            else:
                waiting |= component
        cyclic = report_cycles(
            deps.subgraph(leaf_cycles),
            list(nodes),
            lambda n: doc.loc(("nodes", n, "in")),
            owner,
            self.diags,
        )
        acyclic = deps.subgraph([n for n in deps if n not in cyclic])
        # Stable order: YAML order among the nodes that are ready (a waiting group goes
        # where its first member is, in YAML order within it).
        position = {n: i for i, n in enumerate(nodes)}
        condensed = nx.condensation(acyclic)
        members = condensed.graph["mapping"]
        groups: dict[int, list[str]] = {}
        for name, group in members.items():
            groups.setdefault(group, []).append(name)
        first = {g: min(position.get(n, -1) for n in names) for g, names in groups.items()}
        order = [
            name
            for group in nx.lexicographical_topological_sort(condensed, key=lambda g: first[g])
            for name in sorted(groups[group], key=lambda n: position.get(n, -1))
        ]
        return [n for n in order if n in nodes], frozenset(waiting)

    def _output_ports(self, node: Any) -> tuple[str, ...]:
        """A node's output ports, before it is expanded."""
        block = node.get("block") if isinstance(node, dict) else None
        if not isinstance(block, str) or is_expression(block) or "chain" in node:
            return ("out",)  # a chain; a block chosen by an expression has 'out' or fails
        entry = self.catalog.get(block)
        if entry is not None:
            return tuple(entry.outputs)
        # Quietly: a block that is not found is reported where the node is expanded.
        reporting, self.table.diags = self.table.diags, Diagnostics()
        try:
            composite = self.table.lookup(block, self.spec_dir, None)
        finally:
            self.table.diags = reporting
        if composite is None or not isinstance(composite.data.get("nodes"), dict):
            return ("out",)
        return tuple(self._declared_outputs(composite.data, composite.data["nodes"]))

    def _plain_leaf(self, node: Any) -> bool:
        """A node that runs a registered block named as it is written."""
        if not isinstance(node, dict) or "chain" in node:
            return False
        block = node.get("block")
        return isinstance(block, str) and not is_expression(block) and block in self.catalog

    def _check_reachability(
        self,
        deps: nx.DiGraph[str],
        outputs: dict[str, tuple[str, Path]],
        nodes: dict[str, Any],
        bindings: dict[str, Value],
        doc: Doc,
        owner: str,
    ) -> set[str]:
        targets = {ref.split(".", 1)[0] for ref, _ in outputs.values()}
        # `output: a.b` where b is a node is one mistake, reported when it is resolved;
        # b is not also "unused".
        targets |= {ref.split(".")[1] for ref, _ in outputs.values() if ref.count(".") == 1}
        alive: set[str] = set()
        for t in targets:
            if t in deps:
                alive |= nx.ancestors(deps, t) | {t}
        for name in nodes:
            # A buffer may be there only to be saved (a marker a loader looks for).
            saved = isinstance(nodes[name], dict) and nodes[name].get("block") == "buffer"
            if name not in alive and not saved:
                self.diags.warning(
                    doc.key_loc(("nodes", name)),
                    f"node '{name}' of {owner} reaches no output (it is unused)",
                )
        for name in bindings:
            if name not in alive:
                self.diags.warning(doc.loc(()), f"input '{name}' of {owner} is never used")
        return alive

    # --------------------------------------------------------------------- nodes
    def _node(
        self,
        prefix: str,
        name: str,
        node: dict[str, Any],
        doc: Doc,
        scope: dict[str, Any],
        local: dict[str, Outputs],
        stack: tuple[str, ...],
        node_doc: Doc | None = None,
    ) -> Outputs:
        node_doc = node_doc or doc.subtree(("nodes", name))
        if "as" in node:
            self.diags.error(
                node_doc.key_loc(("as",)),
                f"node '{name}': 'as' names an item of a chain; a node is named by its key",
            )
            return None
        if "chain" in node:
            return self._chain(prefix, name, node, node_doc, scope, local, stack)
        what = self._what(node, node_doc, scope)
        if what is None:
            return None
        enabled = self._when(node, node_doc, scope)
        if enabled is None:
            return None
        if not enabled:
            return self._bypass(node, what.ports, local, node_doc, name)
        args = self._inputs(node.get("in"), what.ports, local, node_doc, name)
        if args is None:
            if what.entry is not None:  # its parameters' mistakes too, in the same run
                params = self._params(
                    {k: v for k, v in node.items() if k not in NODE_KEYS}, scope, node_doc
                )
                if params is not None:
                    self._check_params(what.entry, params, node_doc)
            return None
        # A node with `repeat:` is always indexed, even when it repeats once, so weight
        # keys do not change shape with the count (body.0 … body.N-1).
        indexed = "repeat" in node
        copies: list[Outputs] = []
        done = self._instances(
            f"{prefix}{name}", indexed, 0, what, node, node_doc, scope, args, stack, copies
        )
        if indexed:
            self._copies[id(local), name] = copies
        return None if done is None else done[0]

    def _shared(
        self,
        prefix: str,
        name: str,
        node: dict[str, Any],
        nodes: dict[str, Any],
        doc: Doc,
        scope: dict[str, Any],
        local: dict[str, Outputs],
        stack: tuple[str, ...],
    ) -> Outputs:
        """``share: other``: run ``other``'s modules again, on this node's inputs. The
        definition of ``other`` is expanded once more under this node's name, and each
        leaf found there calls the module of its counterpart in ``other``."""
        node_doc = doc.subtree(("nodes", name))
        target = node["share"]
        extra = [k for k in node if k not in SHARE_KEYS]
        for key in extra:
            self.diags.error(
                node_doc.key_loc((key,)),
                f"node '{name}': '{key}' beside 'share:'; a node that shares another's "
                "weights takes its block and parameters too, and only 'in:' of its own",
            )
        if extra:
            return None
        if target not in nodes or target == name or not isinstance(nodes[target], dict):
            others = [n for n in nodes if n != name]
            self.diags.error(
                node_doc.loc(("share",)),
                f"node '{name}': 'share' names a node of the same 'nodes:', not "
                f"'{target}'{did_you_mean(str(target), others)}",
            )
            return None
        if local.get(target) is None:
            return None  # it failed: reported there
        definition = {k: v for k, v in nodes[target].items() if k not in ("in", "init")}
        if "share" in definition:
            self.diags.error(
                node_doc.loc(("share",)), f"node '{name}': share '{target}''s own target instead"
            )
            return None
        self._sharing.append((f"{prefix}{name}", f"{prefix}{target}"))
        try:
            return self._node(
                prefix,
                name,
                {**definition, "in": node.get("in")},
                doc,
                scope,
                local,
                stack,
                node_doc,
            )
        finally:
            self._sharing.pop()

    def _what(self, node: dict[str, Any], node_doc: Doc, scope: dict[str, Any]) -> _What | None:
        """The leaf block or composite a node (or a chain item) runs."""
        block_name = node.get("block")
        if is_expression(block_name):  # e.g. block: $"norm" if $bn else "identity"
            try:
                block_name = substitute(block_name, scope)
            except ExprError as exc:
                self.diags.error(node_doc.loc(("block",)), str(exc))
                return None
        if not isinstance(block_name, str):
            if is_expression(node.get("block")):
                self.diags.error(
                    node_doc.loc(("block",)), f"'block' must name a block, got {block_name!r}"
                )
            return None
        entry = self.catalog.get(block_name)
        composite = (
            None
            if entry
            else self.table.lookup(block_name, self.spec_dir, node_doc.loc(("block",)))
        )
        if entry is None and composite is None:
            if "#" not in block_name:
                known = [*self.catalog.names("module", "op"), *self.table.defs]
                self.diags.error(
                    node_doc.loc(("block",)),
                    f"unknown block '{block_name}'{did_you_mean(block_name, known)}",
                )
            return None
        if entry is not None and entry.kind == "loss":
            self.diags.error(
                node_doc.loc(("block",)),
                f"'{block_name}' is a loss; losses belong "
                "in the training graph ('graph:'), not inside a network",
            )
            return None
        return _What(entry, composite, self._ports(entry, composite))

    def _instances(
        self,
        base: str,
        indexed: bool,
        start: int,
        what: _What,
        node: dict[str, Any],
        node_doc: Doc,
        scope: dict[str, Any],
        args: PortBindings,
        stack: tuple[str, ...],
        copies: list[Outputs] | None = None,
    ) -> tuple[Outputs, int] | None:
        """Expand a node's ``repeat`` instances (``base.start`` … when indexed), each
        fed by the one before on its first input (the other inputs are the same for
        every instance: a flow step's condition); the last one's outputs and the number
        of instances. ``copies`` collects every instance's outputs."""
        repeat = self._repeat(node, node_doc, scope)
        if repeat is None:
            return None
        ports = what.ports
        if repeat > 1 and (not ports.names or ports.variadic):
            self.diags.error(
                node_doc.loc(("repeat",)),
                f"'repeat' feeds each instance's first input with the output of the one "
                f"before; {ports.what} takes {ports.listing()}",
            )
            return None
        raw_params = {k: v for k, v in node.items() if k not in NODE_KEYS}
        # A wrong init is reported and left out: the node is still wired up, so that
        # the spec's other mistakes are found in the same run.
        own = self._own_init(node, node_doc, scope)
        init = own or self._inherited
        outputs: Outputs = None
        for i in range(repeat):
            full = f"{base}.{start + i}" if indexed else base
            params = self._params(raw_params, {**scope, "index": i}, node_doc)
            if params is None:
                return None
            if i > 0:  # fed by the instance before: its only output, or its 'out'
                assert outputs is not None
                if len(outputs) != 1 and "out" not in outputs:
                    self.diags.error(
                        node_doc.loc(("repeat",)),
                        f"'repeat' feeds each instance with the output of the one before; "
                        f"{ports.what} has {quote_list(outputs)} and none is 'out'",
                    )
                    return None
                args = {
                    **args,
                    ports.names[0]: [outputs.get("out") or next(iter(outputs.values()))],
                }
            if what.entry is not None:
                self._check_params(what.entry, params, node_doc, raw_params, scope)
                outputs = self._leaf(full, what.entry, params, args, node_doc, init)
            else:
                assert what.composite is not None
                with self._inheriting(own):
                    outputs = self._composite(full, what.composite, params, args, node_doc, stack)
            if outputs is None:
                return None
            if copies is not None:
                copies.append(outputs)
        return outputs, repeat

    def _own_init(self, node: dict[str, Any], node_doc: Doc, scope: dict[str, Any]) -> Init | None:
        """The node's own ``init:`` (None: it has none, or it is wrong and reported)."""
        if "init" not in node:
            return None
        at = node_doc.loc(("init",))
        try:
            raw = substitute(node["init"], scope)
        except ExprError as exc:
            self.diags.error(at, str(exc))
            return None
        return parse_init(raw, at, self.diags)

    @contextlib.contextmanager
    def _inheriting(self, own: Init | None) -> Iterator[None]:
        """Leaves expanded inside take ``own`` when they have no init of their own."""
        saved = self._inherited
        if own is not None:
            self._inherited = own.inherited()
        try:
            yield
        finally:
            self._inherited = saved

    def _chain(
        self,
        prefix: str,
        name: str,
        node: dict[str, Any],
        node_doc: Doc,
        scope: dict[str, Any],
        local: dict[str, Outputs],
        stack: tuple[str, ...],
    ) -> Outputs:
        """A ``chain:`` node: its items one after another, numbered as nn.Sequential
        numbers its layers (``name.0``, ``name.1`` …; an item's ``repeat`` takes as many
        numbers, an item switched off by ``when`` none)."""
        items = node.get("chain")
        misplaced = [k for k in node if k not in CHAIN_KEYS]
        for key in misplaced:
            hint = (
                "put 'repeat' on an item of the chain"
                if key == "repeat"
                else "'block' and parameters belong to the items of the chain"
            )
            self.diags.error(
                node_doc.key_loc((key,)), f"node '{name}': '{key}' beside 'chain:'; {hint}"
            )
        if misplaced or not isinstance(items, list) or not items:
            return None  # a chain that is not a list of items is the schema's to report
        enabled = self._when(node, node_doc, scope)
        if enabled is None:
            return None
        if not enabled:
            return self._bypass(node, _ONE_INPUT, local, node_doc, name)
        bound = self._inputs(node.get("in"), _ONE_INPUT, local, node_doc, name)
        if bound is None:
            return None
        own = self._own_init(node, node_doc, scope)
        copies: list[Outputs] = []
        self._copies[id(local), name] = copies
        with self._inheriting(own):
            return self._chain_items(
                f"{prefix}{name}",
                name,
                items,
                node_doc,
                scope,
                bound["x"][0],
                stack,
                local,
                copies,
            )

    def _chain_items(
        self,
        base: str,
        name: str,
        items: list[Any],
        node_doc: Doc,
        scope: dict[str, Any],
        current: Value,
        stack: tuple[str, ...],
        local: dict[str, Outputs],
        copies: list[Outputs],
    ) -> Outputs:
        index = 0
        for k, item in enumerate(items):
            if not isinstance(item, dict):
                return None
            item_doc = node_doc.subtree(("chain", k))
            what = self._what(item, item_doc, scope)
            if what is None:
                return None
            enabled = self._when(item, item_doc, scope)
            if enabled is None:
                return None
            if not enabled:
                continue
            side = self._side_inputs(item, what.ports, name, item_doc, local)
            if side is None:
                return None
            args = {what.ports.names[0]: [current], **side}
            done = self._instances(
                base, True, index, what, item, item_doc, scope, args, stack, copies
            )
            if done is None:
                return None
            outputs, count = done
            alias = item.get("as")
            if isinstance(alias, str):
                self._named(local, name, alias, copies, index, count, item_doc)
            value = self._chain_value(outputs, name, what.ports.what, item_doc)
            if value is None:
                return None
            current, index = value, index + count
        if index == 0:
            self.diags.error(
                node_doc.loc(("chain",)), f"every item of chain '{name}' is switched off"
            )
            return None
        return {"out": current}

    def _named(
        self,
        local: dict[str, Outputs],
        chain: str,
        alias: str,
        copies: list[Outputs],
        index: int,
        count: int,
        item_doc: Doc,
    ) -> None:
        """``as: NAME`` on a chain item: ``chain.NAME`` is its (last copy's) output."""
        key = (id(local), chain)
        names = self._item_names.setdefault(key, {})
        if alias in names or alias.isdigit():
            self.diags.error(
                item_doc.loc(("as",)),
                f"chain '{chain}': the name '{alias}' "
                + ("is taken by another item" if alias in names else "is a number"),
            )
            return
        names[alias] = index + count - 1

    def _side_inputs(
        self,
        item: dict[str, Any],
        ports: Ports,
        name: str,
        item_doc: Doc,
        local: dict[str, Outputs],
    ) -> PortBindings | None:
        """The inputs of a chain item besides its first, which reads the item before:
        ``in: {port: ref}`` binds them by name (a flow step's condition)."""
        first, others = (ports.names[0], ports.names[1:]) if ports.names else ("", ())
        raw = item.get("in")
        if not ports.names or ports.variadic or (ports.min_inputs > 1 and raw is None):
            self.diags.error(
                item_doc.loc(("block",)),
                f"an item of chain '{name}' reads the item before on its first input; "
                f"{ports.what} takes {ports.listing()}"
                + (f": bind {quote_list(others)} with 'in: {{port: ref}}'" if others else ""),
            )
            return None
        if raw is None:
            return {}
        if not isinstance(raw, dict) or first in raw:
            self.diags.error(
                item_doc.key_loc(("in",)),
                f"an item of chain '{name}' takes the previous item's output on '{first}'; "
                + (
                    f"its 'in:' may only bind its other inputs by name ({quote_list(others)})"
                    if others
                    else "remove its 'in:'"
                ),
            )
            return None
        side = Ports(others, False, max(ports.min_inputs - 1, 0), ports.what)
        return self._inputs(raw, side, local, item_doc, name)

    def _chain_value(self, outputs: Outputs, name: str, what: str, item_doc: Doc) -> Value | None:
        if outputs is None:
            return None
        if len(outputs) == 1:
            return next(iter(outputs.values()))
        if "out" in outputs:
            return outputs["out"]
        self.diags.error(
            item_doc.loc(("block",)),
            f"an item of chain '{name}' must have one output; {what} has {quote_list(outputs)}",
        )
        return None

    def _when(self, node: dict[str, Any], node_doc: Doc, scope: dict[str, Any]) -> bool | None:
        """Whether a node is on (true without ``when:``); None when its ``when`` is wrong."""
        if "when" not in node:
            return True
        raw = node["when"]
        at = node_doc.loc(("when",))
        try:
            value = substitute(raw, scope)
        except ExprError as exc:
            self.diags.error(at, str(exc))
            return None
        if not isinstance(value, bool):
            if is_expression(raw):  # a plain wrong value is reported by the schema check
                self.diags.error(at, f"'when' must be true or false, got {value!r} from '{raw}'")
            return None
        return value

    def _bypass(
        self,
        node: dict[str, Any],
        ports: Ports,
        local: dict[str, Outputs],
        node_doc: Doc,
        name: str,
    ) -> Outputs:
        """A node switched off by ``when: false`` passes its first input through; one
        that has no inputs (a tensor a checkpoint carries only in some configurations)
        is left out, and reading it is a mistake."""
        if not ports.names:
            return {"out": [Source(f"{OFF}{name}")]}
        args = self._inputs(node.get("in"), ports, local, node_doc, name)
        if args is None:
            return None
        first = next((value for values in args.values() for value in values), None)
        if first is None:
            self.diags.error(
                node_doc.loc(("when",)),
                f"node '{name}' is switched off by 'when' but has no input to pass through",
            )
            return None
        return {"out": first}

    def _repeat(self, node: dict[str, Any], node_doc: Doc, scope: dict[str, Any]) -> int | None:
        raw = node.get("repeat", 1)
        at = node_doc.loc(("repeat",))
        try:
            value = substitute(raw, scope)
        except ExprError as exc:
            self.diags.error(at, str(exc))
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.diags.error(at, f"'repeat' must be an integer, got {value!r}")
            return None
        if value < 1:
            self.diags.error(at, f"'repeat' must be at least 1, got {value}")
            return None
        if value > MAX_REPEAT:
            self.diags.error(at, f"'repeat' must be at most {MAX_REPEAT}, got {value}")
            return None
        return value

    @staticmethod
    def _ports(entry: Any, composite: BlockDef | None) -> Ports:
        if entry is not None:
            return Ports(entry.inputs, entry.variadic, entry.min_inputs, f"block '{entry.name}'")
        assert composite is not None
        names = tuple(composite.inputs)
        return Ports(names, False, len(names), f"block '{composite.name}'")

    def _params(
        self, raw: dict[str, Any], scope: dict[str, Any], node_doc: Doc
    ) -> dict[str, Any] | None:
        params = {}
        ok = True
        for key, value in raw.items():
            try:
                params[key] = substitute(value, scope)
            except ExprError as exc:
                self.diags.error(node_doc.loc((key,)), str(exc))
                ok = False
        return params if ok else None

    # -------------------------------------------------------------------- inputs
    def _inputs(
        self, raw: Any, ports: Ports, local: dict[str, Outputs], node_doc: Doc, name: str
    ) -> PortBindings | None:
        """Bind a node's ``in:`` to the ports of what it instantiates."""
        owner = f"node '{name}'"

        def resolve(ref: str, at: Loc | None) -> Value | None:
            return self._resolve(ref, local, at, owner)

        return bind(raw, ports, resolve, node_doc, (), self.diags, owner).ports

    def _resolve(
        self, ref: Any, local: dict[str, Outputs], at: Loc | None, owner: str
    ) -> Value | None:
        """A reference ``node`` or ``node.port`` to a value in the local scope."""
        if not isinstance(ref, str):
            return None
        if ref.partition(".")[0] == "data":
            self.diags.error(at, f"'{ref}': data can only be used in the training graph ('graph:')")
            return None
        base, _, rest = ref.partition(".")
        copies = self._copies.get((id(local), base))
        index, _, port = rest.partition(".")
        named = self._item_names.get((id(local), base), {})
        if copies is not None and index in named:
            index = str(named[index])
        if copies is not None and index.isdigit():
            return self._copy(copies, base, int(index), port, at)
        if base in local and local[base] is None:
            # A node that failed (reported there): its readers are still expanded on a
            # stand-in value, so that their own mistakes are reported in the same run.
            self._failed = True
            return [FAILED]
        found = resolve_reference(ref, local, at, self.diags, owner)
        if found is None:
            return None
        node, port = found
        outputs = local[node]
        assert outputs is not None  # a failed node is handled above
        return outputs[port]

    def _copy(
        self, copies: list[Outputs], base: str, index: int, port: str, at: Loc | None
    ) -> Value | None:
        """``base.N`` or ``base.N.port``: an output of copy N of the repeated node (or
        of item N of the chain) ``base``."""
        if index >= len(copies):
            self.diags.error(
                at, f"'{base}.{index}': '{base}' has {len(copies)} copies (0 to {len(copies) - 1})"
            )
            return None
        outputs = copies[index]
        if outputs is None:
            return None
        name = f"{base}.{index}"
        if port:
            if port not in outputs:
                self.diags.error(
                    at,
                    f"'{name}' has no output '{port}'{did_you_mean(port, outputs)}; "
                    f"outputs: {quote_list(outputs)}",
                )
                return None
            return outputs[port]
        if len(outputs) != 1 and "out" not in outputs:
            self.diags.error(
                at, f"'{name}' has several outputs ({quote_list(outputs)}): write '{name}.PORT'"
            )
            return None
        return outputs.get("out") or next(iter(outputs.values()))

    # ---------------------------------------------------------- leaves, composites
    def _leaf(
        self,
        full: str,
        entry: Any,
        params: dict[str, Any],
        args: dict[str, list[Value]],
        node_doc: Doc,
        init: Init | None = None,
    ) -> Outputs:
        # A node with bad parameters (checked by the caller) is still wired up, so that
        # later checks can find the other mistakes of the same spec.
        if self.graph.number_of_nodes() >= MAX_NODES:
            self.diags.error(node_doc.loc(()), f"the network has more than {MAX_NODES} nodes")
            raise _TooBig
        bindings: PortBindings = args
        self.graph.add_node(
            full,
            kind="block",
            block=entry.name,
            params=params,
            ports=bindings,
            loc=node_doc.loc(()),
            init=init,
            init_loc=node_doc.loc(("init",)) if init is not None and init.explicit else None,
        )
        off = [s.node.removeprefix(OFF) for s in sources_of(bindings) if s.node.startswith(OFF)]
        if off:
            self.diags.error(
                node_doc.loc(("in",)),
                f"node '{full}' reads '{off[0]}', which is switched off by 'when' and has no "
                "input to pass through",
            )
            return None
        shared = self._shared_with(full)
        if shared is not None:
            target = self.graph.nodes.get(shared)
            if target is None or target.get("block") != entry.name:
                self.diags.error(
                    node_doc.loc(()),
                    f"node '{full}' cannot share the weights of '{shared}': "
                    + (
                        "no such node was built"
                        if target is None
                        else f"it runs '{target.get('block')}', not '{entry.name}'"
                    ),
                )
                return None
            self.graph.nodes[full]["shared"] = target.get("shared") or shared
            self.graph.nodes[full]["init"] = None
        sources = [source for values in bindings.values() for value in values for source in value]
        if FAILED in sources:
            pass  # the network is refused anyway; only this node's own checks matter
        elif any(source.node.startswith("@") for source in sources):
            self._pending.append(full)  # wired once the aliases are known
        else:
            self.graph.add_edges_from((source.node, full) for source in sources)
        return {port: [Source(full, port)] for port in entry.outputs}

    def _check_params(
        self,
        entry: Any,
        params: dict[str, Any],
        node_doc: Doc,
        raw: dict[str, Any] | None = None,
        scope: dict[str, Any] | None = None,
    ) -> None:
        # Instances of one definition mostly share parameters: check each set once.
        key = (entry.name, json.dumps(params, sort_keys=True, default=str))
        if key in self._valid_params:
            return
        before = len(self.diags.items)
        if not check_schema(
            entry.validator,
            params,
            node_doc,
            self.diags,
            namer=lambda p: (
                f"parameter '{p[0]}' of block '{entry.name}'" if p else f"block '{entry.name}'"
            ),
            key_word="parameter",
        ):
            self._valid_params.add(key)
        elif raw is not None and scope is not None:
            self._name_origins(before, raw, node_doc, scope)

    def _name_origins(
        self, before: int, raw: dict[str, Any], node_doc: Doc, scope: dict[str, Any]
    ) -> None:
        """A bad value computed from a parameter: say where that parameter was set."""
        origins = scope.get(ORIGINS, {})
        for i in range(before, len(self.diags.items)):
            item = self.diags.items[i]
            for param, text in raw.items():
                if not is_expression(text) or item.loc != node_doc.loc((param,)):
                    continue
                names = [n for n in re.findall(r"\$([A-Za-z_]\w*)", text) if n in origins]
                if not names:
                    continue
                origin = origins[names[0]]
                if origin is not None and origin.file.startswith("<override"):
                    where = f"from {origin.file.removeprefix('<override ').removesuffix('>')}"
                else:
                    at: object = origin
                    if origin is not None and item.loc is not None and origin.file == item.loc.file:
                        at = f"line {origin.line}, column {origin.col}"
                    value = scope.get(names[0])
                    where = f"from '{text}', with {names[0]} = {value!r} set at {at}"
                self.diags.items[i] = dataclasses.replace(item, message=f"{item.message} ({where})")
                break

    def _shared_with(self, full: str) -> str | None:
        """The leaf whose module ``full`` calls, inside a ``share:`` node."""
        for new, old in reversed(self._sharing):
            if full == new or full.startswith(f"{new}."):
                return old + full[len(new) :]
        return None

    def _composite(
        self,
        full: str,
        block: BlockDef,
        params: dict[str, Any],
        args: dict[str, list[Value]],
        node_doc: Doc,
        stack: tuple[str, ...],
    ) -> Outputs:
        # A block may contain itself when a parameter ends the recursion (a U-Net level
        # holds the next level, switched off by `when:` at the innermost one); without
        # such an end the nesting runs past MAX_NESTING and is reported with its cycle.
        if stack.count(block.name) >= MAX_NESTING:
            first = stack.index(block.name)
            cycle = " → ".join([*stack[first : stack.index(block.name, first + 1) + 1]])
            self.diags.error(
                node_doc.loc(("block",)),
                f"recursive block definition: {cycle} (nested more than {MAX_NESTING} levels; "
                "end the recursion with 'when:')",
            )
            return None
        scope = self._composite_scope(block, params, node_doc, (), dict(self.global_scope))
        if scope is None:
            return None
        bindings = {port: [s for v in values for s in v] for port, values in args.items()}
        return self._body(
            f"{full}.",
            block.data,
            block.doc,
            scope,
            bindings,
            (*stack, block.name),
            f"block '{block.name}'",
        )

    def _composite_scope(
        self, block: BlockDef, given: dict[str, Any], doc: Doc, base: Path, scope: dict[str, Any]
    ) -> dict[str, Any] | None:
        """The parameter values inside one instance of a composite block."""
        declared = as_dict(block.data.get("params"))
        origins: dict[str, Loc | None] = dict(scope.get(ORIGINS, {}))
        scope[ORIGINS] = origins
        ok = True
        for key in given:
            if key not in declared:
                self.diags.error(
                    doc.key_loc((*base, key)),
                    f"unknown parameter '{key}' for block "
                    f"'{block.name}'{did_you_mean(key, declared)}; parameters: "
                    f"{quote_list(declared)}",
                )
                ok = False
        for key, decl in declared.items():
            typed = isinstance(decl, dict) and "type" in decl
            if key in given:
                value = given[key]
                at = doc.loc((*base, key))
            elif typed and "default" not in decl:
                self.diags.error(doc.loc(()), f"block '{block.name}' needs parameter '{key}'")
                ok = False
                continue
            else:
                default = decl.get("default") if typed else decl
                at = block.doc.loc(("params", key))
                try:
                    value = substitute(default, scope)
                except ExprError as exc:
                    self.diags.error(at, str(exc))
                    ok = False
                    continue
            if typed and not self._check_typed(block, key, decl, value, at):
                ok = False
                continue
            scope[key] = value
            origins[key] = at
        return scope if ok else None

    def _check_typed(
        self, block: BlockDef, key: str, decl: dict[str, Any], value: Any, at: Loc | None
    ) -> bool:
        kinds: dict[str, type | tuple[type, ...]] = {
            "int": int,
            "float": (int, float),
            "bool": bool,
            "str": str,
            "list": list,
        }
        want = decl["type"]  # typed declarations have one
        if is_expression(value):
            return True
        expected = kinds.get(want)
        bad_bool = isinstance(value, bool) and want in ("int", "float")
        if expected is not None and (not isinstance(value, expected) or bad_bool):
            self.diags.error(
                at,
                f"parameter '{key}' of block '{block.name}' must be of type {want}, got {value!r}",
            )
            return False
        if "choices" in decl and value not in decl["choices"]:
            self.diags.error(
                at,
                f"parameter '{key}' of block '{block.name}' must be one of "
                f"{quote_list(map(str, decl['choices']))}, got {value!r}",
            )
            return False
        if isinstance(value, int | float) and not isinstance(value, bool):
            if "min" in decl and value < decl["min"]:
                self.diags.error(
                    at,
                    f"parameter '{key}' of block '{block.name}' must be ≥ "
                    f"{decl['min']}, got {value}",
                )
                return False
            if "max" in decl and value > decl["max"]:
                self.diags.error(
                    at,
                    f"parameter '{key}' of block '{block.name}' must be ≤ "
                    f"{decl['max']}, got {value}",
                )
                return False
        return True

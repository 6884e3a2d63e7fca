"""Ports: how a node's ``in:`` binds to the input ports of what it runs.

One set of rules serves the nodes of networks and composite blocks and the nodes of
the training graph (``graph:``):

* ``in: ref`` is one input;
* ``in: [a, b, …]`` is positional: for one input port the items are concatenated
  along channels, for a variadic port each item is one input, otherwise the items fill
  the ports in order and there must be between the required and the total number of
  ports of them;
* ``in: {port: ref}`` binds by port name; a port given a list concatenates it (or, on
  a variadic port, takes each item as one input); every required port must be bound.

A reference is ``node`` or ``node.port``; which names it may use is the caller's
business (a network's nodes and inputs, or the training graph's nodes and ``data.*``),
given here as a resolver. The shape of ``in:`` itself (a list of strings, at least one)
is the schema's to report, so a malformed value fails here without a second message.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.graph.model import PortBindings, Source
from engine.spec.diagnostics import Diagnostics, Loc, did_you_mean, quote_list
from engine.spec.yamlio import Doc, Path

#: A value flowing along a graph: sources concatenated along channels.
Value = list[Source]
#: A reference string and where it was written → its value (None: reported there).
Resolver = Callable[[str, Loc | None], Value | None]


@dataclass(frozen=True)
class Ports:
    """The input side of something a node runs: a block, a composite or a network."""

    names: tuple[str, ...]
    variadic: bool
    min_inputs: int
    what: str  # "block 'conv'", "network 'G'", "loss 'l1'": for messages

    def listing(self) -> str:
        """``x, y`` — or, for a variadic block, ``any number on 'x'``."""
        if self.variadic:
            return f"any number on '{self.names[0]}'"
        return ", ".join(self.names) if self.names else "none"


@dataclass
class Binding:
    """What one ``in:`` bound: its port bindings, and every source it read."""

    ports: PortBindings | None  # None: the ``in:`` is wrong (already reported)
    sources: list[Source] = field(default_factory=list)  # resolved even when it failed


def references(raw: Any) -> list[tuple[str, Path]]:
    """Every reference string in an ``in:`` value, with its path below the node."""
    if isinstance(raw, str):
        return [(raw, ("in",))]
    if isinstance(raw, list):
        return [(r, ("in", i)) for i, r in enumerate(raw) if isinstance(r, str)]
    if isinstance(raw, dict):
        found: list[tuple[str, Path]] = []
        for port, value in raw.items():
            if isinstance(value, str):
                found.append((value, ("in", port)))
            elif isinstance(value, list):
                found.extend(
                    (r, ("in", port, i)) for i, r in enumerate(value) if isinstance(r, str)
                )
        return found
    return []


def resolve_reference(
    ref: str,
    nodes: Mapping[str, Collection[str] | None],
    at: Loc | None,
    diags: Diagnostics,
    owner: str | None = None,
) -> tuple[str, str] | None:
    """``node`` or ``node.port`` → (node, output port), given each node's output ports.

    A node whose outputs are None failed earlier and was reported there; a reference
    to it fails quietly. ``owner`` ("node 'up'") prefixes the unknown-reference message.
    """
    base, _, port = ref.partition(".")
    if base not in nodes:
        prefix = f"{owner}: " if owner else ""
        diags.error(at, f"{prefix}unknown reference '{base}'{did_you_mean(base, nodes)}")
        return None
    outputs = nodes[base]
    if outputs is None:
        return None
    if not port:
        if len(outputs) == 1:
            return base, next(iter(outputs))
        if "out" in outputs:
            return base, "out"
        diags.error(
            at,
            f"'{base}' has several outputs ({quote_list(outputs)}): write "
            f"'{base}.{next(iter(outputs), 'out')}'",
        )
        return None
    if port not in outputs:
        hint = did_you_mean(port, outputs)
        if not hint and port in nodes:
            hint = f"; '{port}' is a node of its own: write '{port}'"
        elif not hint and (port.split(".")[0].isdigit() or "." in port):
            hint = (
                f"; only the outputs of '{base}' can be named ('{base}.PORT'), not the "
                "nodes inside a composite ('NODE.N' names copy N of a repeated node or "
                "item N of a chain)"
            )
        diags.error(at, f"'{base}' has no output '{port}'{hint}; outputs: {quote_list(outputs)}")
        return None
    return base, port


def bind(
    raw: Any,
    ports: Ports,
    resolve: Resolver,
    doc: Doc,
    base: Path,
    diags: Diagnostics,
    who: str,
) -> Binding:
    """Bind the ``in:`` of the node at ``base`` in ``doc`` to ``ports``.

    ``who`` names the node in messages ("node 'up'", "graph node 'fake'"). Every
    problem is reported; the binding's ``ports`` is None when there was one.
    """
    if raw is None:
        if ports.names and ports.min_inputs > 0:
            diags.error(
                doc.loc(base),
                f"{who} has no input: add 'in:' ({ports.what} takes {ports.listing()})",
            )
            return Binding(None)
        return Binding({})
    if isinstance(raw, dict):
        return _by_port(raw, ports, resolve, doc, base, diags, who)
    return _positional(raw, ports, resolve, doc, base, diags)


def _values(
    items: list[Any], paths: list[Path], resolve: Resolver, doc: Doc, base: Path
) -> tuple[list[Value], bool]:
    """Resolve each reference; report every one that fails (all, not just the first)."""
    values: list[Value] = []
    ok = bool(items)
    for ref, path in zip(items, paths, strict=True):
        value = resolve(ref, doc.loc((*base, *path))) if isinstance(ref, str) else None
        if value is None:
            ok = False
        else:
            values.append(value)
    return values, ok


def _positional(
    raw: Any,
    ports: Ports,
    resolve: Resolver,
    doc: Doc,
    base: Path,
    diags: Diagnostics,
) -> Binding:
    items = raw if isinstance(raw, list) else [raw]
    paths: list[Path] = (
        [("in", i) for i in range(len(items))] if isinstance(raw, list) else [("in",)]
    )
    values, ok = _values(items, paths, resolve, doc, base)
    sources = [s for v in values for s in v]
    at = doc.loc((*base, "in"))
    problem = _count_problem(len(items), ports)
    if problem is not None and items:
        diags.error(at, problem)
        ok = False
    if not ok:
        return Binding(None, sources)
    if ports.variadic:
        return Binding({ports.names[0]: values}, sources)
    if len(ports.names) == 1:
        return Binding({ports.names[0]: [sources]}, sources)
    filled = ports.names[: len(values)]  # the optional ports at the end may stay empty
    return Binding({port: [value] for port, value in zip(filled, values, strict=True)}, sources)


def _count_problem(count: int, ports: Ports) -> str | None:
    """What is wrong with giving ``count`` positional inputs to ``ports``, if anything."""
    if not ports.names:
        return f"{ports.what} takes no inputs"
    if ports.variadic or len(ports.names) == 1:
        low = max(ports.min_inputs, 1)
        if count < low:
            return f"{ports.what} needs at least {low} input{'s' * (low > 1)}, got {count}"
        return None
    if ports.min_inputs <= count <= len(ports.names):
        return None
    wanted = (
        str(len(ports.names))
        if ports.min_inputs == len(ports.names)
        else f"{ports.min_inputs} to {len(ports.names)}"
    )
    return f"{ports.what} takes {wanted} inputs ({ports.listing()}), got {count}"


def _by_port(
    raw: dict[str, Any],
    ports: Ports,
    resolve: Resolver,
    doc: Doc,
    base: Path,
    diags: Diagnostics,
    who: str,
) -> Binding:
    bound: PortBindings = {}
    sources: list[Source] = []
    ok = True
    misnamed = False
    for port, refs in raw.items():
        if port not in ports.names:
            diags.error(
                doc.key_loc((*base, "in", port)),
                f"{ports.what} has no input port '{port}'{did_you_mean(port, ports.names)}; "
                f"ports: {ports.listing()}",
            )
            ok = False
            misnamed = True
            continue
        items = refs if isinstance(refs, list) else [refs]
        paths: list[Path] = (
            [("in", port, i) for i in range(len(items))]
            if isinstance(refs, list)
            else [("in", port)]
        )
        values, resolved = _values(items, paths, resolve, doc, base)
        sources += [s for v in values for s in v]
        if not resolved:
            ok = False
            continue
        if ports.variadic:
            if len(values) < ports.min_inputs:
                diags.error(
                    doc.loc((*base, "in", port)),
                    f"{ports.what} needs at least {ports.min_inputs} inputs, got {len(values)}",
                )
                ok = False
            bound[port] = values
        else:
            bound[port] = [[s for v in values for s in v]]
    missing = [p for p in ports.names[: ports.min_inputs] if p not in raw]
    if missing and not misnamed:  # a misspelt port is already reported as such
        several = len(missing) > 1
        diags.error(
            doc.loc((*base, "in")),
            f"{who}: input port{'s' * several} {quote_list(missing)} of {ports.what} "
            f"{'are' if several else 'is'} not connected",
        )
        ok = False
    return Binding(bound if ok else None, sources)

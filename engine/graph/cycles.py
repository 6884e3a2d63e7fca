"""Cycles: each one reported once, with its path, at the node where it is entered."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import networkx as nx

from engine.spec.diagnostics import Diagnostics, Loc


def cycles(graph: nx.DiGraph[str]) -> list[set[str]]:
    """The strongly connected components that hold a cycle (a node reading itself too)."""
    return [
        component
        for component in nx.strongly_connected_components(graph)
        if len(component) > 1 or any(graph.has_edge(n, n) for n in component)
    ]


def report_cycles(
    graph: nx.DiGraph[str],
    order: Sequence[str],
    at: Callable[[str], Loc | None],
    what: str,
    diags: Diagnostics,
) -> set[str]:
    """Report every cycle of ``graph`` (``cycle in WHAT: a → b → a``); return its nodes.

    Each strongly connected component with a cycle is one error, placed by ``at`` at
    its member that comes first in ``order`` (the order the spec writes them in); the
    path is searched from there.
    """
    position = {name: i for i, name in enumerate(order)}
    cyclic: set[str] = set()
    for component in cycles(graph):
        first = min(component, key=lambda n: (position.get(n, len(position)), n))
        cycle = nx.find_cycle(graph.subgraph(component), source=first)
        path = " → ".join([*(u for u, _ in cycle), cycle[0][0]])
        diags.error(at(first), f"cycle in {what}: {path}")
        cyclic |= component
    return cyclic

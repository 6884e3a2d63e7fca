"""Parameter selectors: which leaf nodes an optimizer, a group or ``frozen`` names.

One rule for ``validate`` and for the run, so that what validates is what trains. A
selector names **leaf nodes** (qualified by network: ``G.body.3.rdb1.conv2``):

* a network name names all its parameterized nodes (``G``);
* a node path names the node and every node below it, at dot boundaries
  (``G.body`` names ``G.body.0.conv``, not ``G.body_tail``);
* a glob (``*``, ``?``, ``[...]``) is matched against the qualified node names
  (``D.d?`` names ``D.d1``; ``*`` also crosses dots).

A parameter goes with the leaf node that holds it: the longest node name that is the
parameter's name or a dotted prefix of it. So every parameter of a node goes with it,
however the module stores them (a spectral-norm conv ``D.d1`` holds ``D.d1.bias`` and
``D.d1.parametrizations.weight.original``). Selectors never name single parameters:
``G.*.bias`` matches no node, and ``validate`` says so.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence

from engine.graph.model import Network
from engine.spec.catalog import Catalog, default_catalog

GLOB_CHARACTERS = "*?["


def parameter_nodes(
    networks: Mapping[str, Network | None], catalog: Catalog | None = None
) -> dict[str, list[str]]:
    """Per trainable network, its leaf nodes that may hold parameters (qualified names).

    Networks that failed to expand (None) and frozen ones (``trainable: false``) have
    no entry.
    """
    if catalog is None:
        catalog = default_catalog()
    found: dict[str, list[str]] = {}
    for name, net in networks.items():
        if net is None or not net.trainable:
            continue
        leaves = []
        for leaf in net.leaves():
            attrs = net.node(leaf)
            entry = catalog.get(attrs["block"])
            # A node that shares another's weights holds none of its own.
            if entry is not None and entry.trainable and not attrs.get("shared"):
                leaves.append(f"{name}.{leaf}")
        found[name] = leaves
    return found


def is_glob(selector: str) -> bool:
    return any(ch in selector for ch in GLOB_CHARACTERS)


def select(selector: str, nodes: Mapping[str, Sequence[str]]) -> list[str]:
    """The qualified leaf nodes ``selector`` names, given each network's leaf nodes."""
    if selector in nodes:
        return list(nodes[selector])
    everything = [leaf for leaves in nodes.values() for leaf in leaves]
    if is_glob(selector):
        return [leaf for leaf in everything if fnmatch.fnmatchcase(leaf, selector)]
    below = selector + "."
    return [leaf for leaf in everything if leaf == selector or leaf.startswith(below)]


def owning_node(parameter: str, nodes: Collection[str]) -> str | None:
    """The leaf node that holds ``parameter``: the longest node name that equals it or
    is a dotted prefix of it (None: no node holds it)."""
    candidate = parameter
    while True:
        if candidate in nodes:
            return candidate
        if "." not in candidate:
            return None
        candidate = candidate.rsplit(".", 1)[0]


def parameter_selector(
    parameters: Iterable[str], nodes: Mapping[str, Sequence[str]]
) -> Callable[[str], list[str]]:
    """Selector → the parameter names it names (in the order of ``parameters``).

    The owner of each parameter is found once; use this when selecting many times
    (every optimizer, group and frozen entry of a run).
    """
    leaves = {leaf for names in nodes.values() for leaf in names}
    owner = {name: owning_node(name, leaves) for name in parameters}

    def chosen(selector: str) -> list[str]:
        selected = set(select(selector, nodes))
        return [name for name, node in owner.items() if node in selected]

    return chosen


def select_parameters(
    selector: str, parameters: Iterable[str], nodes: Mapping[str, Sequence[str]]
) -> list[str]:
    """The parameter names whose owning leaf node ``selector`` names."""
    return parameter_selector(parameters, nodes)(selector)


def unowned_parameters(parameters: Iterable[str], nodes: Mapping[str, Sequence[str]]) -> list[str]:
    """Parameters of trainable networks that no parameterized leaf node holds.

    No selector can reach them, so a run should refuse them rather than leave them
    untrained (it means the block catalog says a block has no parameters when it has).
    """
    leaves = {leaf for names in nodes.values() for leaf in names}
    return [
        name
        for name in parameters
        if name.split(".", 1)[0] in nodes and owning_node(name, leaves) is None
    ]

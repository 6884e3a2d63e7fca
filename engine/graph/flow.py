"""Invertible networks: the path of a normalizing flow through a network's leaves.

A network with ``flow: INPUT`` is a normalizing flow on INPUT (SRFlow: the HR image),
conditioned on its other inputs (the LR image). Its invertible leaves (registered with
``invertible=True``: actnorm, invconv, couplings, squeeze, flow_split) must form one
chain from INPUT: each reads the value before it on its first input, and nothing else
reads a value of the chain — otherwise the network could not be run backwards. The
rest of the network (an RRDB encoder, the resized features) only computes conditions,
which the steps read on their other inputs.

The network's outputs are its latents: the chain's last value (the top latent) and,
optionally, the ``z`` a ``flow_split`` hands out; the compiler adds ``logdet``, the
sum of the steps' log-determinants. ``call: G, reverse: true`` takes the conditions
and the latents it is given, draws the others, and returns INPUT.
"""

from __future__ import annotations

from engine.graph.model import FlowPlan, Network, Source
from engine.spec.catalog import Catalog
from engine.spec.diagnostics import Diagnostics, Loc, did_you_mean

#: The output every invertible network has besides its latents.
LOGDET = "logdet"


def has_steps(network: Network, catalog: Catalog) -> bool:
    """Whether any node of the expanded network is a step of a normalizing flow."""
    g = network.graph
    return any(_is_invertible(catalog, g.nodes[n]["block"]) for n in network.leaves())


def plan(
    network: Network, flow_input: str | None, catalog: Catalog, at: Loc | None, diags: Diagnostics
) -> FlowPlan | None:
    """Check the network's flow and return its plan; None (reported) when it has none
    or it is broken. Without ``flow:``, invertible blocks are refused."""
    g = network.graph
    leaves = network.leaves()
    invertible = {n for n in leaves if _is_invertible(catalog, g.nodes[n]["block"])}
    if flow_input is None:
        for name in sorted(invertible, key=leaves.index)[:1]:
            diags.error(
                g.nodes[name].get("loc"),
                f"node '{name}' ({g.nodes[name]['block']}) is a step of a normalizing flow; "
                f"declare the input it transforms on network '{network.name}' "
                "('flow: INPUT')",
            )
        return None
    if flow_input not in network.inputs:
        diags.error(
            at,
            f"network '{network.name}': 'flow: {flow_input}' names no input"
            f"{did_you_mean(flow_input, network.inputs)}; inputs: {', '.join(network.inputs)}",
        )
        return None
    readers = _readers(network)
    steps: list[str] = []
    latents: dict[str, str] = {}
    current = Source(flow_input)
    while True:
        following = readers.get(current, [])
        if not following:
            break
        name, port, alone = following[0]
        attrs = g.nodes[name]
        first = _first_port(catalog, attrs["block"])
        if len(following) > 1 or name not in invertible or port != first or not alone:
            other = next(
                (f for f in following if f[0] not in invertible or f[1] != first or not f[2]),
                following[-1],
            )
            diags.error(
                g.nodes[other[0]].get("loc"),
                f"node '{other[0]}' reads '{current}', a value of the flow of network "
                f"'{network.name}'; only the next invertible step may read it, on its first "
                "input and alone, or the network cannot be run backwards",
            )
            return None
        steps.append(name)
        for extra in _outputs(catalog, attrs["block"])[1:]:
            latent = Source(name, extra)
            if readers.get(latent):
                diags.error(
                    g.nodes[readers[latent][0][0]].get("loc"),
                    f"node '{readers[latent][0][0]}' reads the latent '{latent}'; latents of "
                    f"a flow can only be outputs of network '{network.name}'",
                )
                return None
        current = Source(name, _outputs(catalog, attrs["block"])[0])
    stray = sorted(invertible - set(steps), key=leaves.index)
    if stray:
        diags.error(
            g.nodes[stray[0]].get("loc"),
            f"node '{stray[0]}' ({g.nodes[stray[0]]['block']}) is a flow step outside the flow "
            f"of network '{network.name}' (which starts at its input '{flow_input}')",
        )
        return None
    top = None
    for port, value in network.outputs.items():
        if port == LOGDET:
            diags.error(at, f"network '{network.name}': '{LOGDET}' is the flow's own output")
            return None
        source = value[0] if len(value) == 1 else None
        if source == current:
            top = port
        elif source is not None and source.node in steps and source.port != "out":
            latents[port] = source.node
        else:
            diags.error(
                at,
                f"network '{network.name}': output '{port}' is not a latent of its flow; the "
                "outputs of an invertible network are the last step's value and the 'z' of "
                "its splits",
            )
            return None
    if not steps or top is None:
        diags.error(
            at,
            f"network '{network.name}': the flow from '{flow_input}' must end in an output "
            f"(its last step's value is '{current}')",
        )
        return None
    conditions = tuple(n for n in network.inputs if n != flow_input)
    return FlowPlan(flow_input, tuple(steps), top, latents, conditions)


def _is_invertible(catalog: Catalog, block: str) -> bool:
    entry = catalog.get(block)
    return entry is not None and entry.invertible


def _outputs(catalog: Catalog, block: str) -> tuple[str, ...]:
    entry = catalog.get(block)
    return ("out",) if entry is None else entry.outputs


def _first_port(catalog: Catalog, block: str) -> str | None:
    entry = catalog.get(block)
    return entry.inputs[0] if entry is not None and entry.inputs else None


def _readers(network: Network) -> dict[Source, list[tuple[str, str, bool]]]:
    """Each value → the leaves that read it: (leaf, port, read alone on that port)."""
    found: dict[Source, list[tuple[str, str, bool]]] = {}
    for name in network.leaves():
        for port, groups in network.graph.nodes[name]["ports"].items():
            for group in groups:
                for source in group:
                    alone = len(groups) == 1 and len(group) == 1
                    found.setdefault(source, []).append((name, port, alone))
    return found

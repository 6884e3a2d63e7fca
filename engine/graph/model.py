"""What expansion produces: one graph per network, plus the training graph."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from engine.spec.diagnostics import Loc


@dataclass(frozen=True)
class Source:
    """One output port of one node (a leaf block or a network input)."""

    node: str
    port: str = "out"

    def __str__(self) -> str:
        return self.node if self.port == "out" else f"{self.node}.{self.port}"


#: Per input port, a list of arguments; each argument is a list of sources that are
#: concatenated along channels (usually just one source).
PortBindings = dict[str, list[list[Source]]]


@dataclass
class Network:
    """A network after expansion: leaf blocks only, named hierarchically."""

    name: str
    graph: nx.DiGraph[str]
    inputs: dict[str, int]
    outputs: dict[str, list[Source]]
    trainable: bool
    loc: Loc | None
    pad: str | None = None  # pad inputs to the size multiple and crop back (reflect, ...)
    flow: FlowPlan | None = None  # an invertible network (``flow: INPUT``)

    def leaves(self) -> list[str]:
        return [n for n, a in self.graph.nodes(data=True) if a["kind"] == "block"]

    def node(self, name: str) -> dict[str, Any]:
        return self.graph.nodes[name]


@dataclass(frozen=True)
class FlowPlan:
    """An invertible network: which input the flow transforms, its steps in order, and
    which outputs are its latents (see :mod:`engine.graph.flow`)."""

    input: str
    steps: tuple[str, ...]  # the flow's leaves, from the input to the top latent
    top: str  # the output port of the last step's value
    latents: dict[str, str]  # output port → the step that splits it off (its port 'z')
    conditions: tuple[str, ...]  # the network's other inputs

    @property
    def reverse_inputs(self) -> tuple[str, ...]:
        """What a reverse call takes: the conditions, then the latents (optional)."""
        return (*self.conditions, self.top, *self.latents)


@dataclass
class TrainingGraph:
    """The training computation: network calls, ops and losses over ``data.*``."""

    graph: nx.DiGraph[str] = field(default_factory=nx.DiGraph)

    def losses(self) -> list[str]:
        return [n for n, a in self.graph.nodes(data=True) if a.get("kind") == "loss"]

"""The step program: evaluating the training graph for each optimizer step.

One iteration runs the active steps of the current phase in order. For each step the
program computes only what that step's losses need (their ancestors in the graph),
and it knows the whole iteration in advance, which lets it do better than a typical
hand-written loop without changing any result:

* **a node is computed once per iteration** and reused by later steps as long as no
  network it depends on has been updated in between (versions are counted per
  network) — e.g. the generator's output, computed for the discriminator's step, is
  reused by the generator's step that follows;
* **gradients only where they are used**: a node is recorded for autograd only if this
  step or a later step that will reuse it can send gradients through it to parameters
  that step updates; anything else runs under ``torch.no_grad``. Inputs with no path
  to the step's parameters are detached, so backward never walks into networks that
  the step does not train.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import torch
from torch import nn

from blocks.memo import step_memo
from engine.compile.network import unwrap
from engine.graph.model import Source, TrainingGraph
from engine.settings.train import Weight

Values = dict[str, torch.Tensor]


@dataclass
class StepPlan:
    """What one optimizer step needs: its losses, networks and graph nodes."""

    name: str  # the optimizer
    weights: dict[str, Weight]  # the step's losses (a weight may ramp over the phase)
    trains: frozenset[str]  # networks whose parameters this step updates
    needed: list[str]  # graph nodes to evaluate, in order


@dataclass
class _Entry:
    outputs: Values
    versions: dict[str, int]
    grad: bool  # recorded for autograd
    spent: bool = False  # a backward already went through it (its graph is freed)


@dataclass
class Program:
    """Evaluates graph nodes; holds this iteration's cache."""

    training: TrainingGraph
    networks: dict[str, nn.Module]
    ops: dict[str, nn.Module]
    losses: dict[str, nn.Module]
    reach: dict[str, set[str]]  # node → trainable networks it can send gradients to
    autocast: Callable[[], Any] = nullcontext
    versions: dict[str, int] = field(default_factory=dict)
    cache: dict[str, _Entry] = field(default_factory=dict)
    batch: Values = field(default_factory=dict)
    #: Reverse call → the heat it runs at instead of its spec's (validation's draws).
    heats: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        g = self.training.graph
        self.order = list(nx.topological_sort(g))
        self.depends: dict[str, set[str]] = {}
        for name in self.order:
            attrs = g.nodes[name]
            deps: set[str] = set()
            for pred in g.predecessors(name):
                deps |= self.depends[pred]
            if attrs["kind"] == "call":
                deps.add(attrs["target"])
            self.depends[name] = deps

    # ----------------------------------------------------------------- planning
    def plan(self, optimizer: str, weights: dict[str, Weight], trains: frozenset[str]) -> StepPlan:
        g = self.training.graph
        wanted: set[str] = set(weights)
        for loss in weights:
            wanted |= nx.ancestors(g, loss)
        needed = [n for n in self.order if n in wanted and g.nodes[n]["kind"] != "data"]
        return StepPlan(optimizer, weights, trains, needed)

    def start_iteration(self, batch: Values) -> None:
        self.cache.clear()
        self.batch = batch

    def bump(self, networks: frozenset[str]) -> None:
        """Record that an optimizer step changed these networks."""
        for name in networks:
            self.versions[name] = self.versions.get(name, 0) + 1

    # --------------------------------------------------------------- evaluation
    def run_step(self, index: int, plans: list[StepPlan]) -> dict[str, torch.Tensor]:
        """Evaluate step ``index`` of this iteration's plans; return its loss values."""
        plan = plans[index]
        grad_later = self._grad_later(index, plans)
        losses = {}
        with step_memo():  # losses of this step share work (VGG features of one output)
            for name in plan.needed:
                needs_grad = bool(self.reach.get(name, set()) & plan.trains)
                # Networks that some backward will reach through this very computation.
                backprop = (set(plan.trains) if needs_grad else set()) | grad_later.get(name, set())
                entry = self.cache.get(name)
                if entry is not None and self._valid(name, entry, needs_grad):
                    outputs = entry.outputs
                else:
                    outputs = self._compute(name, plan.trains, backprop)
                    self.cache[name] = _Entry(outputs, self._versions(name), bool(backprop))
                if name in plan.weights:
                    losses[name] = outputs["out"]
        return losses

    def mark_backward(self, plan: StepPlan) -> None:
        """After a backward: graphs of the nodes on this step's gradient path are freed."""
        for name in plan.needed:
            entry = self.cache.get(name)
            if entry is not None and self.reach.get(name, set()) & plan.trains:
                entry.spent = True

    def retain_graph(self, index: int, plans: list[StepPlan]) -> bool:
        """Whether this step's backward must keep graphs a later step still needs."""
        plan = plans[index]
        later = self._grad_later(index, plans)
        return any(n in later and self.reach.get(n, set()) & plan.trains for n in plan.needed)

    def _grad_later(self, index: int, plans: list[StepPlan]) -> dict[str, set[str]]:
        """Nodes a later step will reuse with gradients (nothing they depend on changes
        before it), each with the networks that later step trains."""
        found: dict[str, set[str]] = {}
        updated: set[str] = set(plans[index].trains)
        for later in plans[index + 1 :]:
            for name in later.needed:
                if self.reach.get(name, set()) & later.trains and not self.depends[name] & updated:
                    found.setdefault(name, set()).update(later.trains)
            updated |= later.trains
        return found

    def _versions(self, name: str) -> dict[str, int]:
        return {net: self.versions.get(net, 0) for net in self.depends[name]}

    def _valid(self, name: str, entry: _Entry, needs_grad: bool) -> bool:
        if entry.versions != self._versions(name):
            return False
        return not needs_grad or (entry.grad and not entry.spent)

    def _value(self, source: Source, trains: frozenset[str]) -> torch.Tensor:
        if source.node.startswith("data."):
            return self.batch[source.node[5:]]
        value = self.cache[source.node].outputs[source.port]
        if not self.reach.get(source.node, set()) & trains and value.grad_fn is not None:
            return value.detach()  # no path to this step's parameters: keep backward short
        # (a leaf that records gradients, such as `interpolate`'s, stays: a gradient
        # penalty differentiates with respect to it)
        return value

    def _arguments(self, name: str, trains: frozenset[str]) -> dict[str, list[torch.Tensor]]:
        ports: dict[str, list[list[Source]]] = self.training.graph.nodes[name].get("ports", {})
        args: dict[str, list[torch.Tensor]] = {}
        for port, groups in ports.items():
            for group in groups:
                tensors = [self._value(s, trains) for s in group]
                args.setdefault(port, []).append(
                    tensors[0] if len(tensors) == 1 else torch.cat(tensors, 1)
                )
        return args

    def _compute(self, name: str, trains: frozenset[str], backprop: set[str]) -> Values:
        attrs = self.training.graph.nodes[name]
        args = self._arguments(name, trains)
        kind = attrs["kind"]
        with torch.enable_grad() if backprop else torch.no_grad():
            if kind == "call":
                net = self.networks[attrs["target"]]
                # Under DDP, a network no backward will train through must not wait for
                # its gradients to be reduced (a GAN's D inside the G step).
                no_sync = getattr(net, "no_sync", None) if attrs["target"] not in backprop else None
                inputs: dict[str, Any] = {port: values[0] for port, values in args.items()}
                if attrs.get("reverse"):  # an invertible network run backwards
                    inputs.update(reverse=True, heat=self.heats.get(name, attrs["heat"]))
                with self.autocast(), no_sync() if no_sync is not None else nullcontext():
                    out = net(**inputs)
                ports = getattr(unwrap(net), "output_ports", ("out",))
                if isinstance(out, dict):
                    return dict(out)
                return {ports[0]: out, "out": out}
            flat = [t for values in args.values() for t in values]
            if kind == "op":
                with self.autocast():
                    out = self.ops[name](*flat)
                entry = attrs["entry"]
                outs = out if isinstance(out, tuple | list) else (out,)
                return dict(zip(entry.outputs, outs, strict=False))
            with torch.autocast(device_type=flat[0].device.type, enabled=False):
                return {"out": self.losses[name](*[t.float() for t in flat])}

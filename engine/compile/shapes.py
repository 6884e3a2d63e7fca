"""Shape inference over the whole spec, before any data is read.

The data section says what a batch looks like (``data.lr`` is ``(B, 3, 32, 32)`` for
an x4 SR dataset with 128 crops); the training graph says which network sees what.
Walking the graph in order on shape-only tensors gives every network its input shapes
and checks every call, op and loss against the shapes that reach it. Problems become
diagnostics at the spec location of the offending node.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from blocks.registry import REGISTRY
from engine.compile.network import Inference, ShapeError, constructor_kwargs, infer, report
from engine.compile.probe import Probe, ProbeKind, Shape
from engine.data.kinds import KINDS
from engine.graph.model import Network, Source
from engine.load import Spec
from engine.spec.diagnostics import Diagnostics

DEFAULT_SIZE = 64


@dataclass
class SpecShapes:
    """Shapes of the data, of every graph value, and each network's shape pass."""

    data: dict[str, Shape] = field(default_factory=dict)
    values: dict[Source, Shape] = field(default_factory=dict)
    networks: dict[str, Inference] = field(default_factory=dict)


def data_shapes(spec: Spec, diags: Diagnostics, batch: int | None = None) -> dict[str, Shape]:
    """The tensors of one training batch, from the parsed ``data.train`` options (their
    crop, already checked against the scale by ``validate``)."""
    train = spec.settings.data.train
    if train is None:
        return {}
    scale = spec.settings.scale
    n = batch or train.batch_size
    c = train.channels
    if KINDS[train.kind].scaled:
        size = train.crop_size or DEFAULT_SIZE * scale
        lr = size // scale
        shapes: dict[str, Shape] = {"data.lr": (n, c, lr, lr), "data.hr": (n, c, size, size)}
        if train.kind == "sr_seg":  # probability maps at the HR size
            shapes["data.seg"] = (n, train.seg_classes, size, size)
        if train.kind == "frames":  # a window of LR frames around the HR centre frame
            shapes["data.lr"] = (n, train.frames, c, lr, lr)
            shapes["data.hr_frames"] = (n, train.frames, c, size, size)
        return shapes
    # The other types have no LR side: the spec's scale does not apply to their crop.
    size = train.crop_size or DEFAULT_SIZE * (1 if train.kind == "interp" else scale)
    return {f"data.{key}": (n, c, size, size) for key in KINDS[train.kind].provides}


def infer_spec(
    spec: Spec, diags: Diagnostics, batch: int | None = None, probe: ProbeKind = "meta"
) -> SpecShapes:
    """Walk the training graph with ``probe`` tensors (:mod:`engine.compile.probe`);
    networks not called get a default input."""
    shapes = SpecShapes(data=data_shapes(spec, diags, batch))
    n = next(iter(shapes.data.values()))[0] if shapes.data else batch or 1
    runner = Probe(probe, batch=n)
    g = spec.training.graph
    values: dict[Source, Shape] = {Source(k): v for k, v in shapes.data.items()}
    for name in nx.topological_sort(g) if nx.is_directed_acyclic_graph(g) else []:
        attrs = g.nodes[name]
        if attrs["kind"] in ("data", "invalid") or attrs.get("broken"):
            continue
        args = _args(attrs.get("ports", {}), values)
        if args is None:
            continue
        if attrs["kind"] == "call":
            _call(spec, name, attrs, args, values, shapes, diags, runner)
        elif attrs["kind"] == "op":
            _op(name, attrs, args, values, diags, runner)
        else:
            _loss(name, attrs, args, diags)
    n = batch or 1
    for name, net in spec.networks.items():
        if name not in shapes.networks:
            inputs: dict[str, Shape] = {
                k: (n, c, DEFAULT_SIZE, DEFAULT_SIZE) for k, c in net.inputs.items()
            }
            if net.flow is not None:  # the flow's input at the spec's scale
                del inputs[net.flow.input]
                inputs[net.flow.input] = flow_input_shape(net, inputs, spec.settings.scale)
            try:
                shapes.networks[name] = infer(net, inputs, runner)
            except ShapeError as exc:
                report(exc, diags)
    shapes.values = values
    return shapes


def _args(
    ports: dict[str, list[list[Source]]], values: dict[Source, Shape]
) -> dict[str, list[Shape]] | None:
    """Per port, the shape of each argument (concatenated groups joined on channels)."""
    out: dict[str, list[Shape]] = {}
    for port, groups in ports.items():
        for group in groups:
            if any(s not in values for s in group):
                return None  # an upstream node already failed
            parts = [values[s] for s in group]
            joined = (
                parts[0]
                if len(parts) == 1
                else (*parts[0][:1], sum(p[1] for p in parts), *parts[0][2:])
            )
            out.setdefault(port, []).append(joined)
    return out


def _call(
    spec: Spec,
    name: str,
    attrs: dict[str, Any],
    args: dict[str, list[Shape]],
    values: dict[Source, Shape],
    shapes: SpecShapes,
    diags: Diagnostics,
    probe: Probe,
) -> None:
    target = attrs["target"]
    net = spec.networks[target]
    if attrs.get("reverse"):
        _reverse_call(spec, name, attrs, args, values, shapes, diags, probe)
        return
    inputs = {}
    for port, channels in net.inputs.items():
        if port not in args:
            return
        shape = args[port][0]
        axis = 2 if len(shape) == 5 else 1  # a window of frames is (N, T, C, H, W)
        if len(shape) < 2 or shape[axis] != channels:
            got = shape[axis] if len(shape) > 1 else "no"
            diags.error(
                attrs["loc"],
                f"graph node '{name}': network '{target}' input '{port}' "
                f"takes {channels} channels, but gets {got} (shape {shape})",
            )
            return
        inputs[port] = shape
    known = shapes.networks.get(target)
    try:  # a network called again on the same shapes (D on real and on fake) runs once
        inference = known if known and known.input_shapes == inputs else infer(net, inputs, probe)
    except ShapeError as exc:
        report(exc, diags)
        diags.error(
            attrs["loc"],
            f"graph node '{name}': network '{target}' cannot run on "
            f"{', '.join(f'{k} {v}' for k, v in inputs.items())}",
        )
        return
    shapes.networks.setdefault(target, inference)
    for port, shape in inference.outputs.items():
        values[Source(name, port)] = shape


def _reverse_call(
    spec: Spec,
    name: str,
    attrs: dict[str, Any],
    args: dict[str, list[Shape]],
    values: dict[Source, Shape],
    shapes: SpecShapes,
    diags: Diagnostics,
    probe: Probe,
) -> None:
    """A reverse call gives the flow's input back: its shape is the forward pass's, or,
    for a network only run backwards, the first condition's size times the scale."""
    target = attrs["target"]
    net = spec.networks[target]
    plan = net.flow
    assert plan is not None  # a reverse call of a network without a flow is refused
    known = shapes.networks.get(target)
    if known is None:
        inputs = {p: args[p][0] for p in plan.conditions if p in args}
        inputs[plan.input] = flow_input_shape(net, inputs, spec.settings.scale)
        try:
            known = infer(net, inputs, probe)
        except ShapeError as exc:
            report(exc, diags)
            return
        shapes.networks[target] = known
    values[Source(name, plan.input)] = known.input_shapes[plan.input]


def flow_input_shape(net: Network, conditions: dict[str, Shape], scale: int) -> Shape:
    """The flow input of an invertible network, sized ``scale`` times its first
    condition (a network without conditions: the default size)."""
    assert net.flow is not None
    channels = net.inputs[net.flow.input]
    first = next((s for s in conditions.values() if len(s) == 4), None)
    if first is None:
        n = next(iter(conditions.values()))[0] if conditions else 1
        return (n, channels, DEFAULT_SIZE * scale, DEFAULT_SIZE * scale)
    return (first[0], channels, first[2] * scale, first[3] * scale)


def _op(
    name: str,
    attrs: dict[str, Any],
    args: dict[str, list[Shape]],
    values: dict[Source, Shape],
    diags: Diagnostics,
    probe: Probe,
) -> None:
    block = attrs["target"]
    tensors = [probe.tensor(s) for shapes in args.values() for s in shapes]
    try:
        kwargs = constructor_kwargs(block, attrs["params"], tensors)
        run = probe.run(block, kwargs, tensors)
    except (RuntimeError, ValueError, TypeError) as exc:
        shapes_text = ", ".join(str(probe.shape(t)) for t in tensors)
        diags.error(
            attrs["loc"],
            f"graph node '{name}' ({block}) cannot run on inputs "
            f"{shapes_text}: {str(exc).strip().splitlines()[0]}",
        )
        return
    for port, shape in zip(REGISTRY.get(block).outputs, run.out_shapes, strict=False):
        values[Source(name, port)] = shape


def _loss(
    name: str, attrs: dict[str, Any], args: dict[str, list[Shape]], diags: Diagnostics
) -> None:
    """Pixel-wise losses need pred and target of the same shape; say so before training."""
    if "pred" in args and "target" in args:
        pred, target = args["pred"][0], args["target"][0]
        if pred != target:
            diags.error(
                attrs["loc"],
                f"loss '{name}' ({attrs['target']}): pred has shape {pred} but target {target}",
            )

"""Networks into ``torch.fx.GraphModule``s.

Compilation runs in two passes over an expanded network:

1. **infer** — every leaf block is constructed on the ``meta`` device with its input
   channels taken from the tensors that reach it, and run on meta tensors. This gives
   every node's output shape, its parameter count and its MACs without allocating
   memory or reading data, and turns shape errors (channel or size mismatches) into
   diagnostics at the node's place in the spec.
2. **materialize** — the same constructor calls on a real device, wired into an
   ``fx.Graph`` whose ``call_module`` targets are the hierarchical node names. The
   resulting GraphModule has readable generated code, a submodule tree that follows the
   names (so ``state_dict`` keys are ``body.7.rdb2.conv3.weight``), and frees each
   intermediate value after its last use, as hand-written code would.
"""

from __future__ import annotations

import functools
import inspect as pyinspect
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import torch
from torch import fx, nn

import blocks.builtin  # noqa: F401  (registers the built-in blocks)
from blocks.registry import REGISTRY
from engine.graph.model import Network, Source
from engine.spec.diagnostics import Diagnostics, Loc


class ShapeError(Exception):
    """A node cannot run on the shapes that reach it."""


@dataclass
class NodeRecord:
    """What the meta pass learned about one node."""

    name: str
    block: str
    kwargs: dict[str, Any]
    out_shapes: list[tuple[int, ...]]
    params: int = 0
    macs: int = 0
    loc: Loc | None = None


@dataclass
class Inference:
    """The meta pass over one network for given input shapes."""

    network: Network
    input_shapes: dict[str, tuple[int, ...]]
    records: dict[str, NodeRecord] = field(default_factory=dict)
    outputs: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def params(self) -> int:
        return sum(r.params for r in self.records.values())

    @property
    def macs(self) -> int:
        return sum(r.macs for r in self.records.values())


@functools.cache
def _accepted(block: str) -> frozenset[str]:
    return frozenset(pyinspect.signature(REGISTRY.get(block).factory).parameters)


def _constructor_kwargs(
    block: str, params: dict[str, Any], inputs: list[torch.Tensor]
) -> dict[str, Any]:
    """Block parameters plus the channel counts the compiler fills in."""
    accepted = _accepted(block)
    kwargs = dict(params)
    if "in_ch" in accepted:
        kwargs["in_ch"] = int(inputs[0].shape[1])
    if "in_chs" in accepted:
        kwargs["in_chs"] = [int(t.shape[1]) for t in inputs]
    return kwargs


def _arguments(
    ports: dict[str, list[list[Source]]], values: Callable[[Source], torch.Tensor]
) -> list[torch.Tensor]:
    """Positional arguments of a leaf: one per argument, concat groups concatenated."""
    args = []
    for groups in ports.values():
        for group in groups:
            tensors = [values(s) for s in group]
            args.append(tensors[0] if len(tensors) == 1 else torch.cat(tensors, dim=1))
    return args


def _layer_macs(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> int:
    """Multiply-accumulates of one layer's forward, per sample."""
    out = output[0] if isinstance(output, tuple | list) else output
    if not isinstance(out, torch.Tensor) or out.dim() == 0:
        return 0
    batch = max(int(out.shape[0]), 1)
    if isinstance(module, nn.Conv2d):
        k = module.kernel_size[0] * module.kernel_size[1]
        return out.numel() // batch * (module.in_channels // module.groups) * k
    if isinstance(module, nn.ConvTranspose2d):
        k = module.kernel_size[0] * module.kernel_size[1]
        return inputs[0].numel() // batch * (module.out_channels // module.groups) * k
    if isinstance(module, nn.Linear):
        return out.numel() // batch * module.in_features
    return 0


def _run_counting(module: nn.Module, inputs: list[torch.Tensor]) -> tuple[Any, int]:
    """Forward ``module`` and count the MACs of every conv and linear layer inside it."""
    total = [0]

    def hook(layer: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        total[0] += _layer_macs(layer, args, output)

    handles = [
        m.register_forward_hook(hook)
        for m in module.modules()
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear)
    ]
    try:
        out = module(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    return out, total[0]


def infer(network: Network, input_shapes: dict[str, tuple[int, ...]]) -> Inference:
    """Run the meta pass; raise :class:`ShapeError` (with the node's place) on failure."""
    result = Inference(network, dict(input_shapes))
    values: dict[Source, torch.Tensor] = {}
    for name, shape in input_shapes.items():
        values[Source(name)] = torch.empty(shape, device="meta")
    memo: dict[tuple[Any, ...], tuple[list[tuple[int, ...]], int, int]] = {}
    g = network.graph
    for name in nx.topological_sort(g):
        attrs = g.nodes[name]
        if attrs["kind"] != "block":
            continue
        try:
            inputs = _arguments(attrs["ports"], values.__getitem__)
        except RuntimeError as exc:
            raise _shape_error(name, attrs, values, exc) from None
        kwargs = _constructor_kwargs(attrs["block"], attrs["params"], inputs)
        # Instances of one definition usually see the same shapes: run each case once.
        key = (attrs["block"], repr(sorted(kwargs.items())), tuple(t.shape for t in inputs))
        if key not in memo:
            try:
                memo[key] = _meta_run(attrs["block"], kwargs, inputs)
            except (RuntimeError, ValueError, TypeError, AssertionError) as exc:
                raise _shape_error(name, attrs, values, exc) from None
        out_shapes, params, macs = memo[key]
        info = REGISTRY.get(attrs["block"])
        for port, shape in zip(info.outputs, out_shapes, strict=False):
            values[Source(name, port)] = torch.empty(shape, device="meta")
        result.records[name] = NodeRecord(
            name=name,
            block=attrs["block"],
            kwargs=kwargs,
            out_shapes=out_shapes,
            params=params,
            macs=macs,
            loc=attrs.get("loc"),
        )
    for port, group in network.outputs.items():
        tensors = [values[s] for s in group]
        result.outputs[port] = tuple(
            (tensors[0] if len(tensors) == 1 else torch.cat(tensors, dim=1)).shape
        )
    return result


def _meta_run(
    block: str, kwargs: dict[str, Any], inputs: list[torch.Tensor]
) -> tuple[list[tuple[int, ...]], int, int]:
    """Output shapes, parameter count and MACs of one block on meta tensors."""
    with torch.device("meta"):
        module = REGISTRY.get(block).factory(**kwargs)
    module.eval()  # shapes are the same; batch statistics would refuse a batch of one
    out, macs = _run_counting(module, inputs)
    outs = list(out) if isinstance(out, tuple | list) else [out]
    return [tuple(t.shape) for t in outs], sum(p.numel() for p in module.parameters()), macs


def _shape_error(
    name: str, attrs: dict[str, Any], values: dict[Source, torch.Tensor], exc: Exception
) -> ShapeError:
    shapes = []
    for groups in attrs["ports"].values():
        for group in groups:
            parts = [tuple(values[s].shape) for s in group if s in values]
            shapes.append(" + ".join(str(p) for p in parts))
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    error = ShapeError(
        f"node '{name}' ({attrs['block']}) cannot run on inputs {', '.join(shapes)}: {reason}"
    )
    error.loc = attrs.get("loc")  # type: ignore[attr-defined]
    return error


def report(error: ShapeError, diags: Diagnostics) -> None:
    diags.error(getattr(error, "loc", None), str(error))


def materialize(inference: Inference, device: torch.device | str = "cpu") -> fx.GraphModule:
    """Build the real GraphModule from a finished meta pass."""
    network = inference.network
    root = nn.Module()
    graph = fx.Graph()
    env: dict[Source, fx.Node] = {}
    for name in network.inputs:
        env[Source(name)] = graph.placeholder(name)
    g = network.graph
    with torch.device(device):
        for name in nx.topological_sort(g):
            attrs = g.nodes[name]
            if attrs["kind"] != "block":
                continue
            record = inference.records[name]
            _attach(root, name, REGISTRY.get(record.block).factory(**record.kwargs))
            args = []
            for groups in attrs["ports"].values():
                for group in groups:
                    nodes = [env[s] for s in group]
                    args.append(
                        nodes[0] if len(nodes) == 1 else graph.call_function(torch.cat, (nodes, 1))
                    )
            node = graph.call_module(name, tuple(args))
            outputs = REGISTRY.get(record.block).outputs
            if len(record.out_shapes) == 1:
                env[Source(name, outputs[0])] = node
            else:
                for i, port in enumerate(outputs[: len(record.out_shapes)]):
                    env[Source(name, port)] = graph.call_function(operator.getitem, (node, i))
    results = {}
    for port, group in network.outputs.items():
        results[port] = _joined(graph, [env[s] for s in group])
    graph.output(next(iter(results.values())) if len(results) == 1 else results)
    module = fx.GraphModule(root, graph, class_name=_class_name(network.name))
    module.output_ports = tuple(results)  # type: ignore[assignment]
    return module


def _joined(graph: fx.Graph, nodes: list[fx.Node]) -> fx.Node:
    """One value, or several concatenated along channels."""
    return nodes[0] if len(nodes) == 1 else graph.call_function(torch.cat, (nodes, 1))


def _attach(root: nn.Module, path: str, module: nn.Module) -> None:
    parts = path.split(".")
    parent = root
    for part in parts[:-1]:
        child = parent._modules.get(part)
        if child is None:
            child = nn.Module()
            parent.add_module(part, child)
        parent = child
    parent.add_module(parts[-1], module)


def _class_name(name: str) -> str:
    cleaned = "".join(ch if ch.isalnum() else "_" for ch in name)
    return cleaned if cleaned[:1].isalpha() else f"Net_{cleaned}"

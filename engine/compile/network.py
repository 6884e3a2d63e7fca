"""Networks into ``torch.fx.GraphModule``s.

Compilation runs in two passes over an expanded network:

1. **infer** — every distinct leaf block is constructed with its input channels taken
   from the tensors that reach it, and run by a :class:`~engine.compile.probe.Probe`
   on tensors that carry shapes but no data (meta tensors for ``inspect``; CPU
   kernels on empty batches for ``build``). This gives every node's output shape, its
   parameter count and its MACs without reading data, and turns shape errors (channel
   or size mismatches) into diagnostics at the node's place in the spec.
2. **materialize** — the same constructor calls on a real device, wired into an
   ``fx.Graph`` whose ``call_module`` targets are the hierarchical node names. The
   resulting GraphModule has readable generated code, a submodule tree that follows the
   names (so ``state_dict`` keys are ``body.7.rdb2.conv3.weight``), and frees each
   intermediate value after its last use, as hand-written code would. Stateless nodes
   (a residual's scaled add, an upsampling) are written as the operations they perform
   (:mod:`engine.compile.lower`), as hand-written code would too.

:func:`engine.compile.build.compile_network` does the second pass and attaches the
size guard (:mod:`engine.compile.guard`); it is what ``build`` and the trainer call.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import inspect as pyinspect
import operator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Protocol, cast

import networkx as nx
import torch
import torch.nn.functional as F
from torch import fx, nn

import blocks.builtin  # noqa: F401  (registers the built-in blocks)
from blocks.builtin.tensors import TensorNode
from blocks.registry import REGISTRY
from engine.compile import flow, initialize, lower
from engine.compile.probe import Probe, on_device, one_thread, stateless
from engine.graph.flow import LOGDET
from engine.graph.model import Network, Source
from engine.spec.diagnostics import Diagnostics, Loc


class ShapeError(Exception):
    """A node cannot run on the shapes that reach it."""


@dataclass
class NodeRecord:
    """What the shape pass learned about one node."""

    name: str
    block: str
    kwargs: dict[str, Any]
    out_shapes: list[tuple[int, ...]]
    params: int = 0
    macs: int = 0
    loc: Loc | None = None


@dataclass
class Inference:
    """The shape pass over one network for given input shapes."""

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


def constructor_kwargs(
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
    ports: dict[str, list[list[Source]]], values: dict[Source, torch.Tensor], probe: Probe
) -> list[torch.Tensor]:
    """Positional arguments of a leaf: one per argument, concat groups concatenated."""
    return [probe.cat([values[s] for s in group]) for groups in ports.values() for group in groups]


def infer(
    network: Network, input_shapes: dict[str, tuple[int, ...]], probe: Probe | None = None
) -> Inference:
    """Run the shape pass; raise :class:`ShapeError` (with the node's place) on failure.

    ``probe`` runs the blocks (see :mod:`engine.compile.probe`): meta tensors by default,
    as ``inspect`` reports them; one probe shared by several calls runs each case once.
    """
    probe = probe or Probe()
    result = Inference(network, dict(input_shapes))
    values = {Source(name): probe.tensor(shape) for name, shape in input_shapes.items()}
    # Values that do not come from an input (a parameter, a constant, what is computed
    # from them alone) have no batch dimension: the probe must not take one for it.
    batchless: set[str] = set()
    g = network.graph
    for name in nx.topological_sort(g):
        attrs = g.nodes[name]
        if attrs["kind"] != "block":
            continue
        sources = [s for groups in attrs["ports"].values() for group in groups for s in group]
        try:
            inputs = _arguments(attrs["ports"], values, probe)
            kwargs = constructor_kwargs(attrs["block"], attrs["params"], inputs)
            run = probe.run(attrs["block"], kwargs, inputs, attrs.get("init"))
        except (RuntimeError, ValueError, TypeError, AssertionError) as exc:
            raise _shape_error(name, attrs, values, probe, exc) from None
        if run.init_problem is not None:
            error = ShapeError(f"node '{name}' ({attrs['block']}): {run.init_problem}")
            error.loc = attrs.get("init_loc") or attrs.get("loc")  # type: ignore[attr-defined]
            raise error
        shared = attrs.get("shared")
        if shared is not None:
            original = result.records[shared]
            if kwargs != original.kwargs:
                error = ShapeError(
                    f"node '{name}' shares the weights of '{shared}', which was built for "
                    f"{_settings(original.kwargs)}; this node's inputs need {_settings(kwargs)}"
                )
                error.loc = attrs.get("loc")  # type: ignore[attr-defined]
                raise error
            run = dataclasses.replace(run, params=0)  # counted once, at the original
        batched = any(s.node not in batchless for s in sources)
        if not batched:
            batchless.add(name)
        for port, shape in zip(REGISTRY.get(attrs["block"]).outputs, run.out_shapes, strict=False):
            values[Source(name, port)] = probe.tensor(shape, batched=batched)
        result.records[name] = NodeRecord(
            name=name,
            block=attrs["block"],
            kwargs=kwargs,
            out_shapes=run.out_shapes,
            params=run.params,
            macs=run.macs,
            loc=attrs.get("loc"),
        )
    for port, group in network.outputs.items():
        result.outputs[port] = probe.shape(probe.cat([values[s] for s in group]))
    if network.flow is not None:  # one log-determinant per sample
        result.outputs[LOGDET] = input_shapes[network.flow.input][:1]
    return result


def _shape_error(
    name: str,
    attrs: dict[str, Any],
    values: dict[Source, torch.Tensor],
    probe: Probe,
    exc: Exception,
) -> ShapeError:
    # Each input with the node that made it: the mistake is often there (a conv given
    # the wrong `out`), not at the node that cannot combine its inputs.
    shapes = []
    for groups in attrs["ports"].values():
        for group in groups:
            parts = [f"{probe.shape(values[s])} from '{s}'" for s in group if s in values]
            shapes.append(" + ".join(parts))
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    what = f"cannot run on inputs {', '.join(shapes)}" if shapes else "cannot be built"
    error = ShapeError(f"node '{name}' ({attrs['block']}) {what}: {reason}")
    error.loc = attrs.get("loc")  # type: ignore[attr-defined]
    return error


def report(error: ShapeError, diags: Diagnostics) -> None:
    diags.error(getattr(error, "loc", None), str(error))


def materialize(inference: Inference, device: torch.device | str = "cpu") -> CompiledNetwork:
    """Build the real GraphModule from a finished shape pass.

    Blocks with state become submodules called by name; stateless ones are written into
    the graph as the operations they perform (:mod:`engine.compile.lower`).
    """
    network = inference.network
    root = nn.Module()
    graph = fx.Graph()
    env: dict[Source, fx.Node] = {}
    for name in network.inputs:
        env[Source(name)] = graph.placeholder(name)
    recorded: dict[tuple[Any, ...], fx.Graph | None] = {}
    g = network.graph
    steps = set(network.flow.steps) if network.flow is not None else set()
    step_calls: dict[str, flow.StepCall] = {}
    logdet: fx.Node | None = None
    with on_device(device), one_thread():
        for name in nx.topological_sort(g):
            attrs = g.nodes[name]
            if attrs["kind"] != "block":
                continue
            record = inference.records[name]
            shared: str | None = attrs.get("shared")
            if name in steps:
                step_call, term = _flow_step(graph, root, env, name, attrs, record, shared)
                step_calls[name] = step_call
                logdet = flow.add_logdet(graph, logdet, term)
                continue
            original = None if shared is None else _attribute(root, shared)
            if isinstance(original, torch.Tensor):  # a shared parameter or buffer
                assert shared is not None
                env[Source(name)] = graph.get_attr(shared)
                continue
            if original is not None:  # the original's own module, called again
                assert shared is not None
                args = [
                    _joined(graph, [env[s] for s in group])
                    for groups in attrs["ports"].values()
                    for group in groups
                ]
                call = graph.call_module(shared, tuple(args))
                n = len(record.out_shapes)
                calls = [call] if n == 1 else [_item(graph, call, i) for i in range(n)]
                for port, out in zip(REGISTRY.get(record.block).outputs, calls, strict=False):
                    env[Source(name, port)] = out
                continue
            # (an original without state was written as operations: so is this node)
            module = REGISTRY.get(record.block).factory(**record.kwargs)
            if attrs.get("init") is not None:
                initialize.apply(attrs["init"], module)
            if isinstance(module, TensorNode):  # the tensor itself, under the node's name
                _attach_tensor(root, name, module)
                env[Source(name)] = graph.get_attr(name)
                continue
            args = [
                _joined(graph, [env[s] for s in group])
                for groups in attrs["ports"].values()
                for group in groups
            ]
            outs = _lowered(graph, recorded, record, module, args)
            if outs is None:
                _attach(root, name, module)
                node = graph.call_module(name, tuple(args))
                n = len(record.out_shapes)
                outs = [node] if n == 1 else [_item(graph, node, i) for i in range(n)]
            for port, out in zip(REGISTRY.get(record.block).outputs, outs, strict=False):
                env[Source(name, port)] = out
    results = {}
    for port, group in network.outputs.items():
        results[port] = _joined(graph, [env[s] for s in group])
    plan = network.flow
    if plan is not None:
        assert logdet is not None  # a flow has steps (engine.graph.flow.plan)
        results[LOGDET] = logdet
    graph.output(next(iter(results.values())) if len(results) == 1 else results)
    module = CompiledNetwork(root, graph, class_name=_class_name(network.name))
    module.output_ports = tuple(results)
    if plan is not None:
        size = flow.top_size(plan, inference.input_shapes, inference.outputs[plan.top])
        module.set_reverse(
            flow.reverse_graph(graph, plan, step_calls, size, network.name), plan.input
        )
    return module


def _flow_step(
    graph: fx.Graph,
    root: nn.Module,
    env: dict[Source, fx.Node],
    name: str,
    attrs: dict[str, Any],
    record: NodeRecord,
    shared: str | None,
) -> tuple[flow.StepCall, fx.Node]:
    """Call one step of a flow: its outputs into ``env``; its call and log-determinant."""
    if shared is None:
        module = REGISTRY.get(record.block).factory(**record.kwargs)
        if attrs.get("init") is not None:
            initialize.apply(attrs["init"], module)
        _attach(root, name, module)
    args = [
        _joined(graph, [env[s] for s in group])
        for groups in attrs["ports"].values()
        for group in groups
    ]
    target = shared or name
    node = graph.call_module(target, tuple(args))
    ports = REGISTRY.get(record.block).outputs
    for i, port in enumerate(ports):
        env[Source(name, port)] = _item(graph, node, i)
    return flow.StepCall(target, tuple(args[1:]), tuple(ports[1:])), _item(graph, node, len(ports))


class SizeRefused(ValueError):
    """An input size the network cannot take (the size guard's refusal)."""


class InputCheck(Protocol):
    """The size guard (:mod:`engine.compile.guard`): a forward hook registered with
    ``with_kwargs=True``, which can also explain a forward that raised."""

    def __call__(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
    ) -> None: ...

    def refusal(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Exception | None: ...


@dataclass(frozen=True)
class Padding:
    """``pad:`` on a network: inputs are padded to ``multiple`` and outputs cropped back
    by their ``ratios`` to the input (H, W), as spandrel runs such models."""

    mode: str  # reflect | replicate | zeros
    multiple: int
    ratios: dict[str, tuple[Fraction, Fraction]]


class CompiledNetwork(fx.GraphModule):
    """A compiled network: a GraphModule that knows its output ports and may check its
    inputs (the size guard, :mod:`engine.compile.guard`) or pad them (``pad:``), in its
    copies too (an EMA copy, say: GraphModule's own deep copy keeps neither)."""

    output_ports: tuple[str, ...]
    size_guard: InputCheck | None = None
    padding: Padding | None = None
    #: An invertible network's reverse program (engine/compile/flow.py) and its output.
    reverse_graph: fx.Graph | None = None
    reverse_output: str | None = None
    _reverse: Any = None

    def set_reverse(self, graph: fx.Graph, output: str) -> None:
        """Make ``self(..., reverse=True)`` run ``graph``, fx's code bound to this network."""
        code = graph.python_code(root_module="self")
        namespace = dict(code.globals)
        exec(compile(code.src, f"<reverse of {type(self).__name__}>", "exec"), namespace)
        self.reverse_graph = graph
        self.reverse_output = output
        self._reverse = namespace["forward"]

    def check_inputs(self, check: InputCheck) -> None:
        """Run ``check`` after every forward, in this network and in its copies."""
        self.size_guard = check
        self.register_forward_hook(check, with_kwargs=True)

    def __call__(self, *args: Any, reverse: bool = False, **kwargs: Any) -> Any:
        if reverse:
            if self._reverse is None:
                raise ValueError(f"{type(self).__name__} is not invertible ('flow:' declares it)")
            return self._reverse(self, *args, **kwargs)
        padding = self.padding
        if padding is not None and not torch.compiler.is_compiling():
            return _padded(self, padding, args, kwargs)
        try:
            return super().__call__(*args, **kwargs)
        except SizeRefused:
            raise
        except (RuntimeError, ValueError) as exc:
            # A size the network cannot take fails inside some layer with torch's words;
            # say which sizes it takes instead.
            refusal = None if self.size_guard is None else self.size_guard.refusal(args, kwargs)
            if refusal is None:
                raise
            raise refusal from exc

    def __deepcopy__(self, memo: dict[int, Any]) -> CompiledNetwork:
        res = cast(CompiledNetwork, super().__deepcopy__(memo))
        res.output_ports = self.output_ports
        res.padding = self.padding
        if self.reverse_graph is not None and self.reverse_output is not None:
            res.set_reverse(copy.deepcopy(self.reverse_graph, memo), self.reverse_output)
        if self.size_guard is not None:
            res.check_inputs(self.size_guard)
        return res


def _padded(
    network: CompiledNetwork, padding: Padding, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Run ``network`` on its image inputs padded to the multiple; crop the outputs."""
    images = [*args, *kwargs.values()]
    first = next((x for x in images if isinstance(x, torch.Tensor) and x.dim() == 4), None)
    if first is None:
        return fx.GraphModule.__call__(network, *args, **kwargs)
    h, w = int(first.shape[2]), int(first.shape[3])
    m = padding.multiple
    extra = ((-w) % m, (-h) % m)
    if extra == (0, 0):
        return fx.GraphModule.__call__(network, *args, **kwargs)
    mode = "constant" if padding.mode == "zeros" else padding.mode

    def pad(x: Any) -> Any:
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            return x
        # Each input by its own ratio to the first (an HR-sized condition map).
        ew = extra[0] * x.shape[3] // w
        eh = extra[1] * x.shape[2] // h
        return F.pad(x, (0, ew, 0, eh), mode=mode)

    out = fx.GraphModule.__call__(
        network, *(pad(a) for a in args), **{k: pad(v) for k, v in kwargs.items()}
    )

    def crop(port: str, y: Any) -> Any:
        if not isinstance(y, torch.Tensor) or y.dim() != 4 or port not in padding.ratios:
            return y
        rh, rw = padding.ratios[port]
        return y[..., : int(h * rh), : int(w * rw)]

    if isinstance(out, dict):
        return {port: crop(port, y) for port, y in out.items()}
    return crop(network.output_ports[0], out)


def unwrap(module: nn.Module) -> nn.Module:
    """The network itself, inside DDP's (``.module``) and torch.compile's
    (``._orig_mod``) wrappers, however deeply nested."""
    while True:
        # Not `a or b`: the truth of a wrapped module may ask its length, which a
        # GraphModule does not have.
        inner = getattr(module, "module", None)
        if not isinstance(inner, nn.Module):
            inner = getattr(module, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return module
        module = inner


def _lowered(
    graph: fx.Graph,
    recorded: dict[tuple[Any, ...], fx.Graph | None],
    record: NodeRecord,
    module: nn.Module,
    args: list[fx.Node],
) -> list[fx.Node] | None:
    """The node's outputs written as operations, or None if it stays a module call."""
    if not stateless(module):
        return None
    key = (record.block, repr(sorted(record.kwargs.items())), len(args))
    if key not in recorded:  # instances of one definition do the same operations
        recorded[key] = lower.record(module, len(args))
    ops = recorded[key]
    return None if ops is None else lower.splice(graph, ops, args, record.name)


def _item(graph: fx.Graph, node: fx.Node, index: int) -> fx.Node:
    return graph.call_function(operator.getitem, (node, index))


def _joined(graph: fx.Graph, nodes: list[fx.Node]) -> fx.Node:
    """One value, or several concatenated along channels."""
    return nodes[0] if len(nodes) == 1 else graph.call_function(torch.cat, (nodes, 1))


def _attach(root: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, leaf = path.rpartition(".")
    _parent(root, parent_path).add_module(leaf, module)


def _attach_tensor(root: nn.Module, path: str, node: TensorNode) -> None:
    parent_path, _, leaf = path.rpartition(".")
    parent = _parent(root, parent_path)
    if isinstance(node.value, nn.Parameter):
        parent.register_parameter(leaf, node.value)
    else:
        parent.register_buffer(leaf, node.value, persistent=node.persistent)


def _parent(root: nn.Module, path: str) -> nn.Module:
    """The module at ``path`` below ``root``, made of empty containers where missing."""
    parent = root
    for part in path.split(".") if path else ():
        child = parent._modules.get(part)
        if child is None:
            child = nn.Module()
            parent.add_module(part, child)
        parent = child
    return parent


def _attribute(root: nn.Module, path: str) -> nn.Module | torch.Tensor | None:
    """The submodule, parameter or buffer at ``path`` below ``root``, if there is one."""
    owner, _, leaf = path.rpartition(".")
    try:
        parent = root.get_submodule(owner)
    except AttributeError:
        return None
    found = parent._modules.get(leaf)
    if found is not None:
        return found
    tensor = parent._parameters.get(leaf)
    return tensor if tensor is not None else parent._buffers.get(leaf)


def _settings(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(kwargs.items()))


def _class_name(name: str) -> str:
    cleaned = "".join(ch if ch.isalnum() else "_" for ch in name)
    return cleaned if cleaned[:1].isalpha() else f"Net_{cleaned}"

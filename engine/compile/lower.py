"""Parameter-free blocks written into the graph as the operations they perform.

A ``residual`` node as a submodule call costs a module call and a walk down the
submodule tree (``getattr(self.body, "0").rdb1.out``) for one multiply and one add; an
ESRGAN generator has 92 of them. A block with no parameters, no buffers and no
submodules owns no state, so the compiler records what its ``forward`` does (fx
proxies through the real code, with its settings as constants) and writes those
operations into the network's graph instead:

    body_0_rdb1_out_mul = 0.2 * body_0_rdb1_conv5
    body_0_rdb1_out = conv_first + body_0_rdb1_out_mul

which is the code one would write by hand. A block whose ``forward`` branches on its
inputs, or does different things in training and in evaluation, keeps its module call.
"""

from __future__ import annotations

from typing import Any

from torch import fx, nn


def record(module: nn.Module, arity: int) -> fx.Graph | None:
    """The operations of ``module``'s forward on ``arity`` inputs, or None when they
    cannot stand for it (control flow on values, or a mode-dependent forward)."""
    graphs = []
    for training in (True, False):
        graph = fx.Graph()
        tracer = fx.proxy.GraphAppendingTracer(graph)
        args = [fx.Proxy(graph.placeholder(f"x{i}"), tracer) for i in range(arity)]
        was = module.training
        try:
            module.train(training)
            out = module.forward(*args)
        except Exception:  # anything it cannot record keeps the module call
            return None
        finally:
            module.train(was)
        outs = out if isinstance(out, tuple | list) else (out,)
        if not all(isinstance(o, fx.Proxy) for o in outs):
            return None
        graph.output(tuple(o.node for o in outs))
        graphs.append(graph)
    same = graphs[0].python_code("self").src == graphs[1].python_code("self").src
    return graphs[1] if same else None


def splice(graph: fx.Graph, ops: fx.Graph, args: list[fx.Node], name: str) -> list[fx.Node]:
    """Copy ``ops`` into ``graph`` on ``args``; the outputs, the last named ``name``."""
    env: dict[fx.Node, Any] = {}
    placeholders = iter(args)
    outputs: tuple[fx.Node, ...] = ()
    body = [n for n in ops.nodes if n.op not in ("placeholder", "output")]
    for node in ops.nodes:
        if node.op == "placeholder":
            env[node] = next(placeholders)
        elif node.op == "output":
            outputs = node.args[0]
        else:
            env[node] = graph.create_node(
                node.op,
                node.target,
                fx.map_arg(node.args, env.__getitem__),
                fx.map_arg(node.kwargs, env.__getitem__),
                name=name if node is body[-1] else f"{name}_{node.name}",
            )
    return [env[o] for o in outputs]

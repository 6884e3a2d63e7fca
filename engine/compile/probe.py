"""How shape inference runs one block: on meta tensors, or on CPU without the cost.

Shape inference constructs every distinct leaf block once and runs it on tensors whose
shapes are what matters. Two ways to get such tensors:

* ``meta`` — meta tensors of the full shapes: exact for every block, no memory, and
  what ``inspect`` reports. But the first meta call of many ops (convolution, leaky
  ReLU, interpolate) makes torch import its Python meta kernels and their helpers
  (sympy, dynamo): about 1.3 s a process, more than compiling ESRGAN takes.
* ``cpu`` — the blocks' real CPU kernels. Blocks with state (parameters, buffers or
  submodules: convolutions, norms, attention) are constructed without initializing
  their weights and run on an empty batch of zero samples: the same checks and output
  shapes, no arithmetic. Stateless blocks (add, upsample, pad, pixel_unshuffle...)
  run on a real batch of zeros, which costs about as much as allocating it, because
  some CPU kernels take a shortcut on empty inputs (``pixel_unshuffle`` returns its
  empty input unchanged). A stateful block that fails on an empty batch is built and
  run for real too, so an error is a real shape error. Dim 0 of an empty batch stands
  for ``batch``. This is what compiling needs: the channels every layer is
  constructed with, at a fraction of the cost.

``tests/test_blocks.py`` checks, for every registered block, that the ``cpu`` probe
gives the shapes of a real run.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from blocks.registry import REGISTRY
from engine.compile import initialize
from engine.spec.inits import Init

ProbeKind = Literal["meta", "cpu"]
Shape = tuple[int, ...]


@dataclass(frozen=True)
class BlockRun:
    """What running one block taught: its outputs' shapes, parameters and MACs."""

    out_shapes: list[Shape]
    params: int
    macs: int
    init_problem: str | None = None  # why the node's ``init:`` cannot apply to it


@contextlib.contextmanager
def on_device(device: torch.device | str) -> Iterator[None]:
    """Construct modules on ``device``; no device mode when it is the default already
    (the mode intercepts every torch call of every constructor)."""
    if torch.device(device) == torch.get_default_device():
        yield
    else:
        with torch.device(device):
            yield


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Torch's CPU ops on one thread: shape probes are tiny ops and weight initialization
    is serial, so a second thread only adds its wake-up, which on a busy machine costs
    more than the work (about 8 ms an op on two shared cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class Probe:
    """Runs blocks on shape tensors of one kind; memoizes runs by their inputs.

    Instances of one definition usually see the same shapes (23 RRDBs, a discriminator
    called on real and fake images), so each distinct case runs once per probe.
    """

    def __init__(self, kind: ProbeKind = "meta", batch: int = 1) -> None:
        self.kind = kind
        self.batch = batch  # what an empty batch stands for
        self._runs: dict[tuple[Any, ...], BlockRun] = {}
        # Meta modules by construction: probing other sizes (inspect's size rule) runs
        # the same blocks on other shapes; spectral norm's power iterations at
        # construction are worth doing once.
        self._meta: dict[tuple[str, str], nn.Module] = {}

    def tensor(self, shape: Shape, *, batched: bool = True) -> torch.Tensor:
        """A tensor standing for a value of ``shape`` (``batched``: dim 0 is the batch)."""
        if self.kind == "meta":
            return torch.empty(shape, device="meta")
        if batched and shape[:1] == (self.batch,):
            return torch.empty((0, *shape[1:]), device="cpu")
        return torch.zeros(shape, device="cpu")

    def shape(self, tensor: torch.Tensor) -> Shape:
        """The shape ``tensor`` stands for."""
        shape = tuple(tensor.shape)
        if self.kind == "cpu" and shape[:1] == (0,):
            return (self.batch, *shape[1:])
        return shape

    def cat(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        """Concatenation along channels (a node's ``in: [a, b]``)."""
        return tensors[0] if len(tensors) == 1 else torch.cat(tensors, dim=1)

    def run(
        self,
        block: str,
        kwargs: dict[str, Any],
        inputs: list[torch.Tensor],
        init: Init | None = None,
    ) -> BlockRun:
        """Construct ``block`` with ``kwargs`` and run it on ``inputs`` (eval mode);
        with ``init``, also say whether that init can apply to the block."""
        settings = repr(sorted(kwargs.items()))
        key = (block, settings, tuple(self.shape(t) for t in inputs), init)
        if key not in self._runs:
            if self.kind == "meta":  # no values, so no state a run could change
                if (block, settings) not in self._meta:
                    with torch.device("meta"):
                        self._meta[block, settings] = REGISTRY.get(block).factory(**kwargs)
                self._runs[key] = self._measure(self._meta[block, settings], inputs, init)
            else:
                self._runs[key] = self._run(REGISTRY.get(block).factory, kwargs, inputs, init)
        return self._runs[key]

    def _run(
        self,
        factory: Callable[..., nn.Module],
        kwargs: dict[str, Any],
        inputs: list[torch.Tensor],
        init: Init | None,
    ) -> BlockRun:
        # Random blocks draw numbers: leave the seed's stream to the network built next.
        with torch.random.fork_rng(devices=[]), one_thread():
            with torch.device("meta"):  # no time spent initializing weights
                shell = factory(**kwargs)
            if not stateless(shell):
                try:  # storage without values: an empty batch reads none of them
                    # Module._apply is unannotated in torch; it returns the module.
                    moved = shell._apply(_cpu_storage)  # type: ignore[no-untyped-call]
                    return self._measure(moved, inputs, init)
                except Exception:  # a real batch decides, and raises the real error
                    pass
            with on_device("cpu"):
                module = factory(**kwargs)
            return self._measure(
                module,
                [torch.zeros(self.shape(t)) for t in inputs],
                init,
            )

    def _measure(
        self, module: nn.Module, inputs: list[torch.Tensor], init: Init | None = None
    ) -> BlockRun:
        module.eval()  # shapes are the same; batch statistics would refuse a batch of one
        with torch.no_grad():
            out, macs = _run_counting(module, inputs)
        outs = list(out) if isinstance(out, tuple | list) else [out]
        params = sum(p.numel() for p in module.parameters())
        problem = None if init is None else initialize.problem(init, module)
        return BlockRun([self.shape(t) for t in outs], params, macs, problem)


def _cpu_storage(tensor: torch.Tensor) -> torch.Tensor:
    # torch.empty, not empty_like: a meta tensor's empty_like imports sympy (0.3 s).
    return torch.empty(tensor.shape, dtype=tensor.dtype, device="cpu")


def stateless(module: nn.Module) -> bool:
    """No parameters, buffers or submodules: nothing to save, move or hook into."""
    return not (module._parameters or module._buffers or module._modules)


def _per_sample(tensor: torch.Tensor) -> int:
    return math.prod(tensor.shape[1:])


def _layer_macs(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> int:
    """Multiply-accumulates of one layer's forward, per sample (whatever the batch)."""
    out = output[0] if isinstance(output, tuple | list) else output
    if not isinstance(out, torch.Tensor) or out.dim() == 0:
        return 0
    if isinstance(module, nn.Conv2d | nn.Conv3d):  # a 3-D kernel also spans time
        k = math.prod(module.kernel_size)
        return _per_sample(out) * (module.in_channels // module.groups) * k
    if isinstance(module, nn.ConvTranspose2d):
        k = module.kernel_size[0] * module.kernel_size[1]
        return _per_sample(inputs[0]) * (module.out_channels // module.groups) * k
    if isinstance(module, nn.Linear):
        return _per_sample(out) * module.in_features
    return 0


def _run_counting(module: nn.Module, inputs: list[torch.Tensor]) -> tuple[Any, int]:
    """Forward ``module`` and count the MACs of every conv and linear layer inside it."""
    total = [0]

    def hook(layer: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        total[0] += _layer_macs(layer, args, output)

    handles = [
        m.register_forward_hook(hook)
        for m in module.modules()
        if isinstance(m, nn.Conv2d | nn.Conv3d | nn.ConvTranspose2d | nn.Linear)
    ]
    try:
        out = module(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    return out, total[0]

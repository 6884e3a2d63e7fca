"""A compiled network refuses input sizes it cannot take, instead of answering wrongly.

A generator that halves its input twice and doubles it back returns 252 pixels for a
250-pixel image: the transposed convolutions round up, and nothing fails. The guard
is a forward hook on every compiled network. The first time it sees an input size it
compares each image output's size with what the network's proportions at the
configured size predict (the same size for a 1x generator, four times it for an x4
SR one); a size seen before costs one set lookup.

A mismatch means one of two things, which the guard then tells apart once, by
probing the network's accepted sizes (:func:`engine.compile.sizes.size_rule`):

* the network's output does not scale with its input (a PatchGAN's ``n/8 − 2`` patch
  map): nothing is wrong, and the guard stops checking;
* the input is a size the network cannot take: a ``ValueError`` says which sizes it
  accepts, so the caller can crop or pad.

Outputs that are not images (a VGG discriminator's logits) are not checked: such
networks fail loudly on sizes they cannot take. Under ``torch.compile`` and export the
guard does nothing. :func:`engine.compile.build.compile_network` attaches it.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import torch
from torch import nn

from engine.compile.network import Inference, SizeRefused
from engine.compile.sizes import SizeRule, base_input, size_rule, size_text
from engine.graph.model import Network

Size = tuple[int, int]


class SizeGuard:
    """The forward hook; see the module's description."""

    def __init__(self, network: Network, reference: Inference) -> None:
        self.network = network
        self.reference = reference  # the shape pass at the configured size
        self.input = base_input(network, reference)  # the input the size rule is of
        shape = reference.input_shapes[self.input]
        self.ratios: dict[str, tuple[Fraction, Fraction]] = {}
        if len(shape) == 4:
            for port, out in reference.outputs.items():
                if len(out) == 4:
                    self.ratios[port] = (Fraction(out[2], shape[2]), Fraction(out[3], shape[3]))
        self.seen: set[Size] = {(shape[2], shape[3])} if len(shape) == 4 else set()
        self.active = bool(self.ratios)
        self._rule: SizeRule | None = None

    def __deepcopy__(self, memo: dict[int, Any]) -> SizeGuard:
        # A copied network (EMA) has the same structure: it shares what was learned.
        return self

    def __call__(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
    ) -> None:
        if not self.active or torch.compiler.is_compiling():
            return
        # torch.jit.is_tracing is public but unannotated and not re-exported for typing.
        if torch.jit.is_tracing():  # type: ignore[attr-defined, no-untyped-call]
            return
        x = self._given(args, kwargs)
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            return
        size = (int(x.shape[2]), int(x.shape[3]))
        if size in self.seen:
            return
        outputs = output if isinstance(output, dict) else {next(iter(self.ratios)): output}
        wrong = [
            (port, tuple(out.shape[2:]), (size[0] * rh, size[1] * rw))
            for port, (rh, rw) in self.ratios.items()
            if isinstance(out := outputs.get(port), torch.Tensor)
            and (out.shape[2] != size[0] * rh or out.shape[3] != size[1] * rw)
        ]
        if not wrong:
            self.seen.add(size)
            return
        rule = self.rule()
        if rule.fixed is None and not rule.proportional:
            self.active = False  # a patch map: its size is not a multiple of the input's
            return
        port, got, want = wrong[0]
        expected = "×".join(str(v) if v.denominator == 1 else f"{float(v):g}" for v in want)
        raise SizeRefused(
            f"network {self.network.name}: a {size[0]}×{size[1]} input gives a "
            f"{got[0]}×{got[1]} '{port}' output where {expected} was due: it cannot take "
            f"this size ({size_text(rule)}); {_REMEDY}"
        )

    def refusal(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> SizeRefused | None:
        """Why a forward that raised could not take its input's size (None: the size is
        one the network takes, so the failure is something else)."""
        x = self._given(args, kwargs)
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            return None
        size = (int(x.shape[2]), int(x.shape[3]))
        if size in self.seen:
            return None
        rule = self.rule()
        if accepts(rule, size):
            return None
        return SizeRefused(
            f"network {self.network.name}: it cannot take a {size[0]}×{size[1]} input "
            f"({size_text(rule)}); {_REMEDY}"
        )

    def _given(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The input the guard checks, given by name or in the network's input order."""
        if self.input in kwargs:
            return kwargs[self.input]
        position = list(self.network.inputs).index(self.input)
        return args[position] if position < len(args) else None

    def rule(self) -> SizeRule:
        if self._rule is None:
            self._rule = size_rule(self.network, self.reference)
        return self._rule


#: What to do about a size a network cannot take.
_REMEDY = "crop or pad the input to such a size, or give the network 'pad: reflect'"


def accepts(rule: SizeRule, size: Size) -> bool:
    """Whether a network with ``rule`` takes an input of ``size`` (H, W)."""
    if rule.fixed is not None:
        return size == (rule.fixed, rule.fixed)
    multiple, smallest = rule.multiple or 1, rule.smallest or 1
    return all(n % multiple == 0 and n >= smallest for n in size)

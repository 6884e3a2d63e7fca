"""The input sizes a network accepts, found by probing its shape pass.

A generator that halves its input three times takes multiples of 8; a discriminator
that flattens into a linear layer takes its configured size only; a PatchGAN runs at
any multiple of 8 above some smallest size but its patch map does not scale with the
input. :func:`size_rule` tells these apart from shape inference alone (meta tensors,
no data); ``inspect`` reports the rule, the size guard (:mod:`engine.compile.guard`)
quotes it when it refuses an input, and validation tiles to its multiple.

The rule is stated for one input, the network's first, and the others follow at their
configured ratio to it. An invertible network's rule is stated for the input its flow
transforms (SRFlow's HR image): each squeeze along the flow halves it, so three
squeezes need a multiple of 8, and a condition at a quarter of it (the LR image) a
multiple of 2. The probe finds that from the blocks' shape pass, whatever the network
is called.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

from engine.compile.network import Inference, ShapeError, infer
from engine.compile.probe import Probe
from engine.graph.model import Network


@dataclass
class SizeRule:
    """Input sizes a network accepts: every ``multiple`` from ``smallest`` on, or
    ``fixed`` when only the configured size works. The sizes are those of ``input``;
    ``others`` are the other inputs' sizes as fractions of it."""

    multiple: int | None
    smallest: int | None
    fixed: int | None = None
    proportional: bool = True  # outputs scale with the input (False: a patch map)
    input: str | None = None  # None: the network's only input
    others: dict[str, Fraction] = field(default_factory=dict)

    def multiple_of(self, name: str) -> int | None:
        """The size multiple input ``name`` needs (None: a fixed size)."""
        if self.multiple is None or name == self.input or name not in self.others:
            return self.multiple
        # Every accepted size of the rule's input gives a whole size of this one, so
        # its multiple times the ratio is a whole number.
        return int(self.multiple * self.others[name])


def base_input(network: Network, reference: Inference) -> str:
    """The input a network's size rule is stated for: the flow's for an invertible
    network, otherwise the first."""
    if network.flow is not None and network.flow.input in reference.input_shapes:
        return network.flow.input
    return next(iter(reference.input_shapes))


def _spatial(inference: Inference) -> tuple[int, int] | None:
    shape = next(iter(inference.outputs.values()))
    return (shape[-2], shape[-1]) if len(shape) == 4 else None


def size_rule(network: Network, reference: Inference) -> SizeRule:
    """Probe square input sizes on meta tensors: which ones run, and which scale cleanly?

    ``reference`` ran at the configured size ``base`` (the first input's), so the sizes
    a network accepts — usually every multiple of some ``m`` from some smallest one —
    include ``base``, and ``m`` divides it: ``m`` is the smallest divisor ``d`` of
    ``base`` for which ``base + d`` (and, to rule out a bounded range, ``2·base + d``)
    is accepted too. The smallest accepted multiple is then found by bisection.

    Sizes are "clean" when every output scales with the input (generators); a network
    whose output does not (a PatchGAN's patch map, ``n/8 − 2``) is described by the
    sizes it runs at; one that runs near ``base`` only is fixed. A size is accepted
    only if every inferred width stays as it was (a linear layer's flattened input).
    Other inputs are probed at their configured ratio to the first (an SR condition
    map at the HR size of an LR input), or to the flow's input (:func:`base_input`).
    """
    name = base_input(network, reference)
    base = reference.input_shapes[name][-1]
    base_out = _spatial(reference)
    ratios = {k: Fraction(shape[-1], base) for k, shape in reference.input_shapes.items()}
    others = {k: r for k, r in ratios.items() if k != name}

    def measure(n: int) -> tuple[bool, bool]:
        """(runs, scales cleanly) at size n."""
        sizes = {k: n * r for k, r in ratios.items()}
        if any(size.denominator != 1 for size in sizes.values()):
            return False, False
        # Leading axes as configured (a window of frames keeps its T), batch 1.
        shapes: dict[str, tuple[int, ...]] = {
            k: (1, *reference.input_shapes[k][1:-2], int(sizes[k]), int(sizes[k]))
            for k in network.inputs
        }
        try:
            result = infer(network, shapes, runner)
        except ShapeError:
            return False, False
        # The same network: inferred widths (a linear layer's flattened input) unchanged.
        same_channels = all(
            record.kwargs == reference.records[name].kwargs
            for name, record in result.records.items()
        ) and all(result.outputs[k][1:2] == reference.outputs[k][1:2] for k in result.outputs)
        out = _spatial(result)
        if base_out is None or out is None:
            clean = out == base_out and all(
                result.outputs[k] == (1, *reference.outputs[k][1:]) for k in result.outputs
            )
        else:
            clean = out[0] * base == base_out[0] * n and out[1] * base == base_out[1] * n
        return same_channels, clean and same_channels

    seen: dict[int, tuple[bool, bool]] = {}
    runner = Probe("meta")  # one for every size: each block is constructed once

    def accepted(n: int, index: int) -> bool:
        if n not in seen:
            seen[n] = measure(n)
        return seen[n][index]

    passes: tuple[tuple[int, bool], ...] = ((1, True), (0, False))
    if accepted(2 * base, 0) and not accepted(2 * base, 1):
        passes = passes[1:]  # it runs at twice the size but its output does not scale
    for index, proportional in passes:
        multiple = next((d for d in _divisors(base) if accepted(base + d, index)), None)
        if multiple is None or not accepted(2 * base + multiple, index):
            continue  # none, or a few sizes near base only (a VGG discriminator's)
        low, high = 1, base // multiple  # base itself is accepted
        while low < high:  # the smallest accepted multiple, by bisection
            mid = (low + high) // 2
            if accepted(mid * multiple, index):
                high = mid
            else:
                low = mid + 1
        return SizeRule(
            multiple, low * multiple, proportional=proportional, input=name, others=others
        )
    return SizeRule(multiple=None, smallest=None, fixed=base, input=name, others=others)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def size_text(rule: SizeRule) -> str:
    """The rule in words, as ``inspect`` prints it and errors quote it. With several
    inputs it names them: ``input size: hr a multiple of 8, at least 8×8; lr 1/4 of
    hr (a multiple of 2)``."""
    name = f"{rule.input} " if rule.others else ""
    if rule.fixed is not None:
        text = f"input size: {name}fixed at {rule.fixed}×{rule.fixed}"
        text += "".join(f"; {k} {_ratio(r, rule.input)}" for k, r in rule.others.items())
        return f"{text} (other sizes do not fit its layers)"
    text = (
        f"input size: {name}a multiple of {rule.multiple}, at least {rule.smallest}×{rule.smallest}"
    )
    text += "".join(
        f"; {k} {_ratio(r, rule.input)} (a multiple of {rule.multiple_of(k)})"
        for k, r in rule.others.items()
    )
    return text if rule.proportional else f"{text} (its output does not scale with the input)"


def _ratio(ratio: Fraction, of: str | None) -> str:
    if ratio == 1:
        return f"the size of {of}"
    if ratio.numerator == 1:
        return f"1/{ratio.denominator} of {of}"
    return f"{ratio}× {of}" if ratio.denominator == 1 else f"{ratio} of {of}"

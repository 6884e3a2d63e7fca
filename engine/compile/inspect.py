"""``inspect``: what a spec's networks cost, node by node, from a meta dry run.

Per node: output shape, parameters, MACs (per sample) and activation memory at the
configured batch and crop; per network: totals, the smallest input it accepts and the
size multiple it needs (found by probing sizes on the meta device).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import Any

from engine.compile.build import check_shapes
from engine.compile.network import Inference, ShapeError, infer
from engine.compile.probe import Probe
from engine.graph.model import Network
from engine.load import Spec

BYTES_PER_VALUE = 4  # float32 activations


@dataclass
class NodeRow:
    name: str
    block: str
    shape: list[int]
    params: int
    macs: int
    memory: int  # bytes of the node's outputs at the configured batch


@dataclass
class SizeRule:
    """Input sizes a network accepts: every ``multiple`` from ``smallest`` on, or
    ``fixed`` when only the configured size works."""

    multiple: int | None
    smallest: int | None
    fixed: int | None = None
    proportional: bool = True  # outputs scale with the input (False: a patch map)


@dataclass
class NetworkReport:
    name: str
    inputs: dict[str, list[int]]
    outputs: dict[str, list[int]]
    rows: list[NodeRow] = field(default_factory=list)
    params: int = 0
    macs: int = 0
    memory: int = 0
    sizes: SizeRule | None = None


def inspect_spec(spec: Spec, *, probe_sizes: bool = True) -> list[NetworkReport]:
    """Reports for every network (raises SpecError on shape problems, with places)."""
    shapes = check_shapes(spec)
    reports = []
    for name, inference in shapes.networks.items():
        report = _report(name, inference)
        if probe_sizes:
            report.sizes = size_rule(spec.networks[name], inference)
        reports.append(report)
    return reports


def _report(name: str, inference: Inference) -> NetworkReport:
    rows = []
    for record in inference.records.values():
        memory = sum(math.prod(s) for s in record.out_shapes) * BYTES_PER_VALUE
        shape = list(record.out_shapes[0]) if record.out_shapes else []
        rows.append(NodeRow(record.name, record.block, shape, record.params, record.macs, memory))
    return NetworkReport(
        name=name,
        inputs={k: list(v) for k, v in inference.input_shapes.items()},
        outputs={k: list(v) for k, v in inference.outputs.items()},
        rows=rows,
        params=sum(r.params for r in rows),
        macs=sum(r.macs for r in rows),
        memory=sum(r.memory for r in rows),
    )


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
    map at the HR size of an LR input).
    """
    base = next(iter(reference.input_shapes.values()))[-1]
    base_out = _spatial(reference)
    ratios = {k: Fraction(shape[-1], base) for k, shape in reference.input_shapes.items()}

    def measure(n: int) -> tuple[bool, bool]:
        """(runs, scales cleanly) at size n."""
        sizes = {k: n * r for k, r in ratios.items()}
        if any(size.denominator != 1 for size in sizes.values()):
            return False, False
        shapes = {k: (1, c, int(sizes[k]), int(sizes[k])) for k, c in network.inputs.items()}
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

    passes = ((1, True), (0, False))
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
        return SizeRule(multiple, low * multiple, proportional=proportional)
    return SizeRule(multiple=None, smallest=None, fixed=base)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def grouped(report: NetworkReport, depth: int) -> NetworkReport:
    """Rows summed by the first ``depth`` parts of their names (``body.3`` for depth 2)."""
    groups: dict[str, NodeRow] = {}
    for row in report.rows:
        key = ".".join(row.name.split(".")[:depth])
        if key not in groups:
            block = row.block if key == row.name else "(group)"
            groups[key] = NodeRow(key, block, row.shape, 0, 0, 0)
        group = groups[key]
        group.shape = row.shape  # the group's last node gives its output
        group.params += row.params
        group.macs += row.macs
        group.memory += row.memory
    return NetworkReport(
        report.name,
        report.inputs,
        report.outputs,
        list(groups.values()),
        report.params,
        report.macs,
        report.memory,
        report.sizes,
    )


def as_json(reports: list[NetworkReport]) -> list[dict[str, Any]]:
    return [asdict(r) for r in reports]


def human(n: float, unit: str = "") -> str:
    """1234567 → '1.23M'."""
    for size, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= size:
            return f"{n / size:.2f}{suffix}{unit}"
    return f"{n:g}{unit}"


def text_lines(report: NetworkReport, *, limit: int | None = None) -> list[str]:
    """The report as aligned plain text (pipes, logs, tests)."""
    head = (
        f"network {report.name}: inputs "
        + ", ".join(f"{k} {tuple(v)}" for k, v in report.inputs.items())
        + " → "
        + ", ".join(f"{k} {tuple(v)}" for k, v in report.outputs.items())
    )
    lines = [
        head,
        f"  {'node':<34} {'block':<16} {'output':<22} {'params':>9} {'MACs':>9} {'memory':>9}",
    ]
    rows = report.rows if limit is None else report.rows[:limit]
    for r in rows:
        lines.append(
            f"  {r.name:<34} {r.block:<16} {tuple(r.shape)!s:<22} {human(r.params):>9} "
            f"{human(r.macs):>9} {human(r.memory, 'B'):>9}"
        )
    if limit is not None and len(report.rows) > limit:
        lines.append(f"  … {len(report.rows) - limit} more nodes (--all shows them)")
    lines.append(
        f"  total: {human(report.params)} parameters, {human(report.macs)} MACs per sample, "
        f"{human(report.memory, 'B')} of activations at this batch"
    )
    if report.sizes is not None:
        lines.append("  " + size_text(report.sizes))
    return lines


def size_text(rule: SizeRule) -> str:
    if rule.fixed is not None:
        return f"input size: fixed at {rule.fixed}×{rule.fixed} (other sizes do not fit its layers)"
    text = f"input size: a multiple of {rule.multiple}, at least {rule.smallest}×{rule.smallest}"
    return text if rule.proportional else f"{text} (its output does not scale with the input)"

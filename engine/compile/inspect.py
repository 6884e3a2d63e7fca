"""``inspect``: what a spec's networks cost, node by node, from a meta dry run.

Per node: output shape, parameters, MACs (per sample) and activation memory at the
configured batch and crop; per network: totals, the smallest input it accepts and the
size multiple it needs (:mod:`engine.compile.sizes`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from engine.compile.build import check_shapes
from engine.compile.network import Inference
from engine.compile.sizes import SizeRule, size_rule, size_text
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

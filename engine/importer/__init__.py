"""``python cli.py import``: option files of traiNNer, BasicSR and traiNNer-redux as specs.

:func:`convert` reads an option file, recognises its format, maps what it can to a
Loom spec (networks with their hyperparameters, losses and weights, optimizers,
schedules, iterations, accumulation, datasets, pretrained weights) and lists every
option it did not map, at its ``FILE:LINE:COL`` with the reason. The written spec
starts with a comment header saying where it came from. Nothing here imports torch.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.importer.basicsr import read_basicsr
from engine.importer.common import KEPT_WHEN_FALSE, REASONS, reason_for
from engine.importer.emit import spec_text
from engine.importer.plan import Plan, build_spec
from engine.importer.source import Note, OptionFile, OptionFileError, dotted, read_options
from engine.importer.trainner import read_trainner

__all__ = ["Imported", "OptionFileError", "convert", "detect"]

_REDUX_KEYS = ("use_amp", "amp_bf16", "fast_matmul", "use_channels_last", "high_order_degradation")


@dataclass
class Imported:
    """A converted option file: the spec (dict and text), what was left out, the format."""

    spec: dict[str, Any]
    text: str
    notes: list[Note]
    format: str
    plan: Plan


def detect(opts: OptionFile) -> str:
    """``traiNNer``, ``BasicSR`` or ``traiNNer-redux``; unknown files are an error."""
    data = opts.data
    if "network_G" in data or "network_D" in data:
        return "traiNNer"
    train = (
        data.get("datasets", {}).get("train", {}) if isinstance(data.get("datasets"), dict) else {}
    )
    if isinstance(train, dict) and ("dataroot_HR" in train or "HR_size" in train):
        return "traiNNer"
    if "network_g" in data or "model_type" in data:
        t: dict[str, Any] = data["train"] if isinstance(data.get("train"), dict) else {}
        net: dict[str, Any] = data["network_g"] if isinstance(data.get("network_g"), dict) else {}
        redux = (
            any(k in data for k in _REDUX_KEYS)
            or "losses" in t
            or (isinstance(train, dict) and ("lq_size" in train or "accum_iter" in train))
            or (isinstance(net.get("type"), str) and net["type"].islower())
        )
        return "traiNNer-redux" if redux else "BasicSR"
    raise OptionFileError(
        f"{opts.label}: not a traiNNer, BasicSR or traiNNer-redux option file (it has no "
        "network_G / network_g section); Loom imports those three formats"
    )


def _check_pretrained(plan: Plan, opts: OptionFile, out: Path | None) -> None:
    """Keep a pretrained path only if Loom will find it (next to the spec, then the
    working directory); otherwise the spec would not validate: leave it out, say so."""
    for name, net in plan.nets.items():
        if not net.pretrained:
            continue
        raw = net.pretrained["path"]
        path = Path(os.path.expandvars(os.path.expanduser(raw)))
        places = (
            [path]
            if path.is_absolute()
            else [(out.parent if out else Path.cwd()) / path, Path.cwd() / path]
        )
        if any(p.is_file() for p in places):
            continue
        net.pretrained = None
        key = next(
            (p for p in opts.taken if p and p[0] == "path" and opts.get(*p) == raw),
            ("path",),
        )
        opts.notes.append(
            Note(
                opts.loc(*key),
                dotted(key),
                f"'{raw}' does not exist (looked next to the spec and in the working "
                f"directory); add networks.{name}.pretrained: {{path: ...}} once it does",
            )
        )


def convert(path: str | Path, out: str | Path | None = None) -> Imported:
    """Convert the option file at ``path``; ``out`` is where the spec will be written
    (relative pretrained paths are looked up from there). Raises OptionFileError."""
    opts = read_options(path)
    fmt = detect(opts)
    plan = read_trainner(opts) if fmt == "traiNNer" else read_basicsr(opts)
    _check_pretrained(plan, opts, Path(out) if out else None)
    for leaf in opts.untaken():
        off = opts.get(*leaf) is False and str(leaf[-1]) not in KEPT_WHEN_FALSE
        if off and (str(leaf[-1]) not in REASONS or str(leaf[-1]).startswith(("use_", "lr_"))):
            continue  # a feature switched off: nothing to carry
        opts.notes.append(Note(opts.loc(*leaf), dotted(leaf), reason_for(leaf)))
    notes = sorted(
        opts.notes, key=lambda n: (n.loc.line if n.loc else 0, n.loc.col if n.loc else 0)
    )
    plan.description = f"Imported from {Path(path).name} ({fmt})."
    spec = build_spec(plan)
    kind = f"{fmt}, {'JSON with // comments' if opts.is_json else 'YAML'}"
    header = [
        f"Imported by `python cli.py import` from {path}",
        f"Source format: {kind}; task: {plan.task}",
        f"Date: {datetime.date.today().isoformat()}",
    ]
    if notes:
        header.append(f"Options not mapped or mapped with a difference ({len(notes)}):")
        header.extend(f"  {n}" for n in notes)
    else:
        header.append("Every option was mapped.")
    header.append("Check it with: python cli.py validate SPEC; see docs/import.md.")
    return Imported(spec, spec_text(spec, header), notes, kind, plan)

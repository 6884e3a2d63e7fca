"""``python cli.py plot RUN [RUN ...] [--out FILE.png]``: a picture of training runs.

Read from what every run folder holds (docs/training.md): ``metrics.jsonl`` for the
curves, ``train.log`` for where each phase starts, ``samples/`` for the images. The
figure has one panel per loss (raw values faint, smoothed values solid), one for the
learning rates, one per validation metric with its baseline dashed (``val/psnr`` with
``val/psnr_bicubic``, or ``val/psnr_input`` at 1x), the phase boundaries as dotted
vertical lines on every curve, and a grid of the validation samples (input | output |
target) across rounds. Several runs are overlaid, one colour each.

The smoothing is TensorBoard's: an exponential moving average over the logged points,
bias-corrected so the curve starts at the first value rather than at zero; 0.6 by
default, as its slider, 0 turns it off.

:func:`figure` returns the matplotlib ``Figure`` so that tests (and notebooks) can look
at its axes; :func:`write` saves it. matplotlib (the ``plot`` extra) is imported only
here, without pyplot: no window, no global state, the Agg renderer.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure, SubFigure

#: Suffixes of the baseline metrics validation writes beside each metric.
BASELINES = ("_bicubic", "_input", "_average")
SMOOTHING = 0.6
#: At most this many validation rounds (spread from first to last) and samples a round.
MAX_ROUNDS, MAX_SAMPLES = 6, 3
INSTALL = "pip install matplotlib (or the extra: pip install 'loom[plot]')"

_PHASE_LINE = re.compile(r" phase (\S+): iterations (\d+)\.\.(\d+)")
_SAMPLE = re.compile(r"iter_(\d+)_(\d+)\.png$")


class PlotError(Exception):
    """A run cannot be plotted; the message names the folder and why."""


@dataclass
class RunData:
    """What a plot needs from one run folder."""

    label: str
    path: Path
    #: key (``loss/pix``, ``lr/G``, ``val/psnr``) → (iterations, values), in order.
    series: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict)
    #: (phase name, the iteration it starts at), in order.
    phases: list[tuple[str, int]] = field(default_factory=list)
    #: validation iteration → its sample images, in order.
    samples: dict[int, list[Path]] = field(default_factory=dict)
    skipped_lines: int = 0


def read_run(path: str | Path, label: str | None = None) -> RunData:
    """The curves, phases and samples of a run folder; :class:`PlotError` when it is
    not one or has nothing to plot."""
    path = Path(path)
    if not path.is_dir():
        raise PlotError(f"{path}: not a folder (give a run folder, e.g. runs/quickstart)")
    metrics = path / "metrics.jsonl"
    if not metrics.is_file():
        raise PlotError(
            f"{path}: not a run folder, or a run that has logged nothing yet: it has no "
            "metrics.jsonl"
        )
    run = RunData(label or path.name, path)
    last_phase: str | None = None
    last_iter = 0
    points: dict[str, dict[int, float]] = {}
    for line in metrics.read_text(encoding="utf-8", errors="replace").splitlines():
        record = _record(line)
        if record is None:
            run.skipped_lines += bool(line.strip())
            continue
        iteration = int(record["iter"])
        phase = record.get("phase")
        if isinstance(phase, str) and phase != last_phase:
            run.phases.append((phase, last_iter if last_phase is not None else 0))
            last_phase = phase
        last_iter = iteration
        for key, value in record.items():
            if key not in ("iter", "phase") and _is_number(value):
                # A resumed run logs again the iterations after its checkpoint: the
                # later value is the one the run continued from.
                points.setdefault(key, {})[iteration] = float(value)
    for key, by_iter in points.items():
        iterations = sorted(by_iter)
        run.series[key] = (iterations, [by_iter[i] for i in iterations])
    if not run.series:
        raise PlotError(f"{metrics}: no losses, learning rates or validation metrics in it yet")
    run.phases = _phases_from_log(path / "train.log") or run.phases
    run.samples = _samples(path / "samples")
    return run


def _record(line: str) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except ValueError:  # a line cut short by a killed run
        return None
    if not isinstance(record, dict) or not _is_number(record.get("iter")):
        return None
    return record


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _phases_from_log(log: Path) -> list[tuple[str, int]]:
    """Each phase with its exact start, as the runner writes it when entering it
    (a resumed run writes its phase again: each start is kept once)."""
    if not log.is_file():
        return []
    found: dict[tuple[str, int], None] = {}
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        match = _PHASE_LINE.search(line)
        if match:
            found[(match[1], int(match[2]))] = None
    return sorted(found, key=lambda p: p[1])


def _samples(folder: Path) -> dict[int, list[Path]]:
    rounds: dict[int, list[tuple[int, Path]]] = {}
    if folder.is_dir():
        for path in folder.iterdir():
            match = _SAMPLE.search(path.name)
            if match:
                rounds.setdefault(int(match[1]), []).append((int(match[2]), path))
    return {it: [p for _, p in sorted(items)] for it, items in sorted(rounds.items())}


def smooth(values: list[float], factor: float = SMOOTHING) -> list[float]:
    """TensorBoard's smoothing: a bias-corrected exponential moving average; a value
    that is not finite is shown as it is and does not enter the average."""
    if not 0 <= factor < 1:
        raise ValueError(f"smoothing must be in [0, 1), not {factor}")
    out: list[float] = []
    average, weight = 0.0, 0.0
    for value in values:
        if not math.isfinite(value):
            out.append(value)
            continue
        average = factor * average + (1 - factor) * value
        weight = factor * weight + (1 - factor)
        out.append(average / weight)
    return out


def _labels(paths: list[Path]) -> list[str]:
    """Folder names, with their parent where two runs share a name."""
    resolved = [p.resolve() for p in paths]
    names = [p.name for p in resolved]
    return [f"{p.parent.name}/{p.name}" if names.count(p.name) > 1 else p.name for p in resolved]


def _panels(runs: list[RunData]) -> tuple[list[str], list[str], list[str]]:
    """Loss keys, learning-rate keys and validation metrics, in first-seen order."""
    keys: dict[str, None] = {}
    for run in runs:
        keys.update(dict.fromkeys(run.series))
    losses = [k for k in keys if k.startswith("loss/")]
    rates = [k for k in keys if k.startswith("lr/")]
    metrics = [k for k in keys if k.startswith("val/") and not k.endswith(BASELINES)]
    return losses, rates, metrics


def figure(runs: list[RunData], *, smoothing: float = SMOOTHING, samples: bool = True) -> Figure:
    """The picture of ``runs``: curve panels, then the sample grid (of each run)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotError(f"plotting needs matplotlib, which is not installed: {INSTALL}") from None
    if not runs:
        raise PlotError("nothing to plot: give at least one run folder")
    losses, rates, metrics = _panels(runs)
    panels = [*losses, *(["lr"] if rates else []), *metrics]
    columns = 2 if len(panels) > 1 else 1
    rows = math.ceil(len(panels) / columns)
    grids = [r for r in runs if r.samples] if samples else []
    sample_rows = sum(min(len(r.samples), MAX_ROUNDS) for r in grids)
    fig = Figure(figsize=(6 * columns, 3.2 * rows + 2.2 * sample_rows), layout="constrained")
    top: Figure | SubFigure = fig
    bottom: SubFigure | None = None
    if sample_rows:
        parts = fig.subfigures(2, 1, height_ratios=[3.2 * rows, 2.2 * sample_rows])
        top, bottom = parts[0], parts[1]  # type: ignore[index]
    axes = top.subplots(rows, columns, squeeze=False).ravel()
    colors = [f"C{i % 10}" for i in range(len(runs))]
    for ax, panel in zip(axes, panels, strict=False):
        if panel == "lr":
            _plot_rates(ax, runs, colors, rates)
        elif panel.startswith("loss/"):
            _plot_loss(ax, runs, colors, panel, smoothing)
        else:
            _plot_metric(ax, runs, colors, panel)
        keys = rates if panel == "lr" else [panel]
        shown = [(r, c) for r, c in zip(runs, colors, strict=True) if set(keys) & set(r.series)]
        _mark_phases(ax, shown)
        ax.set_xlabel("iteration")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    for ax in axes[len(panels) :]:
        ax.remove()
    title = runs[0].label if len(runs) == 1 else " vs ".join(r.label for r in runs)
    top.suptitle(title)
    if bottom is not None:
        _sample_grid(bottom, grids)
    return fig


def _plot_loss(ax: Axes, runs: list[RunData], colors: list[str], key: str, factor: float) -> None:
    ax.set_title(key)
    for run, color in zip(runs, colors, strict=True):
        if key not in run.series:
            continue
        x, y = run.series[key]
        prefix = f"{run.label} " if len(runs) > 1 else ""
        if factor > 0:
            ax.plot(x, y, color=color, alpha=0.3, linewidth=1, label=f"{prefix}raw")
            ax.plot(x, smooth(y, factor), color=color, label=f"{prefix}smoothed {factor:g}")
        else:
            ax.plot(x, y, color=color, label=f"{prefix}raw")
    finite = [v for r in runs for v in r.series.get(key, ([], []))[1] if math.isfinite(v)]
    if finite and min(finite) > 0 and max(finite) / min(finite) > 30:
        ax.set_yscale("log")  # a loss that falls by decades reads better on a log axis


def _plot_rates(ax: Axes, runs: list[RunData], colors: list[str], keys: list[str]) -> None:
    ax.set_title("learning rate")
    styles = ["-", "--", ":", "-."]
    for run, color in zip(runs, colors, strict=True):
        for i, key in enumerate(k for k in keys if k in run.series):
            x, y = run.series[key]
            prefix = f"{run.label} " if len(runs) > 1 else ""
            ax.plot(x, y, color=color, linestyle=styles[i % 4], label=f"{prefix}{key}")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))


def _plot_metric(ax: Axes, runs: list[RunData], colors: list[str], key: str) -> None:
    ax.set_title(key + (" (lower is better)" if key == "val/lpips" else ""))
    for run, color in zip(runs, colors, strict=True):
        prefix = f"{run.label} " if len(runs) > 1 else ""
        if key in run.series:
            x, y = run.series[key]
            ax.plot(x, y, color=color, marker="o", markersize=3, label=f"{prefix}model")
        for suffix in BASELINES:
            if key + suffix in run.series:
                x, y = run.series[key + suffix]
                ax.plot(x, y, color=color, linestyle="--", label=f"{prefix}{suffix[1:]}")


def _mark_phases(ax: Axes, runs: list[tuple[RunData, str]]) -> None:
    """A dotted line where each phase after the first starts, named at the top (for
    the runs drawn in the panel, each in its colour)."""
    for run, color in runs:
        for name, start in run.phases[1:]:
            ax.axvline(start, color=color, linestyle=":", linewidth=1, gid=f"phase:{name}")
            ax.annotate(
                name,
                (start, 1),
                xycoords=("data", "axes fraction"),
                xytext=(2, -2),
                textcoords="offset points",
                fontsize="x-small",
                color=color,
                va="top",
            )


def _rounds(run: RunData) -> list[int]:
    """At most MAX_ROUNDS validation rounds, spread from the first to the last."""
    iterations = list(run.samples)
    if len(iterations) <= MAX_ROUNDS:
        return iterations
    step = (len(iterations) - 1) / (MAX_ROUNDS - 1)
    return [iterations[round(i * step)] for i in range(MAX_ROUNDS)]


def _sample_grid(sub: SubFigure, runs: list[RunData]) -> None:
    """One row per validation round (each run's in turn), one column per sample."""
    import numpy as np
    from PIL import Image

    rows = [(run, it) for run in runs for it in _rounds(run)]
    columns = max(min(len(run.samples[it]), MAX_SAMPLES) for run, it in rows)
    grid = sub.subplots(len(rows), columns, squeeze=False)
    for (run, iteration), line in zip(rows, grid, strict=True):
        paths = run.samples[iteration][:MAX_SAMPLES]
        for index, ax in enumerate(line):
            ax.set_axis_off()
            if index >= len(paths):
                continue
            with Image.open(paths[index]) as image:
                ax.imshow(np.asarray(image.convert("RGB")), interpolation="nearest")
            prefix = f"{run.label} · " if len(runs) > 1 else ""
            ax.set_title(f"{prefix}iter {iteration} · sample {index}", fontsize="small")
    sub.suptitle("validation samples: input | output | target")


def write(
    paths: list[str | Path],
    out: str | Path | None = None,
    *,
    smoothing: float = SMOOTHING,
    samples: bool = True,
    dpi: int = 100,
) -> Path:
    """Plot the runs at ``paths`` into ``out`` (default ``RUN/plot.png`` for one run)."""
    folders = [Path(p) for p in paths]
    if out is None:
        if len(folders) != 1:
            raise PlotError("several runs: say where the picture goes with --out FILE.png")
        out = folders[0] / "plot.png"
    out = Path(out)
    if out.suffix.lower() not in (".png", ".svg", ".pdf", ".jpg", ".jpeg"):
        raise PlotError(f"{out}: write a .png (or .svg, .pdf, .jpg)")
    runs = [read_run(p, label) for p, label in zip(folders, _labels(folders), strict=True)]
    fig = figure(runs, smoothing=smoothing, samples=samples)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=dpi)
    except OSError as exc:
        raise PlotError(f"cannot write {out}: {exc.strerror or exc}") from None
    return out

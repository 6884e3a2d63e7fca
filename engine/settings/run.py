"""The run's other sections: ``validation:``, ``logging:``, ``checkpoints:`` and each
network's ``pretrained:``."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from engine.compile.keymap import check_entry
from engine.settings.base import Reader, setting

Metric = Literal["psnr", "ssim", "lpips"]
#: Experiment trackers, through Accelerate's (engine/train/trackers.py).
Tracker = Literal["tensorboard", "wandb", "mlflow", "aim"]


@dataclass(frozen=True)
class ValidationSettings:
    every: int = setting(doc="validate every N iterations (and at the end)")
    output: str = setting(doc="the graph output compared with the target (`fake.sr`)")
    input: str | None = setting(None, "the network input, for samples and the bicubic baseline")
    target: str | None = setting(None, "the ground truth (`data.hr`)")
    metrics: tuple[Metric, ...] = setting(("psnr", "ssim"), "metrics computed per image")
    y_channel: bool = setting(False, "compute metrics on the Y channel (YCbCr)")
    crop_border: int | None = setting(None, "pixels shaved from each border", shown="the scale")
    tile: int | None = setting(None, "run the network on tiles of this size (bounded memory)")
    samples: int = setting(2, "images saved side by side per validation")
    heats: tuple[float, ...] = setting(
        (),
        "also draw `output`, a reverse call's, at these heats (z ~ N(0, heat²)), and take "
        "the metrics at heat 0: logs psnr_heatH, diversity_heatH and nonfinite_samples, "
        "and a grid per sample image (docs/srflow.md)",
        shown="none",
    )
    n_sample: int = setting(1, "draws per image at each of `heats` (diversity needs 2)")


@dataclass(frozen=True)
class LoggingSettings:
    every: int = setting(50, "log losses and rates every N iterations")
    trackers: tuple[Tracker, ...] = setting(
        (),
        "experiment trackers (tensorboard, wandb, mlflow, aim) that get the scalars of "
        "metrics.jsonl, the resolved spec as the run's config, and the sample images",
        shown="none",
    )
    tensorboard: bool = setting(False, "shorthand for `trackers: [tensorboard]`")


@dataclass(frozen=True)
class CheckpointSettings:
    every: int | None = setting(None, "save every N iterations", shown="at the end only")
    keep: int = setting(3, "resumable checkpoints kept (older ones are pruned)")


@dataclass(frozen=True)
class PretrainedSettings:
    path: Path = setting(doc="weights to start from (.pth or .safetensors)")
    strict: bool = setting(True, "every key must fit (false: load those that do)")
    key_map: tuple[tuple[str, str | None], ...] = setting(
        (),
        "rename the file's keys first: `{FROM: TO}` on dotted prefixes, `*` one segment, "
        "TO null leaves a key out (a file trained as another network)",
        shown="none",
    )


def parse_validation(r: Reader) -> ValidationSettings:
    s = r.section
    _check_metrics(r, tuple(s.get("metrics") or ()))
    return ValidationSettings(
        every=int(s["every"]),
        output=s["output"],
        input=s.get("input"),
        target=s.get("target"),
        metrics=tuple(s.get("metrics") or ("psnr", "ssim")),
        y_channel=bool(s.get("y_channel", False)),
        crop_border=s.get("crop_border"),
        tile=s.get("tile"),
        samples=int(s.get("samples", 2)),
        heats=_heats(r, s),
        n_sample=int(s.get("n_sample", 1)),
    )


def heat_label(heat: float) -> str:
    """``0.5`` → ``heat0.5``, ``1.0`` → ``heat1``: the suffix of a heat's logged keys."""
    return f"heat{heat:g}"


def _heats(r: Reader, s: dict[str, Any]) -> tuple[float, ...]:
    """Each heat once (two that print alike would log under one key); ``n_sample``
    without heats draws nothing."""
    heats: list[float] = []
    labels: list[str] = []
    for i, value in enumerate(s.get("heats") or ()):
        heat = float(value)
        label = heat_label(heat)
        if label in labels:
            r.error(("heats", i), f"validation.heats: {heat:g} is listed twice")
            continue
        heats.append(heat)
        labels.append(label)
    if "n_sample" in s and not heats:
        r.warning(
            ("n_sample",),
            "validation.n_sample draws samples at each of validation.heats, and there are "
            "none; add heats (e.g. heats: [0.0, 0.5, 1.0]) or remove n_sample",
        )
    return tuple(heats)


def _check_metrics(r: Reader, metrics: tuple[str, ...]) -> None:
    """A metric whose package is missing is refused here, not at the first validation."""
    if "lpips" not in metrics:
        return
    for package in ("lpips", "torchvision"):  # torch-free: find_spec imports nothing
        if importlib.util.find_spec(package) is None:
            r.error(
                ("metrics", metrics.index("lpips")),
                f"validation.metrics: lpips needs the {package} package, which is not "
                "installed: pip install lpips (or the extra: pip install 'loom[lpips]')",
            )
            return


def parse_logging(r: Reader) -> LoggingSettings:
    """``trackers`` lists each tracker once; ``tensorboard: true`` adds TensorBoard.
    A tracker whose package is missing is refused at its line, naming what to install."""
    from engine.train.trackers import missing_package

    s = r.section
    written = list(s.get("trackers") or ())
    trackers: list[Tracker] = []
    for i, name in enumerate(written):
        if name in trackers:
            r.error(("trackers", i), f"logging.trackers: {name} is listed twice")
            continue
        problem = missing_package(name)
        if problem is not None:
            r.error(("trackers", i), f"logging.trackers: {problem}")
        trackers.append(name)
    tensorboard = bool(s.get("tensorboard", False))
    if tensorboard and "tensorboard" not in trackers:
        problem = missing_package("tensorboard")
        if problem is not None:
            r.error(
                ("tensorboard",),
                f"logging.tensorboard is true but {problem} (or set logging.tensorboard: false)",
            )
        trackers.append("tensorboard")
    return LoggingSettings(
        every=int(s.get("every", 50)), trackers=tuple(trackers), tensorboard=tensorboard
    )


def parse_checkpoints(r: Reader) -> CheckpointSettings:
    s = r.section
    return CheckpointSettings(every=s.get("every"), keep=int(s.get("keep", 3)))


def parse_pretrained(r: Reader, name: str, spec_dir: Path) -> PretrainedSettings:
    """``networks.NAME.pretrained``: the file is looked for beside the spec, then here."""
    s = r.section
    written = Path(s["path"])
    try:
        path = written if written.is_absolute() or written.exists() else spec_dir / written
        found = path.is_file()
    except OSError:  # a name the system cannot look up (too long): not there
        path, found = spec_dir / written, False
    if not found:
        r.error(
            ("path",),
            f"network {name}: pretrained weights file '{s['path']}' not found (looked in "
            f"{spec_dir} and the working directory)",
        )
    key_map: list[tuple[str, str | None]] = []
    for source, target in (s.get("key_map") or {}).items():
        problem = check_entry(str(source), None if target is None else str(target))
        if problem is not None:
            r.error(("key_map", source), f"{r.where('key_map', source)}: {problem}")
            continue
        key_map.append((str(source), None if target is None else str(target)))
    return PretrainedSettings(path=path, strict=bool(s.get("strict", True)), key_map=tuple(key_map))

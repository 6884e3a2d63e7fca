"""The run's other sections: ``validation:``, ``logging:``, ``checkpoints:`` and each
network's ``pretrained:``."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from engine.settings.base import Reader, setting

Metric = Literal["psnr", "ssim", "lpips"]


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


@dataclass(frozen=True)
class LoggingSettings:
    every: int = setting(50, "log losses and rates every N iterations")
    tensorboard: bool = setting(False, "write TensorBoard events into the run folder")


@dataclass(frozen=True)
class CheckpointSettings:
    every: int | None = setting(None, "save every N iterations", shown="at the end only")
    keep: int = setting(3, "resumable checkpoints kept (older ones are pruned)")


@dataclass(frozen=True)
class PretrainedSettings:
    path: Path = setting(doc="weights to start from (.pth or .safetensors)")
    strict: bool = setting(True, "every key must fit (false: load those that do)")


def parse_validation(r: Reader) -> ValidationSettings:
    s = r.section
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
    )


def parse_logging(r: Reader) -> LoggingSettings:
    s = r.section
    tensorboard = bool(s.get("tensorboard", False))
    if tensorboard and importlib.util.find_spec("tensorboard") is None:
        r.error(
            ("tensorboard",),
            "logging.tensorboard is true but the tensorboard package is not installed: "
            "pip install tensorboard (or set logging.tensorboard: false)",
        )
    return LoggingSettings(every=int(s.get("every", 50)), tensorboard=tensorboard)


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
    return PretrainedSettings(path=path, strict=bool(s.get("strict", True)))

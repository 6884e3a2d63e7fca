"""docs/settings.md, generated from the settings classes (their defaults and docs)."""

from __future__ import annotations

from pathlib import Path

from engine.settings.base import defaults_table
from engine.settings.optim import ClipSettings, GroupSettings, OptimizerSettings
from engine.settings.run import (
    CheckpointSettings,
    LoggingSettings,
    PretrainedSettings,
    ValidationSettings,
)
from engine.settings.schedule import ScheduleSettings
from engine.settings.train import EmaSettings, PhaseSettings, StepSettings, TrainSettings

PATH = Path(__file__).resolve().parents[2] / "docs" / "settings.md"

_SECTIONS = (
    ("train:", TrainSettings, "train."),
    ("train.ema:", EmaSettings, "train.ema."),
    ("train.phases[]:", PhaseSettings, ""),
    ("train.phases[].steps[]:", StepSettings, ""),
    ("optimizers.NAME:", OptimizerSettings, ""),
    ("optimizers.NAME.groups[]:", GroupSettings, ""),
    ("optimizers.NAME.clip:", ClipSettings, "clip."),
    ("optimizers.NAME.scheduler:", ScheduleSettings, ""),
    ("validation:", ValidationSettings, "validation."),
    ("logging:", LoggingSettings, "logging."),
    ("checkpoints:", CheckpointSettings, "checkpoints."),
    ("networks.NAME.pretrained:", PretrainedSettings, ""),
)

_HEAD = """\
# Settings and their defaults

Generated from the settings classes in `engine/settings/` by `python cli.py schema`
(a test fails when this page is stale). Every key is checked by `validate`; a key
that is not listed for its section is an error. The data section's keys are in
[data.md](data.md).

Keys shown as "required" have no default. Iterations may be written as a fraction of
`train.iterations` where the text says so (`until: 0.5`, `milestones: [0.5, 0.75]`).
"""


def text() -> str:
    parts = [_HEAD]
    for title, cls, prefix in _SECTIONS:
        parts.append(f"\n## `{title}`\n\n| key | default | meaning |\n| --- | --- | --- |")
        parts.extend(defaults_table(cls, prefix))
    return "\n".join(parts) + "\n"


def stale() -> bool:
    return not PATH.exists() or PATH.read_text(encoding="utf-8") != text()


def write() -> Path:
    PATH.write_text(text(), encoding="utf-8")
    return PATH

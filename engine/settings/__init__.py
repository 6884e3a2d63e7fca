"""Typed, torch-free settings of a run, read once from the resolved spec.

``parse_settings`` turns the schema-checked spec into frozen dataclasses with their
defaults (documented in docs/settings.md, generated from these classes). Every problem
found on the way is a diagnostic at its key, reported with the rest by ``validate``;
the runner and everything below it read these objects, never the spec dict.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.data.errors import DataError
from engine.data.options import DataOptions, folder_warnings, parse_options
from engine.settings.base import LOWER_IS_BETTER, Reader, iteration_of, parse_section
from engine.settings.optim import ClipSettings, GroupSettings, OptimizerSettings, parse_optimizer
from engine.settings.run import (
    CheckpointSettings,
    LoggingSettings,
    PretrainedSettings,
    ValidationSettings,
    parse_checkpoints,
    parse_logging,
    parse_pretrained,
    parse_validation,
)
from engine.settings.schedule import ScheduleSettings
from engine.settings.train import EmaSettings, PhaseSettings, Ramp, StepSettings, TrainSettings
from engine.settings.train import parse_train as _parse_train
from engine.spec.diagnostics import Diagnostics, Loc
from engine.spec.yamlio import Doc, as_dict

__all__ = [
    "LOWER_IS_BETTER",
    "CheckpointSettings",
    "ClipSettings",
    "DataSettings",
    "EmaSettings",
    "GroupSettings",
    "LoggingSettings",
    "OptimizerSettings",
    "PhaseSettings",
    "PretrainedSettings",
    "Ramp",
    "ScheduleSettings",
    "Settings",
    "StepSettings",
    "TrainSettings",
    "ValidationSettings",
    "iteration_of",
    "parse_settings",
]


@dataclass(frozen=True)
class DataSettings:
    train: DataOptions | None = None
    val: DataOptions | None = None


@dataclass(frozen=True)
class Settings:
    """Everything a run reads, besides its graphs."""

    scale: int = 1
    train: TrainSettings | None = None
    optimizers: dict[str, OptimizerSettings] = field(default_factory=dict)
    data: DataSettings = DataSettings()
    validation: ValidationSettings | None = None
    logging: LoggingSettings = LoggingSettings()
    checkpoints: CheckpointSettings = CheckpointSettings()
    pretrained: dict[str, PretrainedSettings] = field(default_factory=dict)


def parse_settings(data: dict[str, Any], doc: Doc, diags: Diagnostics, spec_dir: Path) -> Settings:
    """Read every section; report what the schema cannot check at its key."""

    def read(path: tuple[Any, ...], parse: Any) -> Any:
        section = doc.get(path)
        if not isinstance(section, dict):
            return None
        reader = Reader(doc, diags, path, section)
        return parse_section(diags, lambda: parse(reader))

    scale = data.get("scale", 1) if isinstance(data.get("scale", 1), int) else 1
    train = read(("train",), _parse_train)
    total = train.iterations if train is not None else None
    optimizers: dict[str, OptimizerSettings] = {}
    for name in as_dict(data.get("optimizers")):
        found = read(("optimizers", name), lambda r, n=name: parse_optimizer(r, n, total))
        if found is not None:
            optimizers[name] = found
    pretrained = {}
    networks = as_dict(data.get("networks"))
    for name in networks:
        found = read(
            ("networks", name, "pretrained"), lambda r, n=name: parse_pretrained(r, n, spec_dir)
        )
        if found is not None:
            pretrained[name] = found
    settings = Settings(
        scale=scale,
        train=train,
        optimizers=optimizers,
        data=DataSettings(
            train=read(("data", "train"), lambda r: _dataset(r, scale, spec_dir, train=True)),
            val=read(("data", "val"), lambda r: _dataset(r, scale, spec_dir, train=False)),
        ),
        validation=read(("validation",), parse_validation),
        logging=read(("logging",), parse_logging) or LoggingSettings(),
        checkpoints=read(("checkpoints",), parse_checkpoints) or CheckpointSettings(),
        pretrained=pretrained,
    )
    _check_plateaus(settings, doc, diags)
    _check_data_for(settings, data, doc, diags)
    return settings


def _dataset(r: Reader, scale: int, spec_dir: Path, *, train: bool) -> DataOptions | None:
    try:
        options = parse_options(r.section, train=train, scale=scale)
    except DataError as exc:
        for problem in exc.problems:
            r.error(() if problem.key is None else (problem.key,), str(problem))
        return None
    for key, message in folder_warnings(options, spec_dir):
        r.warning(() if key is None else (key,), message)
    return options


def _check_data_for(settings: Settings, data: dict[str, Any], doc: Doc, diags: Diagnostics) -> None:
    """Training reads data.train; validation reads data.val."""
    section = data.get("data")
    if settings.train is not None and settings.data.train is None and section is None:
        diags.error(
            doc.key_loc(("train",)) or Loc("?"),
            "'train:' needs a 'data:' section with a 'train:' dataset to train on",
        )
    has_val = isinstance(section, dict) and section.get("val") is not None
    if settings.validation is not None and not has_val:
        diags.warning(
            doc.key_loc(("validation",)) or Loc("?"),
            "'validation:' has no dataset to run on: add data.val (nothing is validated "
            "without it)",
        )


def _check_plateaus(settings: Settings, doc: Doc, diags: Diagnostics) -> None:
    """A plateau schedule watches a validation metric that validation computes."""
    for name, opt in settings.optimizers.items():
        if opt.scheduler is None or opt.scheduler.type != "plateau":
            continue
        at = doc.loc(("optimizers", name, "scheduler", "metric")) or doc.loc(
            ("optimizers", name, "scheduler", "type")
        )
        if settings.validation is None:
            diags.error(
                at or doc.key_loc(("optimizers", name)),
                f"optimizer {name}: a plateau schedule follows a validation metric, but the "
                "spec has no 'validation:' section; add one or choose another schedule",
            )
            continue
        metrics = settings.validation.metrics
        if opt.scheduler.metric not in metrics:
            diags.error(
                at or doc.key_loc(("optimizers", name)),
                f"optimizer {name}: the plateau schedule watches '{opt.scheduler.metric}', "
                f"which validation does not compute (validation.metrics: "
                f"{', '.join(metrics)})",
            )

"""Typed settings: parsed once from the spec, torch-free, defaults in one place."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine.load import load_spec
from engine.settings import docs as settings_docs
from engine.settings.schedule import USED_KEYS
from engine.spec.skeleton import SCHEDULER

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "specs").glob("*.yaml"))


def test_the_settings_page_is_generated_from_the_classes() -> None:
    assert not settings_docs.stale(), "run: python cli.py schema"


def test_validating_imports_no_torch() -> None:
    code = (
        "import sys; from engine.load import check_spec; "
        "spec, d = check_spec('specs/wbc.yaml'); assert spec is not None, d.sorted(); "
        "assert spec.settings.train is not None; "
        "assert 'torch' not in sys.modules, 'torch imported'; "
        "assert 'PIL' not in sys.modules and 'numpy' not in sys.modules, 'image libraries'"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_every_shipped_spec_has_typed_settings(path: Path) -> None:
    spec = load_spec(path)
    train = spec.settings.train
    assert train is not None and train.iterations == spec.data["train"]["iterations"]
    assert train.phases[-1].end == train.iterations
    assert [p.start for p in train.phases[1:]] == [p.end for p in train.phases[:-1]]
    assert set(spec.settings.optimizers) == set(spec.data["optimizers"])
    assert spec.settings.data.train is not None
    assert spec.settings.data.train.batch_size == spec.data["data"]["train"].get("batch_size", 1)


def test_defaults_come_from_the_classes() -> None:
    spec = load_spec(ROOT / "specs" / "quickstart.yaml", ["+train.max_bad_steps=3"])
    assert spec.settings.train is not None and spec.settings.train.max_bad_steps == 3
    assert spec.settings.logging.tensorboard is False
    assert spec.settings.checkpoints.keep == 2
    assert spec.settings.validation is not None
    assert spec.settings.validation.crop_border is None  # the scale, at validation
    schedule = spec.settings.optimizers["G"].scheduler
    assert schedule is not None and schedule.type == "cosine" and schedule.eta_min == 0.05
    assert schedule.periods == (spec.settings.train.iterations,)


def test_every_scheduler_key_is_read_by_some_kind() -> None:
    read = {k for keys in USED_KEYS.values() for k in keys} | {"type", "warmup"}
    assert read == set(SCHEDULER["properties"])


def test_ramps_and_phase_ends_resolve_fractions_once() -> None:
    spec = load_spec(
        ROOT / "specs" / "esrgan.yaml",
        [
            "train.iterations=1000",
            "+train.phases.1.steps.1.minimize.g_gan={from: 0, to: 0.005, over: 0.5}",
        ],
    )
    train = spec.settings.train
    assert train is not None
    psnr, gan = train.phases
    assert (psnr.start, psnr.end, gan.start, gan.end) == (0, psnr.end, psnr.end, 1000)
    step = gan.steps[1]
    assert step.weight_values(gan.start, gan.start)["g_gan"] == 0.0
    assert step.weight_values(gan.start + 250, gan.start)["g_gan"] == pytest.approx(0.0025)
    assert step.weight_values(gan.start + 900, gan.start)["g_gan"] == pytest.approx(0.005)


def test_every_optimizer_validate_accepts_is_a_torch_optimizer() -> None:
    from engine.spec.skeleton import OPTIMIZERS
    from engine.train.optim import OPTIMIZER_CLASSES

    assert set(OPTIMIZER_CLASSES) == set(OPTIMIZERS)

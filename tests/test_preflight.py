"""``validate`` refuses exactly what ``run`` refuses before its first iteration.

Every case of the broken-spec corpus (tests/broken/) is given to the runner as well as
to ``validate``: both must report the same diagnostics, at the same places. Shipped
specs pass both (tests/test_specs_train.py trains each of them through the runner).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from engine.load import check_spec
from engine.spec.diagnostics import SpecError
from engine.train.runner import run

ROOT = Path(__file__).resolve().parents[1]
BROKEN = ROOT / "tests" / "broken"
CASES = sorted(p for p in BROKEN.glob("*.yaml") if not p.name.startswith("_"))
OVERRIDES = re.compile(r"^# overrides:(.*)$", re.MULTILINE)


def _overrides(path: Path) -> list[str]:
    found = OVERRIDES.search(path.read_text(encoding="utf-8"))
    return found[1].split() if found else []


def _listed(diagnostics: object) -> list[str]:
    return [str(d) for d in diagnostics.sorted()]  # type: ignore[attr-defined]


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_run_refuses_what_validate_refuses(path: Path, tmp_path: Path) -> None:
    overrides = _overrides(path)
    spec, diags = check_spec(path, overrides)
    if spec is not None:
        pytest.skip("a warnings-only case")
    with pytest.raises(SpecError) as refused:
        run(path, overrides, out=tmp_path / "run")
    assert _listed(refused.value.diagnostics) == _listed(diags)
    assert not (tmp_path / "run").exists()  # refused before anything was written


@pytest.mark.parametrize(
    "name", ["run_data_key_and_crop", "run_scheduler_key_unused", "run_pretrained_missing"]
)
def test_the_commands_print_the_same_diagnostics(name: str, tmp_path: Path) -> None:
    path = str(BROKEN / f"{name}.yaml")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(ROOT / "cli.py"), *args],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )

    validated = cli("validate", path)
    ran = cli("run", path, "--out", str(tmp_path / "run"))
    assert validated.returncode == ran.returncode == 2
    lines = [line for line in validated.stderr.splitlines() if ": error: " in line]
    assert lines and lines == [line for line in ran.stderr.splitlines() if ": error: " in line]
    assert "Traceback" not in ran.stderr


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "specs").glob("*.yaml")))
def test_every_shipped_spec_passes_validate_and_the_runner_pre_flight(
    name: str, tmp_path: Path
) -> None:
    """What validates, the runner sets up: networks, weights, ops, losses, optimizers
    and schedules, the datasets' options (tiny sizes from the training tests)."""
    from test_specs_train import TINY

    from engine.train.runner import prepare

    spec, diags = check_spec(ROOT / "specs" / name, TINY[name])
    assert spec is not None, [str(d) for d in diags.errors]
    trainer = prepare(spec, tmp_path / "run", live=False, data=False)
    try:
        assert set(trainer.optimizers) == set(spec.settings.optimizers)
        assert all(trainer.optimizers[n].params for n in trainer.optimizers)
    finally:
        trainer.close()

"""What a resume takes from a changed spec, refuses, and applies; and a 2-process
(torchrun, gloo) run stopped with SIGTERM, resumed, ending equal to an uninterrupted one.

Run as a script (``python tests/test_resume.py SPEC OUT [--resume] [overrides]``) this
file is the torchrun worker of the distributed test.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pytest
import torch
from test_train import SyntheticSR, records, spec_file

from engine import load_spec
from engine.train import checkpoint as ckpt
from engine.train.runner import RunResult, run


def resume(
    path: Path,
    out: Path,
    *overrides: str,
    changes: Sequence[str] = (),
    other: bool = False,
) -> RunResult:
    return run(
        load_spec(path, list(overrides)),
        out=out,
        resume="auto",
        resume_changes=changes,
        resume_from_other=other,
        stream=io.StringIO(),
        live=False,
        datasets={"train": SyntheticSR()},
    )


@pytest.fixture
def eight(tmp_path: Path) -> tuple[Path, Path]:
    """A run of the tiny spec stopped at iteration 8 of 8 (a checkpoint there)."""
    path = spec_file(tmp_path)
    run(
        load_spec(path, ["train.iterations=8"]),
        out=tmp_path / "run",
        stream=io.StringIO(),
        live=False,
        datasets={"train": SyntheticSR()},
    )
    return path, tmp_path / "run"


def test_changes_that_alter_the_computation_are_listed_and_refused(
    eight: tuple[Path, Path],
) -> None:
    path, out = eight
    before = (out / "spec.resolved.yaml").read_text()
    with pytest.raises(ckpt.CheckpointError) as refused:
        resume(path, out, "train.iterations=12", "optimizers.G.lr=0.05")
    message = str(refused.value)
    assert "optimizers.G.lr: 0.01 → 0.05" in message
    assert "train.iterations: 8 → 12" in message
    assert "--resume-changes" in message
    assert (out / "spec.resolved.yaml").read_text() == before  # never rewritten


def test_a_named_change_is_applied_logged_and_written_beside_the_old_spec(
    eight: tuple[Path, Path],
) -> None:
    path, out = eight
    before = (out / "spec.resolved.yaml").read_text()
    result = resume(
        path,
        out,
        "train.iterations=12",
        "optimizers.G.lr=0.05",
        "logging.every=2",
        changes=["train.iterations,optimizers.*.lr"],
    )
    assert result.iteration == 12
    rates = {r["iter"]: r["lr/G"] for r in records(out) if "lr/G" in r}
    assert rates[8] == pytest.approx(0.01) and rates[10] == rates[12] == pytest.approx(0.05)
    assert 9 not in rates  # logging.every=2 was taken too (cadence: no flag needed)
    log = (out / "train.log").read_text()
    assert "resume takes optimizers.G.lr: 0.01 → 0.05 (--resume-changes)" in log
    assert "resume takes logging.every: 1 → 2 (when things happen" in log
    assert (out / "spec.resolved.yaml").read_text() == before
    new = (out / "spec.resolved.iter_00000008.yaml").read_text()
    assert "lr: 0.05" in new and "#   resume takes optimizers.G.lr" in new
    # The next resume compares with the new spec: nothing changed, nothing to name.
    meta = ckpt.read_meta(out / "checkpoints" / "iter_00000012")
    assert meta["resolved"]["optimizers"]["G"]["lr"] == 0.05


def test_allow_takes_a_new_loss_weight(eight: tuple[Path, Path]) -> None:
    path, out = eight
    weight = "train.phases.0.steps.0.minimize.pix"
    with pytest.raises(ckpt.CheckpointError, match=f"{weight}: 1.0 → 2.0"):
        resume(path, out, "train.iterations=10", "train.phases=[{name: main, steps: "
               "[{optimizer: G, minimize: {pix: 2.0}}]}]")  # fmt: skip
    result = resume(
        path,
        out,
        "train.iterations=10",
        "train.phases=[{name: main, steps: [{optimizer: G, minimize: {pix: 2.0}}]}]",
        changes=["allow"],
    )
    assert result.iteration == 10


def test_what_a_restored_state_cannot_follow_is_refused_even_when_allowed(
    eight: tuple[Path, Path],
) -> None:
    path, out = eight
    with pytest.raises(ckpt.CheckpointError) as refused:
        resume(path, out, "optimizers.G.type=sgd", "train.seed=4", changes=["allow"])
    message = str(refused.value)
    assert 'optimizers.G.type: "adam" → "sgd" cannot be taken on resume' in message
    assert "train.seed: 3 → 4 cannot be taken on resume" in message
    with pytest.raises(ckpt.CheckpointError, match="already at iteration 8"):
        resume(path, out, "train.iterations=6", changes=["allow"])


def test_a_checkpoint_of_another_spec_is_refused_by_name_and_hash(
    eight: tuple[Path, Path],
) -> None:
    path, out = eight
    with pytest.raises(ckpt.CheckpointError) as refused:
        resume(path, out, "name=other", "train.iterations=10")
    message = str(refused.value)
    assert "written by another spec: 'tiny' (sha256 " in message and "not 'other'" in message
    assert "--resume-from-other" in message
    result = resume(path, out, "name=other", "train.iterations=10", other=True)
    assert result.iteration == 10
    assert "resuming the state of another spec 'tiny'" in (out / "train.log").read_text()


# --------------------------------------------------------- two processes, SIGTERM
class SlowSR(SyntheticSR):
    """Synthetic images read slowly enough for a signal to land mid-run."""

    def __getitem__(self, key):  # type: ignore[no-untyped-def]
        time.sleep(0.02)
        return super().__getitem__(key)


def _worker(argv: list[str]) -> None:
    spec, out, *rest = argv
    again = "--resume" in rest
    overrides = [a for a in rest if a != "--resume"]
    result = run(
        load_spec(Path(spec), overrides),
        out=Path(out) / "run",
        resume="auto" if again else None,
        stream=io.StringIO(),
        live=False,
        datasets={"train": SlowSR(n=32)},
    )
    rank = os.environ.get("RANK", "0")
    weights = {n: m.state_dict() for n, m in result.networks.items()}
    torch.save({"iteration": result.iteration, "weights": weights}, Path(out) / f"rank{rank}.pt")


def _torchrun(spec: Path, out: Path, *extra: str) -> list[str]:
    from test_distributed import free_port

    return [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_port", str(free_port()), __file__, str(spec), str(out),
        "data.train.batch_size=2", "train.iterations=40", "checkpoints.every=1000", *extra,
    ]  # fmt: skip


def _ranks(out: Path) -> list[dict]:  # type: ignore[type-arg]
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]


@pytest.mark.slow
def test_sigterm_under_torchrun_stops_every_rank_at_one_iteration_then_resumes_exactly(
    tmp_path: Path,
) -> None:
    spec = spec_file(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        _torchrun(spec, tmp_path / "a"), env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "b"
    launched = subprocess.Popen(
        _torchrun(spec, out), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    metrics = out / "run" / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 8):
        assert launched.poll() is None and time.monotonic() < deadline, "the run ended early"
        time.sleep(0.05)
    launched.send_signal(signal.SIGTERM)  # what torchrun's agent passes on to every rank
    _, stderr = launched.communicate(timeout=120)
    stopped = _ranks(out)
    at = stopped[0]["iteration"]
    assert stopped[1]["iteration"] == at and 8 <= at < 40, stderr[-3000:]
    assert [p.name for p in ckpt.checkpoints(out / "run" / "checkpoints")] == [f"iter_{at:08d}"]
    log = (out / "run" / "train.log").read_text()
    assert f"interrupted: saved iteration {at} (SIGTERM)" in log
    assert "Traceback" not in log
    again = subprocess.run(
        [*_torchrun(spec, out), "--resume"], env=env, capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0, again.stderr[-3000:]
    straight, resumed = _ranks(tmp_path / "a"), _ranks(out)
    for rank in range(2):
        assert resumed[rank]["iteration"] == 40
        for net, state in straight[rank]["weights"].items():
            for key, value in state.items():
                assert torch.equal(value, resumed[rank]["weights"][net][key]), (rank, net, key)
    iters = [r["iter"] for r in records(out / "run") if "loss/pix" in r]
    assert iters == list(range(1, 41))  # each iteration logged once, across the stop
    assert json.loads(metrics.read_text().splitlines()[-1])["iter"] == 40


if __name__ == "__main__":
    _worker(sys.argv[1:])

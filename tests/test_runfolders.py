"""Run folders under faults: damaged checkpoints, a second writer, old runs, full and
read-only disks, unsafe files, signals. Every fault ends in one message naming the
file or folder and what was kept — never a traceback, never torch's advice."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_train import SR_SPEC, SyntheticSR, losses, records, spec_file, train

from engine.compile.weights import WeightsError, read_state_dict
from engine.spec.diagnostics import SpecError
from engine.train import checkpoint as ckpt
from engine.train import runfolder
from engine.train.runfolder import RunFolderError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A spec and its finished run (checkpoints iter 8 and 12 kept), trained once."""
    base = tmp_path_factory.mktemp("base")
    path = spec_file(base)
    train(path, base / "run")
    return path, base / "run"


def copy_run(finished: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    path, run = finished
    shutil.copytree(run, tmp_path / "run")
    return path, tmp_path / "run"


class Evil:
    """A pickle that would run a shell command when loaded."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (self.command,)


def log_of(run: Path) -> str:
    return (run / "train.log").read_text(encoding="utf-8")


def truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def flip(p: Path) -> None:
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit inside a tensor: torch would read it silently
    p.write_bytes(bytes(data))


DAMAGE = {
    "truncated": ("state.pt", truncate, "state.pt has"),
    "emptied": ("state.pt", lambda p: p.write_bytes(b""), "state.pt has 0 bytes"),
    "bit-flipped": ("state.pt", flip, "does not match its sha256"),
    "bad meta": ("meta.json", lambda p: p.write_text("{not json"), "meta.json cannot be read"),
    "no meta": ("meta.json", lambda p: p.unlink(), "meta.json is missing"),
}


@pytest.mark.parametrize("kind", DAMAGE)
def test_a_damaged_newest_checkpoint_is_named_and_auto_takes_the_previous_one(
    finished: tuple[Path, Path], tmp_path: Path, kind: str
) -> None:
    path, run = copy_run(finished, tmp_path)
    name, damage, told = DAMAGE[kind]
    newest = run / "checkpoints" / "iter_00000012"
    damage(newest / name)
    # An explicit checkpoint is refused, naming what is wrong and the intact one beside it.
    with pytest.raises(ckpt.CheckpointError) as refused:
        train(path, run, resume=str(newest))
    assert f"{newest} is damaged" in str(refused.value) and told in str(refused.value)
    assert "--resume " + str(run / "checkpoints" / "iter_00000008") in str(refused.value)
    # --resume auto says so and continues from the newest intact one.
    result = train(path, run, resume="auto")
    assert result.iteration == 12
    log = log_of(run)
    assert f"{newest} is damaged" in log and told in log
    assert "resuming from the newest intact checkpoint, iter_00000008" in log
    assert ckpt.verify(newest) is None  # written again, whole


def test_only_damaged_checkpoints_is_one_message(
    finished: tuple[Path, Path], tmp_path: Path
) -> None:
    path, run = copy_run(finished, tmp_path)
    for folder in ckpt.checkpoints(run / "checkpoints"):
        (folder / "state.pt").write_bytes(b"")
    with pytest.raises(ckpt.CheckpointError, match="no intact checkpoint") as refused:
        train(path, run, resume="auto")
    assert "--overwrite" in str(refused.value)


def test_a_malicious_state_file_is_refused_as_unsafe_and_never_runs(
    finished: tuple[Path, Path], tmp_path: Path
) -> None:
    path, run = copy_run(finished, tmp_path)
    marker = tmp_path / "ran"
    newest = run / "checkpoints" / "iter_00000012"
    torch.save({"networks": Evil(f"touch {marker}")}, newest / "state.pt")
    meta = json.loads((newest / "meta.json").read_text())
    meta["files"]["state.pt"] = ckpt.fingerprint(newest / "state.pt")  # a consistent forgery
    (newest / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ckpt.CheckpointError) as refused:
        train(path, run, resume=str(newest))
    message = str(refused.value)
    assert f"{newest / 'state.pt'}: refused as unsafe" in message and "system" in message
    assert "weights_only" not in message and not marker.exists()


@pytest.mark.parametrize(
    ("content", "told"),
    [
        (b"", "refused as damaged: the file is empty"),
        (b"hello, not weights", "refused as another format"),
        (None, "refused as damaged: truncated or corrupted"),
    ],
    ids=["empty", "text", "truncated"],
)
def test_weights_files_are_refused_in_loom_words(
    tmp_path: Path, content: bytes | None, told: str
) -> None:
    file = tmp_path / "w.pth"
    if content is None:
        torch.save({"w": torch.zeros(64, 64)}, file)
        truncate(file)
    else:
        file.write_bytes(content)
    with pytest.raises(WeightsError) as refused:
        read_state_dict(file)
    assert str(refused.value).startswith(f"{file}: {told}")
    assert "weights_only" not in str(refused.value)


def test_an_empty_pretrained_file_gives_its_reason(tmp_path: Path) -> None:
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(SpecError) as refused:
        train(spec_file(tmp_path), tmp_path / "run", f"+networks.G.pretrained={{path: '{empty}'}}")
    (problem,) = refused.value.diagnostics.errors
    assert f"pretrained weights not loaded: {empty}: refused as damaged: the file is empty" in (
        problem.message
    )


# ------------------------------------------------------------------ one writer
def hold_lock(run: Path) -> subprocess.Popen[str]:
    """Another process that has taken the folder's lock and keeps it."""
    code = (
        "import sys, time; sys.path.insert(0, sys.argv[1])\n"
        "from pathlib import Path\n"
        "from engine.train.runfolder import acquire\n"
        "acquire(Path(sys.argv[2])); print('locked', flush=True); time.sleep(60)\n"
    )
    run.mkdir(parents=True, exist_ok=True)
    owner = subprocess.Popen(
        [sys.executable, "-c", code, str(ROOT), str(run)], stdout=subprocess.PIPE, text=True
    )
    assert owner.stdout is not None and owner.stdout.readline().strip() == "locked"
    return owner


def test_a_second_run_into_a_folder_in_use_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    owner = hold_lock(run)
    try:
        with pytest.raises(RunFolderError, match=f"in use by another run \\(pid {owner.pid}"):
            train(spec_file(tmp_path), run)
        assert not (run / "metrics.jsonl").exists()  # nothing was written beside the other
    finally:
        owner.kill()
        owner.wait()
    result = train(spec_file(tmp_path), run)  # its pid is gone: the lock is stale
    assert result.iteration == 12 and "took over a stale lock" in log_of(run)
    assert not (run / runfolder.LOCK).exists()  # released at the end


def test_a_fresh_run_into_an_old_run_is_refused_and_overwrite_moves_it_aside(
    finished: tuple[Path, Path], tmp_path: Path
) -> None:
    path, run = copy_run(finished, tmp_path)
    with pytest.raises(RunFolderError, match="already holds a run") as refused:
        train(path, run, "train.iterations=4")
    assert "--resume auto" in str(refused.value) and "--overwrite" in str(refused.value)
    assert train_overwrite(path, run).iteration == 4
    aside = tmp_path / "run.previous-1"
    assert ckpt.checkpoints(aside / "checkpoints")[0].name == "iter_00000012"  # kept whole
    assert (run / "checkpoints" / "latest").read_text().strip() == "iter_00000004"
    assert [p.name for p in ckpt.checkpoints(run / "checkpoints")] == ["iter_00000004"]
    assert sorted(losses(run)) == [1, 2, 3, 4]
    assert ckpt.find("auto", run) == run / "checkpoints" / "iter_00000004"


def train_overwrite(path: Path, run: Path):  # type: ignore[no-untyped-def]
    from engine import load_spec
    from engine.train.runner import run as run_spec

    return run_spec(
        load_spec(path, ["train.iterations=4"]),
        out=run,
        overwrite=True,
        stream=__import__("io").StringIO(),
        live=False,
        datasets={"train": SyntheticSR()},
    )


def test_leftovers_of_a_killed_save_are_removed_on_the_next_start(
    finished: tuple[Path, Path], tmp_path: Path
) -> None:
    path, run = copy_run(finished, tmp_path)
    shutil.rmtree(run / "checkpoints" / "iter_00000012")
    (run / "checkpoints" / "latest").write_text("iter_00000008\n")
    (run / "checkpoints" / ".tmp-iter_00000012-999").mkdir()
    (run / "models" / ".tmp-G_iter_00000012-999.pth").write_bytes(b"")
    train(path, run, resume="auto")
    assert not list((run / "checkpoints").glob(".tmp*")) and not list(run.glob("models/.tmp*"))
    assert "removed what an interrupted save left half-written" in log_of(run)


# ----------------------------------------------------------------- disk faults
def test_a_read_only_folder_is_one_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = os.open

    def read_only(file, flags, *args, **kwargs):  # type: ignore[no-untyped-def]
        if str(file).endswith(runfolder.LOCK):
            raise OSError(errno.EROFS, "Read-only file system", str(file))
        return real_open(file, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    with pytest.raises(RunFolderError) as refused:
        train(spec_file(tmp_path), tmp_path / "run")
    assert str(refused.value) == (
        f"cannot write to {tmp_path / 'run'}: the file system is read-only. Nothing was written."
    )


def test_too_little_free_space_stops_before_the_save(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(
        runfolder.shutil, "disk_usage", lambda p: usage._replace(free=1000)
    )  # less than the first save took
    with pytest.raises(RunFolderError, match=r"0\.0 MiB free") as refused:
        train(spec_file(tmp_path), tmp_path / "run")
    message = str(refused.value)
    assert "Stopped at iteration 8 without saving it" in message
    assert "iter_00000004, is kept" in message
    assert not list((tmp_path / "run" / "checkpoints").glob(".tmp*"))


def test_a_full_disk_during_an_export_leaves_nothing_half_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import safetensors.torch

    real = safetensors.torch.save_file
    calls = {"n": 0}

    def full(tensors, filename, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2:
            Path(filename).write_bytes(b"\0" * 10)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    with pytest.raises(RunFolderError, match=r"the disk is full\. Iteration 8 was not saved"):
        train(spec_file(tmp_path), tmp_path / "run")
    models = tmp_path / "run" / "models"
    assert sorted(p.name for p in models.iterdir()) == [
        "G_iter_00000004.pth",
        "G_iter_00000004.safetensors",
        "SHA256SUMS",
    ]


def test_exports_carry_checksums_and_keep_their_own_count(tmp_path: Path) -> None:
    from engine import load_spec
    from engine.train.runner import run as run_spec

    run = tmp_path / "run"
    run_spec(
        load_spec(spec_file(tmp_path)),
        out=run,
        keep_models=1,
        stream=__import__("io").StringIO(),
        live=False,
        datasets={"train": SyntheticSR()},
    )
    names = sorted(p.name for p in (run / "models").iterdir())
    assert names == ["G_iter_00000012.pth", "G_iter_00000012.safetensors", "SHA256SUMS"]
    sums = (run / "models" / "SHA256SUMS").read_text().splitlines()
    for line in sums:
        digest, name = line.split("  ")
        assert ckpt.sha256(run / "models" / name) == digest
    meta = ckpt.read_meta(run / "checkpoints" / "iter_00000012")
    assert set(meta["exports"]) == {"G_iter_00000012.pth", "G_iter_00000012.safetensors"}


# --------------------------------------------------------------------- signals
class SignalAt(SyntheticSR):
    """Sends this process a signal when sample ``at`` is read (mid-iteration)."""

    def __init__(self, at: int, signum: int) -> None:
        super().__init__()
        self.at, self.signum, self.reads = at, signum, 0

    def __getitem__(self, key):  # type: ignore[no-untyped-def]
        self.reads += 1
        if self.reads == self.at:
            os.kill(os.getpid(), self.signum)
        return super().__getitem__(key)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1], ids=["TERM", "USR1"])
def test_sigterm_saves_at_the_end_of_the_iteration_and_resumes_exactly(
    finished: tuple[Path, Path], tmp_path: Path, signum: int
) -> None:
    path, straight = finished
    run = tmp_path / "run"
    stopped = train(path, run, data=SignalAt(at=4 * 5 + 2, signum=signum))  # in iteration 6
    assert stopped.interrupted and stopped.iteration == 6
    assert (run / "checkpoints" / "latest").read_text().strip() == "iter_00000006"
    assert f"saved iteration 6 ({signal.Signals(signum).name})" in log_of(run)
    kept = [r for r in records(run) if r["iter"] <= 6]
    assert len(kept) == len(records(run))
    resumed = train(path, run, resume="auto")
    assert resumed.iteration == 12 and losses(run) == losses(straight)


def test_the_cli_says_a_folder_is_in_use_without_a_traceback(tmp_path: Path) -> None:
    run = tmp_path / "run"
    owner = hold_lock(run)
    try:
        result = subprocess.run(
            [sys.executable, str(ROOT / "cli.py"), "run", str(spec_file(tmp_path, SR_SPEC)),
             "--out", str(run)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        owner.kill()
        owner.wait()
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"error: {run} is in use by another run (pid {owner.pid}" in result.stderr

"""Hostile data: decompression bombs, failing and killed workers, symlink loops.

Runs that could hang are started in a subprocess with a timeout, so a hang fails the
test instead of blocking the suite.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from engine.data import DataError, make_dataset
from engine.data.folders import list_images
from engine.data.imageio import probe, read_image

ROOT = Path(__file__).resolve().parents[1]


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def write_bomb(path: Path, size: int = 100_000, depth: int = 8) -> Path:
    """A valid PNG of a few KB whose header declares ``size`` x ``size`` RGB pixels."""
    header = struct.pack(">IIBBBBB", size, size, depth, 2, 0, 0, 0)
    row = b"\0" * (1 + size * 3 * depth // 8)  # filter byte + black pixels
    packer = zlib.compressobj(9)
    rows = b"".join(packer.compress(row) for _ in range(4)) + packer.flush()
    png = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", rows)
    path.write_bytes(png + _chunk(b"IEND", b""))
    return path


def photos(folder: Path, n: int = 3, size: int = 32) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:04d}.png")
    return folder


# ---------------------------------------------------------------- decompression bombs


@pytest.mark.parametrize("depth", [8, 16])  # 16 bits: Loom's own PNG decoder
def test_a_png_declaring_huge_dimensions_is_refused_from_its_header(
    tmp_path: Path, depth: int
) -> None:
    bomb = write_bomb(tmp_path / "bomb.png", depth=depth)
    assert bomb.stat().st_size < 20_000
    for read in (lambda: probe(bomb), lambda: read_image(bomb, 3)):
        with pytest.raises(DataError) as info:
            read()
        text = str(info.value)
        assert f"'{bomb}'" in text and "100000x100000" in text
        assert "max_megapixels 200" in text and "set max_megapixels: 10000" in text


def test_max_megapixels_is_a_dataset_option(tmp_path: Path) -> None:
    hr = photos(tmp_path / "hr", size=48)  # 0.0023 MP each
    section = {"type": "sr", "hr": str(hr), "crop_size": 16, "max_megapixels": 0.001}
    with pytest.raises(DataError, match=r"more than max_megapixels 0\.001"):
        make_dataset(section, scale=2, train=True, seed=0)
    write_bomb(hr / "bomb.png")
    with pytest.raises(DataError, match=r"bomb\.png' declares 100000x100000"):
        make_dataset({**section, "max_megapixels": 1}, scale=2, train=True, seed=0)
    skipping = {**section, "max_megapixels": 1, "on_bad_image": "skip"}
    ds = make_dataset(skipping, scale=2, train=True, seed=0)
    assert len(ds) == 3 and len(ds.skipped) == 1 and "max_megapixels 1;" in ds.skipped[0]


def test_a_bomb_is_skipped_like_any_bad_file(tmp_path: Path) -> None:
    hr = photos(tmp_path / "hr")
    write_bomb(hr / "bomb.png")
    section = {"type": "sr", "hr": str(hr), "crop_size": 16, "on_bad_image": "skip"}
    ds = make_dataset(section, scale=2, train=True, seed=0)
    assert len(ds) == 3 and len(ds.skipped) == 1 and "bomb.png" in ds.skipped[0]
    assert ds[0]["hr"].shape == (3, 16, 16)


# ------------------------------------------------------ failing and killed workers

# One subprocess (torch is imported once) runs every failure; a hang fails by timeout.
FAILING_RUNS = """\
import contextlib, io, json, os, signal, sys
sys.path[:0] = [{root!r}, {tests!r}]
from pathlib import Path
from test_train import SR_SPEC, SyntheticSR
import cli
from engine import load_spec
from engine.data import DataError
from engine.train import checkpoint as ckpt
from engine.train.runner import run

FAILURES = {{
    "data": lambda: DataError("corrupt image 'hr/0005.png' (truncated file); fix it"),
    "memory": lambda: MemoryError(),
    "killed": lambda: os.kill(os.getpid(), signal.SIGKILL),
}}

class Failing(SyntheticSR):  # epoch 2 (iterations 9 to 12) fails at index 5
    def __init__(self, failure):
        super().__init__()
        self.failure = failure

    def __getitem__(self, key):
        if key[0] == 2 and key[1] % self.n == 5:
            raise FAILURES[self.failure]()
        return super().__getitem__(key)

out = Path({out!r})
spec = out / "spec.yaml"
spec.write_text(SR_SPEC)
results = {{}}
for failure in FAILURES:
    run_dir = out / failure
    try:
        run(load_spec(spec, ["+data.train.workers=2", "train.iterations=40"]),
            out=run_dir, stream=io.StringIO(), live=False, datasets={{"train": Failing(failure)}})
        said = "finished"
    except DataError as exc:
        said = "DataError: " + str(exc)
    latest = ckpt.find("auto", run_dir)
    results[failure] = {{"said": said, "latest": latest.name if latest else None}}
spec.write_text(SR_SPEC.replace('"builtin:photos"', '"{bombs}", workers: 2'))
for flags in ([], ["--debug"]):
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(["run", str(spec), "--out", str(out / "cli"), *flags])
    results["cli" + "".join(flags)] = {{"code": code, "stderr": stderr.getvalue()}}
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def failing_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    out = tmp_path_factory.mktemp("failing")
    bombs = photos(out / "hr")
    write_bomb(bombs / "bomb.png")
    script = FAILING_RUNS.format(
        root=str(ROOT), tests=str(ROOT / "tests"), out=str(out), bombs=str(bombs)
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results: dict[str, dict[str, Any]] = json.loads(done.stdout.splitlines()[-1])
    return results


@pytest.mark.parametrize(
    ("failure", "message"),
    [
        ("data", "DataError: corrupt image 'hr/0005.png' (truncated file); fix it"),
        (
            "memory",
            "DataError: out of memory in a data worker (MemoryError): lower "
            "data.train.workers or data.train.batch_size",
        ),
        (
            "killed",
            "DataError: a data worker was killed by the operating system (signal 9, often "
            "out of memory): lower data.train.workers or batch_size",
        ),
    ],
)
def test_a_failing_or_killed_worker_ends_the_run_with_its_message(
    failing_runs: dict[str, dict[str, Any]], failure: str, message: str
) -> None:
    result = failing_runs[failure]
    # torch tells a killed worker either by its signal or, when the loader notices the
    # dead process first, as one that exited: both are said plainly.
    exited = "DataError: a data worker exited unexpectedly (often out of memory): lower "
    assert result["said"].startswith(message) or (
        failure == "killed" and result["said"].startswith(exited)
    )
    assert result["latest"] is not None  # a checkpoint saved before the failure, intact


def test_the_cli_reports_a_data_error_without_a_traceback_unless_debug(
    failing_runs: dict[str, dict[str, Any]],
) -> None:
    plain, debug = failing_runs["cli"], failing_runs["cli--debug"]
    assert plain["code"] == debug["code"] == 2
    assert plain["stderr"].startswith("error: image '") and "bomb.png' declares" in plain["stderr"]
    assert "Traceback" not in plain["stderr"]
    assert "Traceback" in debug["stderr"] and "error: image '" in debug["stderr"]


# ------------------------------------------------------------------- symlink loops


def test_a_symlink_loop_is_read_once_with_a_warning(tmp_path: Path) -> None:
    folder = photos(tmp_path / "hr")
    os.symlink(".", folder / "loop")
    with pytest.warns(UserWarning, match=r"'hr/loop' leads to .*a folder already read"):
        files = list_images(folder, "data.train.hr", "hr")
    assert [f.name for f in files] == ["0000.png", "0001.png", "0002.png"]


def test_two_symlink_loops_and_a_linked_image_do_not_hang_or_repeat(tmp_path: Path) -> None:
    folder = photos(tmp_path / "hr")
    (folder / "sub").mkdir()
    os.symlink("..", folder / "sub" / "up")
    os.symlink(".", folder / "loop")
    os.symlink("0000.png", folder / "same.png")
    outside = photos(tmp_path / "more", n=2)
    os.symlink(outside, folder / "more")  # a link out of the folder is followed
    with pytest.warns(UserWarning) as caught:
        files = list_images(folder, "data.train.hr", "hr")
    stems = [f.relative_to(folder).as_posix() for f in files]
    assert stems == ["0000.png", "0001.png", "0002.png", "more/0000.png", "more/0001.png"]
    said = " ".join(str(w.message) for w in caught)
    assert "'hr/loop'" in said and "'hr/sub/up'" in said
    assert "an image is reached twice" in said and "same.png" in said


def test_a_run_logs_folder_warnings_and_skipped_files(tmp_path: Path) -> None:
    import io

    from engine import load_spec
    from engine.train.runner import run

    sys.path.insert(0, str(ROOT / "tests"))
    from test_train import SR_SPEC

    hr = photos(tmp_path / "hr")
    os.symlink(".", hr / "loop")
    (hr / "0003.png").write_bytes(b"not a png")
    spec = tmp_path / "spec.yaml"
    spec.write_text(SR_SPEC.replace('"builtin:photos"', f'"{hr}", on_bad_image: skip'))
    console = io.StringIO()
    run(load_spec(spec, ["train.iterations=1"]), out=tmp_path / "run", stream=console, live=False)
    log = (tmp_path / "run" / "train.log").read_text()
    for text in (log, console.getvalue()):
        assert "warning: data.train.hr: '" in text and "loop' leads to" in text
        assert "data.train: skipped 1 bad files (on_bad_image: skip):" in text
        assert "0003.png" in text and "cannot identify image file" in text


def test_files_skipped_inside_a_worker_are_listed_once_by_the_run(tmp_path: Path) -> None:
    import io

    from engine import load_spec
    from engine.train.runner import run

    sys.path.insert(0, str(ROOT / "tests"))
    from test_train import SR_SPEC

    hr = photos(tmp_path / "hr")
    broken = hr / "0003.png"  # its header is whole (it is listed), its pixels cut short
    Image.fromarray(np.full((64, 64, 3), 7, np.uint8)).save(broken)
    broken.write_bytes(broken.read_bytes()[:60])
    spec = tmp_path / "spec.yaml"
    section = f'"{hr}", on_bad_image: skip, workers: 1'
    spec.write_text(SR_SPEC.replace('"builtin:photos"', section))
    console = io.StringIO()
    run(load_spec(spec, ["train.iterations=3"]), out=tmp_path / "run", stream=console, live=False)
    log = (tmp_path / "run" / "train.log").read_text()
    for text in (log, console.getvalue()):
        told = [line for line in text.splitlines() if "skipped a bad file while training" in line]
        assert len(told) == 1, text  # read in each of the 3 epochs, told once
        assert "data.train:" in told[0] and "0003.png" in told[0] and "corrupt image" in told[0]
        assert "skipped 1 bad files" not in text  # nothing was found when the set was made

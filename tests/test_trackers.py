"""Trackers through Accelerate (TensorBoard read back by its own reader), their
settings, and the dashboard's smoothed loss."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from engine import check_spec, load_spec
from engine.train import trackers
from engine.train.report import SMOOTHING, Reporter

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "specs" / "quickstart.yaml"
#: The quick start, tiny: two phases, validated twice, TensorBoard on. (LPIPS in a run
#: is tested at start-up in test_lpips.py; importing torchvision here costs seconds.)
TINY = [
    "train.iterations=4",
    "validation.every=2",
    "checkpoints.every=4",
    "logging.every=1",
    "networks.G.params.nf=4",
    "+logging.trackers=[tensorboard]",
    "train.phases=[{name: warm, until: 2, steps: [{optimizer: G, minimize: {pix: 1.0}}]},"
    " {name: main, steps: [{optimizer: G, minimize: {pix: 1.0}}]}]",
]
_RUN: dict[str, Path] = {}


class Smooth(torch.utils.data.Dataset):
    """Smooth random images (LR: the 2x average-pooled HR), deterministic per index."""

    def __init__(self, n: int, size: int) -> None:
        self.n, self.size = n, size

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        _, index = key if isinstance(key, tuple) else (0, key)  # loaders pass (epoch, index)
        gen = torch.Generator().manual_seed(index % self.n)
        low = torch.rand(1, 3, 8, 8, generator=gen)
        hr = F.interpolate(low, size=(self.size, self.size), mode="bilinear")[0]
        return {"hr": hr, "lr": F.avg_pool2d(hr[None], 2)[0]}


def quick_run(factory: pytest.TempPathFactory) -> Path:
    """The tiny quick-start run, trained once per test session (test_plot.py reads it)."""
    if "run" not in _RUN:
        from engine.train.runner import run

        out = factory.mktemp("quick") / "quickstart"
        result = run(
            load_spec(QUICKSTART, TINY), out=out, stream=io.StringIO(), live=False,
            datasets={"train": Smooth(8, 16), "val": Smooth(2, 32)},
        )  # fmt: skip
        (out / "best.json").write_text(json.dumps(result.best))
        _RUN["run"] = out
    return _RUN["run"]


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return quick_run(tmp_path_factory)


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_tensorboard_reads_back_what_metrics_jsonl_holds(run_folder: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    expected: dict[str, list[tuple[int, float]]] = {}
    for record in records(run_folder):
        for key, value in record.items():
            if key not in ("iter", "phase"):
                expected.setdefault(key, []).append((record["iter"], value))
    assert {"loss/pix", "lr/G", "val/psnr", "val/ssim", "val/psnr_bicubic"} <= set(expected)
    events = EventAccumulator(str(run_folder / "trackers" / "quickstart"), size_guidance={})
    events.Reload()
    tags = events.Tags()
    assert set(tags["scalars"]) == set(expected)
    for key, points in expected.items():
        got = [(e.step, e.value) for e in events.Scalars(key)]
        assert [s for s, _ in got] == [s for s, _ in points], key
        assert [v for _, v in got] == pytest.approx([v for _, v in points], rel=1e-6), key
    # The samples of both validation rounds, as the PNGs in samples/ (input|output|target).
    assert set(tags["images"]) == {"samples/0", "samples/1"}
    from PIL import Image

    for tag in ("samples/0", "samples/1"):
        logged = events.Images(tag)
        assert [e.step for e in logged] == [2, 4]
        with Image.open(run_folder / "samples" / f"iter_00000004_{tag[-1]}.png") as png:
            assert (logged[-1].width, logged[-1].height) == png.size == (96, 32)
    # The resolved spec is the run's configuration: TensorBoard's hparams, dotted keys.
    [hparams] = (run_folder / "trackers" / "quickstart").glob("*/hparams.yml")
    text = hparams.read_text()
    assert "optimizers.G.lr: 0.001" in text and 'validation.metrics: \'["psnr"' in text
    # The run's own summary agrees with what the trackers got.
    best = json.loads((run_folder / "best.json").read_text())
    psnr = [v for _, v in expected["val/psnr"]]
    assert best["psnr"] == max(psnr)


def test_trackers_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def settings(logging: str):  # type: ignore[no-untyped-def]
        text = QUICKSTART.read_text().replace("logging: {every: 50}", f"logging: {logging}")
        path = tmp_path / "spec.yaml"
        path.write_text(text)
        return check_spec(path)

    spec, _ = settings("{every: 5, tensorboard: true}")
    assert spec is not None and spec.settings.logging.trackers == ("tensorboard",)
    spec, _ = settings("{trackers: [tensorboard], tensorboard: true}")
    assert spec is not None and spec.settings.logging.trackers == ("tensorboard",)
    spec, diags = settings("{trackers: [tensorboard, tensorboard]}")
    assert spec is None and "tensorboard is listed twice" in str(diags.errors[0])
    spec, diags = settings("{trackers: [tensorbord]}")
    assert spec is None and "tensorbord" in str(diags.errors[0])
    found = trackers.importlib.util.find_spec
    monkeypatch.setattr(
        trackers.importlib.util, "find_spec", lambda n: None if n == "wandb" else found(n)
    )
    spec, diags = settings("{trackers: [tensorboard, wandb]}")
    assert spec is None
    [error] = diags.errors
    assert str(error).startswith(f"{tmp_path / 'spec.yaml'}:{error.loc.line}:")
    assert "wandb needs the wandb package" in error.message
    assert "pip install 'loom[wandb]'" in error.message
    # The resolved spec as trackers take a configuration: one level of scalars.
    flat = trackers.flat_config({"a": {"b": 1, "c": [1, 2]}, "d": None, "e": "x"})
    assert flat == {"a.b": 1, "a.c": "[1, 2]", "d": "null", "e": "x"}


def test_the_dashboard_shows_a_smoothed_loss_beside_the_raw_one(tmp_path: Path) -> None:
    from rich.console import Console

    reporter = Reporter(tmp_path, "tiny", 10, 5, stream=io.StringIO(), live=True)
    raw = [1.0, 0.5, float("nan"), 0.25]
    try:
        for i, value in enumerate(raw, 1):
            reporter.progress(i, "main", {"pix": value}, {"G": 1e-3})
        assert reporter._dash is not None
        console = Console(file=io.StringIO(), width=120)
        console.print(reporter._dash._render())
        shown = console.file.getvalue()  # type: ignore[attr-defined]
    finally:
        reporter.close()
    finite = [v for v in raw if math.isfinite(v)]  # a NaN step does not enter the average
    average = 0.0
    for value in finite:
        average = SMOOTHING * average + (1 - SMOOTHING) * value
    expected = average / (1 - SMOOTHING ** len(finite))
    assert reporter.smoothed["pix"] == pytest.approx(expected)
    assert 0.25 < expected < 1.0
    assert "smoothed" in shown and f"{expected:.4g}" in shown and "0.25" in shown

"""`python cli.py plot`: the figure of a quick-start run, checked from its axes; several
runs overlaid; folders that are not runs refused with exit code 2."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from test_trackers import quick_run

import cli
from engine import plot


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return quick_run(tmp_path_factory)


def jsonl(run: Path, key: str) -> tuple[list[int], list[float]]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["iter"] for r in rows if key in r], [r[key] for r in rows if key in r]


def lines(ax):  # type: ignore[no-untyped-def]
    """The curves of a panel (phase markers left out), by legend label."""
    return {line.get_label(): line for line in ax.get_lines() if not line.get_gid()}


def test_the_quick_start_run_has_its_panels(run_folder: Path) -> None:
    fig = plot.figure([plot.read_run(run_folder)])
    axes = {ax.get_title(): ax for ax in fig.get_axes()}
    curves = ["loss/pix", "learning rate", "val/psnr", "val/ssim"]
    grid = [f"iter {i} · sample {s}" for i in (2, 4) for s in (0, 1)]
    assert sorted(axes) == sorted(curves + grid)
    # Each loss raw and smoothed (TensorBoard's 0.6), equal to metrics.jsonl.
    loss = lines(axes["loss/pix"])
    assert list(loss) == ["raw", "smoothed 0.6"]
    x, y = jsonl(run_folder, "loss/pix")
    assert list(loss["raw"].get_xdata()) == x == [1, 2, 3, 4]
    assert list(loss["raw"].get_ydata()) == y
    assert list(loss["smoothed 0.6"].get_ydata()) == pytest.approx(plot.smooth(y, 0.6))
    assert list(lines(axes["learning rate"])) == ["lr/G"]
    # Validation with its baseline; the model's values as validation wrote them.
    psnr = lines(axes["val/psnr"])
    assert list(psnr) == ["model", "bicubic"]
    assert list(psnr["model"].get_ydata()) == jsonl(run_folder, "val/psnr")[1]
    assert list(psnr["bicubic"].get_ydata()) == jsonl(run_folder, "val/psnr_bicubic")[1]
    # The phase "main" starts at iteration 2 (train.log), marked on every curve panel.
    for title in curves:
        marks = [line for line in axes[title].get_lines() if line.get_gid()]
        assert [(m.get_gid(), m.get_xdata()[0]) for m in marks] == [("phase:main", 2)], title
    for title in grid:
        assert len(axes[title].get_images()) == 1
    assert axes["iter 4 · sample 1"].get_images()[0].get_array().shape == (32, 96, 3)


def test_the_command_line_writes_the_png_and_overlays_runs(
    run_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "one.png"
    assert cli.main(["plot", str(run_folder), "--out", str(out)]) == 0
    from PIL import Image

    with Image.open(out) as png:
        assert png.format == "PNG" and png.size == (1200, 640 + 220 * 2)  # 2 curve rows, 2 rounds
    # A second run (a copy, one loss worse and a line cut short by a kill) overlaid.
    other = tmp_path / "b" / "quickstart"
    shutil.copytree(run_folder, other, ignore=shutil.ignore_patterns("trackers", "checkpoints"))
    text = (other / "metrics.jsonl").read_text().replace('"loss/pix": 0.', '"loss/pix": 1.')
    (other / "metrics.jsonl").write_text(text + '{"iter": 5, "loss/p')
    runs = [plot.read_run(p, label) for p, label in zip([run_folder, other], "ab", strict=True)]
    assert runs[1].skipped_lines == 1
    axes = {ax.get_title(): ax for ax in plot.figure(runs, smoothing=0).get_axes()}
    assert list(lines(axes["loss/pix"])) == ["a raw", "b raw"]
    assert [ln.get_color() for ln in lines(axes["loss/pix"]).values()] == ["C0", "C1"]
    assert "a · iter 2 · sample 0" in axes and "b · iter 4 · sample 1" in axes
    both = tmp_path / "both.png"
    assert cli.main(["plot", str(run_folder), str(other), "--out", str(both), "--no-samples"]) == 0
    assert both.is_file()
    capsys.readouterr()
    # Refusals: several runs without --out, a folder that is not a run, nothing logged.
    assert cli.main(["plot", str(run_folder), str(other)]) == 2
    assert "--out FILE.png" in capsys.readouterr().err
    assert cli.main(["plot", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not a run folder" in err and "no metrics.jsonl" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "metrics.jsonl").write_text("")
    assert cli.main(["plot", str(empty)]) == 2
    assert "no losses, learning rates or validation metrics" in capsys.readouterr().err
    assert cli.main(["plot", str(run_folder), "--smoothing", "1"]) == 2


def test_smoothing_is_tensorboards() -> None:
    values = [1.0, 0.0, float("nan"), 1.0]
    got = plot.smooth(values, 0.5)
    # Bias-corrected: the first point is itself; NaN is shown, not averaged in.
    assert got[0] == 1.0 and got[1] == pytest.approx(0.25 / 0.75) and math.isnan(got[2])
    assert got[3] == pytest.approx((0.5 * 0.25 + 0.5 * 1.0) / 0.875)
    assert plot.smooth([3.0, 1.0, 2.0], 0) == [3.0, 1.0, 2.0]

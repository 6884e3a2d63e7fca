"""Restoration at 1x (denoise, deblur, JPEG) and Real-ESRGAN x4.

Fast tier: the four specs validate, compile and agree with ``inspect``; validation
degrades its images from a fixed seed (the same whatever the run's seed, every time);
at 1x the baseline is the degraded input itself (``val/psnr_input``), SR keeps bicubic;
Real-ESRGAN's stages train what they should; community weights (Real-ESRGAN's compact
network at 1x, ESRGAN's RRDBNet at 1x) load with identical outputs. Slow tier: each
spec, as shipped, beats its baseline on the built-in data (figures in
docs/restoration.md). Every weight is made here; nothing is downloaded.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import engine
from engine import load_spec
from engine.compile.build import check_shapes
from engine.compile.weights import export, load_weights
from engine.data import make_dataset
from engine.metrics import METRICS
from engine.train.runner import run
from engine.train.validate import _baseline
from engine.train.validator import baseline_of

ROOT = Path(__file__).resolve().parents[1]
RESTORE = ["restore_denoise.yaml", "restore_deblur.yaml", "restore_jpeg.yaml"]
SPECS = [*RESTORE, "realesrgan.yaml"]
#: Small enough for seconds on a CPU; the data and degradations are the shipped ones.
TINY_1X = [
    "data.train.crop_size=16",
    "data.train.batch_size=2",
    "networks.G.params.nf=4",
    "logging.every=1",
]
TINY_X4 = [
    "data.train.crop_size=32",
    "data.train.batch_size=2",
    "networks.G.params.nf=4",
    "networks.D.params.nf=4",
    "+graph.percep.weights=random",
    "logging.every=1",
]


def tiny(name: str) -> list[str]:
    return TINY_X4 if name == "realesrgan.yaml" else TINY_1X


def records(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def val_set(name: str, *, seed: int) -> Any:
    spec = load_spec(ROOT / "specs" / name)
    section = spec.data["data"]["val"]
    return make_dataset(section, scale=spec.settings.scale, train=False, seed=seed)


# ------------------------------------------------------------------ the specs
@pytest.mark.parametrize("name", SPECS)
def test_spec_compiles_and_inspect_agrees_with_a_forward_pass(name: str) -> None:
    spec = load_spec(ROOT / "specs" / name, tiny(name))
    shapes = check_shapes(spec, batch=1)
    nets = engine.build(spec)
    for net_name, inference in shapes.networks.items():
        inputs = {k: torch.rand(v) for k, v in inference.input_shapes.items()}
        with torch.no_grad():
            out = nets[net_name].eval()(**inputs)
        (port,) = inference.outputs
        assert tuple(out.shape) == inference.outputs[port]
        assert sum(p.numel() for p in nets[net_name].parameters()) == inference.params
    g_in = next(iter(shapes.networks["G"].input_shapes.values()))
    g_out = next(iter(shapes.networks["G"].outputs.values()))
    scale = spec.settings.scale
    assert g_out[-2:] == (g_in[-2] * scale, g_in[-1] * scale)


def test_shipped_sizes_are_the_ones_documented() -> None:
    """docs/restoration.md quotes these parameter counts."""
    counts = {}
    for name in SPECS:
        nets = engine.build(load_spec(ROOT / "specs" / name))
        counts[name] = {n: sum(p.numel() for p in m.parameters()) for n, m in nets.items()}
    for name in RESTORE:
        assert counts[name] == {"G": 150_275}
    assert counts["realesrgan.yaml"] == {"G": 163_280, "D": 1_094_817}


# ---------------------------------------------- validation degradations, fixed
@pytest.mark.parametrize("name", SPECS)
def test_validation_degradations_are_the_same_every_time_and_every_run(name: str) -> None:
    a, b = val_set(name, seed=0), val_set(name, seed=12345)  # two runs, two seeds
    scale = 4 if name == "realesrgan.yaml" else 1
    first = [a[i] for i in range(len(a))]
    for i, item in enumerate(first):
        assert torch.equal(item["lr"], a[i]["lr"])  # the next validation of this run
        assert torch.equal(item["lr"], b[i]["lr"])  # another run with another seed
        assert item["lr"].shape[-1] * scale == item["hr"].shape[-1]
    if scale == 1:
        for item in first:  # the input is degraded, not the target itself
            assert 15 < METRICS["psnr"](item["lr"][None], item["hr"][None]) < 40
    # Each image has its own draws.
    assert not torch.equal(first[0]["lr"][:, :64, :64], first[1]["lr"][:, :64, :64])


def test_training_draws_still_follow_the_run_seed() -> None:
    spec = load_spec(ROOT / "specs" / "restore_denoise.yaml")
    section = spec.data["data"]["train"]
    a = make_dataset(section, scale=1, train=True, seed=0)[0]["lr"]
    b = make_dataset(section, scale=1, train=True, seed=1)[0]["lr"]
    assert not torch.equal(a, b)


# -------------------------------------------------------------- the baselines
def test_the_baseline_is_the_input_at_1x_and_bicubic_above() -> None:
    sr = {"type": "sr", "hr": "builtin:photos"}
    paired = {"type": "paired", "A": "builtin:edges", "B": "builtin:photos"}
    assert baseline_of(1, make_dataset(sr, scale=1, train=False, seed=0)) == "input"
    assert baseline_of(4, make_dataset(sr, scale=4, train=False, seed=0)) == "bicubic"
    assert baseline_of(1, make_dataset(paired, scale=1, train=False, seed=0)) is None
    assert baseline_of(2, object()) == "bicubic"  # a test's own dataset
    assert baseline_of(1, object()) is None

    hr = torch.rand(1, 3, 8, 8)
    assert torch.equal(_baseline(hr * 0.5, hr, "input"), hr * 0.5)  # type: ignore[arg-type]
    assert _baseline(hr[..., :4, :4], hr, "input") is None
    assert _baseline(hr, hr, "bicubic") is None
    assert _baseline(torch.rand(1, 1, 8, 8), hr, "input") is None  # other channels
    frames = torch.rand(1, 3, 3, 4, 4)  # B x T x C x h x w: the centre frame is judged
    up = _baseline(frames, hr, "bicubic")
    assert up is not None and up.shape == hr.shape
    centre = torch.nn.functional.interpolate(frames[:, 1], size=(8, 8), mode="bicubic")
    assert torch.allclose(up, centre.clamp(0, 1))


def test_a_1x_run_logs_the_degraded_input_as_its_baseline(tmp_path: Path) -> None:
    overrides = [
        *TINY_1X,
        "train.iterations=2",
        "validation.every=2",
        "checkpoints.every=2",
        "+data.val.max_size=1",
    ]
    spec = load_spec(ROOT / "specs" / "restore_jpeg.yaml", overrides)
    run(spec, out=tmp_path, stream=io.StringIO(), live=False)
    (val,) = [r for r in records(tmp_path) if "val/psnr" in r]
    assert not any(k.endswith("_bicubic") for k in val)
    assert "best/psnr_input" not in val  # a baseline has no "best"
    # val/psnr_input is the PSNR of the fixed, degraded validation inputs.
    item = val_set("restore_jpeg.yaml", seed=0)[0]
    expected = METRICS["psnr"](item["lr"][None], item["hr"][None], crop=1)
    assert val["val/psnr_input"] == pytest.approx(expected, abs=1e-6)
    assert val["val/psnr"] < val["val/psnr_input"] + 1  # untrained: no better than its input


# --------------------------------------------------------------- Real-ESRGAN
def test_realesrgan_degrades_in_two_stages_and_trains_d_only_in_the_gan_stage(
    tmp_path: Path,
) -> None:
    overrides = [
        *TINY_X4,
        "train.iterations=4",
        "train.phases.0.until=2",
        "train.ema.start=2",
        "validation.every=4",
        "checkpoints.every=4",
        "+data.val.max_size=1",
    ]
    spec = load_spec(ROOT / "specs" / "realesrgan.yaml", overrides)
    steps = spec.data["data"]["train"]["degradations"]
    assert len(steps) == 9 and "one_of" in steps[-1]  # the preset's second-order pipeline
    train = make_dataset(spec.data["data"]["train"], scale=4, train=True, seed=0)
    item = train[0]
    down = torch.nn.functional.avg_pool2d(item["hr"][None], 4)[0]
    assert item["lr"].shape == (3, 8, 8) and (item["lr"] - down).abs().mean() > 1e-3

    result = run(spec, out=tmp_path, stream=io.StringIO(), live=False)
    logged = {r["iter"]: set(r) for r in records(tmp_path) if "loss/pix" in r}
    gan = {"loss/percep", "loss/g_gan", "loss/d_loss"}
    assert not gan & (logged[1] | logged[2])  # Real-ESRNet: L1 only, no D
    assert gan <= logged[3] and gan <= logged[4]
    (val,) = [r for r in records(tmp_path) if "val/psnr" in r]
    assert "val/psnr_bicubic" in val and "val/psnr_input" not in val
    assert set(result.networks) == {"G", "D"}


# ------------------------------------------------------ community weights at 1x
def test_community_compact_1x_weights_load_with_identical_outputs(tmp_path: Path) -> None:
    pytest.importorskip("spandrel", reason="interop tests need the dev extra (spandrel)")
    from spandrel.architectures.Compact import Compact

    reference = Compact(num_feat=32, num_conv=16, upscale=1).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in reference.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    torch.save({"params": reference.state_dict()}, tmp_path / "1x_compact.pth")
    net = engine.build(load_spec(ROOT / "specs" / "restore_denoise.yaml"))["G"].eval()
    assert load_weights(net, tmp_path / "1x_compact.pth").ok
    x = torch.rand(1, 3, 24, 20, generator=gen)
    with torch.no_grad():
        assert (net(x) - reference(x)).abs().max() <= 1e-5
    # ... and what Loom exports is a 1x model for chaiNNer.
    import spandrel

    model = spandrel.ModelLoader().load_from_file(export(net, tmp_path / "G.pth", "compact"))
    assert model.architecture.id == "Compact" and model.scale == 1


def test_rrdbnet_with_pixel_unshuffle_is_a_drop_in_1x_generator(tmp_path: Path) -> None:
    """docs/restoration.md: swap the compact network for ESRGAN's RRDBNet at scale 1."""
    pytest.importorskip("spandrel", reason="interop tests need the dev extra (spandrel)")
    import spandrel

    path = tmp_path / "jpeg_rrdb.yaml"
    path.write_text(
        f"spec: 1\nname: jpeg_rrdb\nextends: {ROOT / 'specs' / 'restore_jpeg.yaml'}\n"
        "imports: [lib/esrgan.yaml]\n"
        "networks:\n"
        "  G: {_replace: true, use: RRDBNet, inputs: {x: 3},"
        " params: {nf: 8, nb: 1, gc: 32, scale: 1}}\n",  # spandrel reads growth 32
        encoding="utf-8",
    )
    spec = load_spec(path, ["data.train.crop_size=16", "data.train.batch_size=2"])
    shapes = check_shapes(spec, batch=1)
    assert shapes.networks["G"].outputs["out"] == (1, 3, 16, 16)
    net = engine.build(spec)["G"].eval()
    model = spandrel.ModelLoader().load_from_file(export(net, tmp_path / "G.pth", "esrgan"))
    assert model.architecture.id == "ESRGAN" and model.scale == 1
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert (net(x) - model.model.eval()(x)).abs().max() <= 1e-5


# ------------------------------------------------------------------ slow tier
def cli_run(name: str, out: Path, *overrides: str) -> list[dict[str, Any]]:
    result = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), "run", str(ROOT / "specs" / name), *overrides,
         "--out", str(out)],
        capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return records(out)


@pytest.mark.slow
@pytest.mark.parametrize("name", RESTORE)
def test_restoration_beats_its_degraded_input(name: str, tmp_path: Path) -> None:
    rows = cli_run(name, tmp_path)
    val = [r for r in rows if "val/psnr" in r]
    last = val[-1]
    print(name, {k: round(v, 4) for k, v in last.items() if k.startswith("val/")})
    assert last["val/psnr"] > last["val/psnr_input"] + 0.5
    assert last["val/ssim"] > last["val/ssim_input"]
    pix = [r["loss/pix"] for r in rows if "loss/pix" in r]
    assert sum(pix[-5:]) < sum(pix[:5])


@pytest.mark.slow
def test_realesrgan_beats_bicubic_of_its_degraded_input(tmp_path: Path) -> None:
    rows = cli_run("realesrgan.yaml", tmp_path, "+graph.percep.weights=random")  # offline
    val = {r["iter"]: r for r in rows if "val/psnr" in r}
    for i, r in val.items():
        print(i, {k: round(v, 4) for k, v in r.items() if k.startswith("val/")})
    esrnet = val[800]  # the end of the Real-ESRNet stage
    assert esrnet["val/psnr"] > esrnet["val/psnr_bicubic"] + 0.3
    assert val[1000]["val/psnr"] > val[1000]["val/psnr_bicubic"]

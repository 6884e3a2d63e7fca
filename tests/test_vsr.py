"""Video super-resolution: the shipped specs, the OFR loss, conv3d and frame windows.

Warping itself (a zero flow is the identity, an integer flow a shift) is tested with
the flow_warp block in test_primitives.py; here the models and the loss built on it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import engine
from blocks.registry import REGISTRY
from engine.compile.inspect import inspect_spec

ROOT = Path(__file__).resolve().parents[1]
# A tiny FlowVSR / Conv3dVSR: 3 frames of 8x8 LR (32x32 HR crops), one RRDB.
TINY = [
    "data.train.crop_size=32",
    "data.train.batch_size=2",
    "networks.G.params.nf=8",
    "networks.G.params.nb=1",
    "networks.G.params.gc=4",
]


def ofr(**kw: object) -> torch.nn.Module:
    return REGISTRY.get("ofr").factory(**kw)


def sofvsr_ofr(frames: torch.Tensor, flows: torch.Tensor, reg: float) -> torch.Tensor:
    """SOF-VSR's loss written out for the test: per neighbour, mean |centre − warp| plus
    reg · (Σ |∂y| + |∂x|) / (N (h − 1)(w − 1)), averaged over the neighbours."""
    n, t, _, h, w = frames.shape
    ys, xs = torch.meshgrid(torch.arange(h.__float__()), torch.arange(w.__float__()), indexing="ij")
    total = torch.zeros(())
    for k, i in enumerate(j for j in range(t) if j != t // 2):
        f = flows[:, k]
        grid = torch.stack(
            ((xs + f[:, 0]) * 2 / (w - 1) - 1, (ys + f[:, 1]) * 2 / (h - 1) - 1), dim=-1
        )
        warped = F.grid_sample(frames[:, i], grid, align_corners=True)
        c = f[..., :-1, :-1]
        reg_sum = ((c - f[..., 1:, :-1]).abs() + (c - f[..., :-1, 1:]).abs()).sum()
        total = (
            total
            + (frames[:, t // 2] - warped).abs().mean()
            + reg * reg_sum / (n * (h - 1) * (w - 1))
        )
    return total / (t - 1)


def test_ofr_loss_is_sofvsr_s_and_zero_for_the_true_flow() -> None:
    torch.manual_seed(0)
    frames = torch.rand(2, 5, 3, 8, 8)
    flows = torch.randn(2, 4, 2, 8, 8)
    got = ofr(reg_weight=0.1)(frames, flows)
    assert got.item() == pytest.approx(sofvsr_ofr(frames, flows, 0.1).item(), rel=1e-5)
    # A static clip needs no flow: zero flow, zero loss.
    still = torch.rand(1, 1, 3, 8, 8).expand(1, 3, 3, 8, 8)
    assert ofr()(still, torch.zeros(1, 2, 2, 8, 8)).item() == pytest.approx(0, abs=1e-6)
    # A pan by one pixel a frame: the true flow (neighbour −1 reads +1, +1 reads −1)
    # warps each neighbour onto the centre exactly, inside the border.
    scene = torch.rand(1, 3, 8, 12)
    clip = torch.stack([scene[..., s : s + 8] for s in (1, 2, 3)], dim=1)  # moves left
    flow = torch.zeros(1, 2, 2, 8, 8)
    flow[:, 0, 0], flow[:, 1, 0] = 1.0, -1.0
    warp = REGISTRY.get("flow_warp").factory()
    close = {"atol": 1e-6, "rtol": 0}
    torch.testing.assert_close(
        warp(clip[:, 0], flow[:, 0])[..., :-1], clip[:, 1, ..., :-1], **close
    )
    torch.testing.assert_close(warp(clip[:, 2], flow[:, 1])[..., 1:], clip[:, 1, ..., 1:], **close)
    exact = ofr(reg_weight=0.0)(clip, flow).item()
    assert exact < 0.2 * ofr(reg_weight=0.0)(clip, torch.zeros_like(flow)).item()
    # A half-size flow pools the frames first (SOF-VSR's LR/2 level).
    half = ofr()(frames, flows[..., ::2, ::2])
    pooled = F.avg_pool2d(frames.flatten(0, 1), 2).unflatten(0, (2, 5))
    assert half.item() == pytest.approx(
        sofvsr_ofr(pooled, flows[..., ::2, ::2], 0.1).item(), rel=1e-5
    )
    with pytest.raises(ValueError, match=r"odd T"):
        ofr()(torch.rand(1, 4, 3, 8, 8), torch.zeros(1, 3, 2, 8, 8))
    with pytest.raises(ValueError, match=r"\(N, T − 1, 2, h, w\)"):
        ofr()(frames, torch.zeros(2, 5, 2, 8, 8))
    with pytest.raises(ValueError, match="whole factor"):
        ofr()(frames, torch.zeros(2, 4, 2, 3, 3))


def test_conv3d_convolves_time_and_fuses_it() -> None:
    conv = REGISTRY.get("conv3d").factory(in_ch=2, out=4, kernel=[3, 1, 1], padding=[0, 0, 0])
    x = torch.rand(1, 2, 3, 5, 5)
    assert conv(x).shape == (1, 4, 1, 5, 5)  # time kernel 3 without padding: 3 frames → 1
    same = REGISTRY.get("conv3d").factory(in_ch=2, out=4)
    assert same(x).shape == (1, 4, 3, 5, 5)  # the default pads every axis ("same")
    assert sum(p.numel() for p in same.parameters()) == 4 * 2 * 27 + 4
    with pytest.raises(ValueError, match=r"b t c h w -> b c t h w"):
        same(torch.rand(1, 2, 5, 5))


@pytest.mark.parametrize("name", ["vsr.yaml", "vsr_3d.yaml"])
def test_vsr_spec_takes_windows_of_frames(name: str) -> None:
    """Both models validate, report 5-D inputs (and the flows' 5-D outputs), and run
    at other sizes than the configured one, predicting the centre frame at x4 (the
    sizes are probed for the 3-D model only; FlowVSR runs at another size below)."""
    spec = engine.load_spec(ROOT / "specs" / name, overrides=TINY)
    (report,) = inspect_spec(spec, probe_sizes=name == "vsr_3d.yaml")
    assert report.inputs == {"x": [2, 3, 3, 8, 8]}
    if name == "vsr_3d.yaml":
        assert report.sizes is not None and report.sizes.multiple == 1
    sr = report.outputs.get("sr", report.outputs.get("out"))
    assert sr == [2, 3, 32, 32]
    if name == "vsr.yaml":
        assert report.outputs["flow_half"] == [2, 2, 2, 4, 4]
        assert report.outputs["flow_lr"] == [2, 2, 2, 8, 8]
        assert report.outputs["flow_hr"] == [2, 2, 2, 32, 32]
    assert report.macs > 0  # conv3d's multiply-accumulates are counted too


def test_flow_vsr_starts_aligned_by_a_zero_flow() -> None:
    """The flow heads start at zero, so the untrained model warps nothing and the OFR
    loss starts at the unaligned warp error; gradients reach the flow network."""
    (g,) = engine.build(ROOT / "specs" / "vsr.yaml", overrides=TINY).values()
    window = torch.rand(1, 3, 3, 12, 12)  # another size than the configured 8x8
    out = g(window)
    assert out["sr"].shape == (1, 3, 48, 48)
    for key in ("flow_half", "flow_lr", "flow_hr"):
        assert out[key].abs().max().item() == 0
    frames_hr = F.interpolate(window.flatten(0, 1), scale_factor=4).unflatten(0, (1, 3))
    loss = ofr()(frames_hr, out["flow_hr"]) + F.l1_loss(out["sr"], frames_hr[:, 1])
    loss.backward()
    assert g.flow.flow_half.weight.grad.abs().sum() > 0


def test_frame_windows_of_flat_scene_files_and_the_hr_window(tmp_path: Path) -> None:
    """traiNNer-redux's flat ``<scene>_<frame>`` files: each scene is a clip ordered by
    frame number (``a_10`` after ``a_9``) and no window mixes scenes; ``hr_frames`` is
    the HR window around ``hr``; an even window is refused at its key."""
    from PIL import Image

    from engine.data import DataError, make_dataset
    from engine.data.options import parse_options

    folder = tmp_path / "flat"
    folder.mkdir()
    value = {}
    for scene, count in (("a", 11), ("b", 3)):
        for t in range(count):
            shade = 10 * t + (120 if scene == "b" else 0)
            value[f"{scene}_{t}"] = shade
            Image.new("RGB", (8, 8), (shade, 0, 0)).save(folder / f"{scene}_{t}.png")
    section = {"type": "frames", "hr": "flat", "frames": 3, "preprocess": "none"}
    ds = make_dataset(section, scale=2, train=False, seed=0, spec_dir=tmp_path)
    assert len(ds) == 9 + 1  # windows of 3 in clips of 11 and 3 frames
    reds = [
        [round(float(w["hr_frames"][t, 0, 0, 0]) * 255) for t in range(3)]
        for w in (ds[i] for i in range(len(ds)))
    ]
    assert reds[8] == [80, 90, 100]  # a_8, a_9, a_10: by frame number, not by name
    assert reds[9] == [120, 130, 140]  # b's only window; none spans a and b
    sample = ds[0]
    assert torch.equal(sample["hr_frames"][1], sample["hr"])
    assert sample["hr_frames"].shape == (3, 3, 8, 8) and sample["lr"].shape == (3, 3, 4, 4)
    with pytest.raises(DataError, match=r"frames must be odd .* use 3 or 5") as caught:
        parse_options({**section, "frames": 4}, train=True, scale=2)
    assert caught.value.key == "frames"


def test_validation_samples_show_the_centre_frame_of_a_window(tmp_path: Path) -> None:
    """A spec validating with ``input: data.lr`` (the whole LR window) saves input |
    output | target with the window's centre frame as the input, at the target's size."""
    from PIL import Image

    from engine.train.runner import run
    from engine.train.validate import save_sample

    tiny = [
        "data.train.crop_size=16",
        "data.train.batch_size=1",
        "train.iterations=1",
        "validation.every=1",
        "checkpoints.every=1",
        "+data.val.max_size=1",
        "validation.input=data.lr",
        "networks.G.params.nf=4",
        "networks.G.params.nb=1",
        "networks.G.params.gc=4",
        "networks.G.params.flow_nf=4",
    ]
    run(ROOT / "specs" / "vsr.yaml", tiny, out=tmp_path / "run", live=False)
    (sample,) = (tmp_path / "run" / "samples").iterdir()
    assert Image.open(sample).size == (3 * 128, 128)  # three panels at the HR frame's size

    window = torch.stack([torch.full((3, 2, 2), v) for v in (0.2, 0.6, 1.0)])  # T, C, h, w
    save_sample(tmp_path / "s.png", [window, torch.zeros(3, 4, 4), torch.zeros(3, 4, 4)])
    pixels = torch.from_numpy(np.asarray(Image.open(tmp_path / "s.png")).copy())
    assert pixels.shape == (4, 12, 3)
    assert (pixels[:, :4] == round(0.6 * 255)).all()  # the centre frame, upscaled


# The slow tier's recipe: small models, long enough to beat the baselines on 2 CPU cores.
SLOW = [
    "train.iterations=150",
    "validation.every=150",
    "checkpoints.every=150",
    "logging.every=25",
    "optimizers.G.lr=1.0e-3",
    "data.train.crop_size=64",
    "data.train.batch_size=4",
    "+data.val.max_size=8",
    "networks.G.params.nf=16",
    "networks.G.params.nb=1",
    "networks.G.params.gc=8",
]


def stack_spec(tmp: Path) -> Path:
    """specs/vsr.yaml with StackVSR, the same trunk on the unaligned window, and L1 only."""
    import yaml

    spec = yaml.safe_load((ROOT / "specs" / "vsr.yaml").read_text(encoding="utf-8"))
    spec["name"] = "vsr_stack_x4"
    params = {k: v for k, v in spec["networks"]["G"]["params"].items() if k != "flow_nf"}
    spec["networks"]["G"] = {"use": "StackVSR", "inputs": {"x": 3}, "params": params}
    spec["graph"] = {k: v for k, v in spec["graph"].items() if not k.startswith("ofr")}
    spec["train"]["phases"][0]["steps"][0]["minimize"] = {"pix": 1.0}
    path = tmp / "vsr_stack.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def final_validation(run_dir: Path) -> dict[str, float]:
    import json

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return next(r for r in reversed(rows) if "val/psnr" in r)


@pytest.mark.slow
def test_flow_aligned_vsr_beats_bicubic_and_the_unaligned_trunk(tmp_path: Path) -> None:
    """On builtin:pans, FlowVSR's centre frame beats bicubic of the LR centre frame, and
    beats StackVSR (the same trunk without alignment) trained alike (docs/video.md)."""
    from engine.train.runner import run

    run(ROOT / "specs" / "vsr.yaml", overrides=SLOW, out=tmp_path / "flow")
    run(stack_spec(tmp_path), overrides=SLOW, out=tmp_path / "stack")
    flow, stack = final_validation(tmp_path / "flow"), final_validation(tmp_path / "stack")
    print(f"flow {flow}\nstack {stack}")
    assert flow["val/psnr"] > flow["val/psnr_bicubic"]
    assert flow["val/psnr"] > stack["val/psnr"]

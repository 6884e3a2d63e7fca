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
from engine.apply.source import Model
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


# --- infer: every frame of a folder with its window --------------------------------------

#: A window network whose outputs are the first and the last frame of its window as
#: they are (a zero-initialized conv gives the optimizer a parameter and adds nothing),
#: so infer's windows can be read back from its results exactly.
PICK = """\
spec: 1
name: window_pick
scale: 1
networks:
  G:
    inputs: {x: 3}
    nodes:
      first_t: {block: index_select, in: x, dim: 1, index: [0]}
      first: {block: rearrange, in: first_t, pattern: "b t c h w -> b (t c) h w"}
      last_t: {block: index_select, in: x, dim: 1, index: [2]}
      last: {block: rearrange, in: last_t, pattern: "b t c h w -> b (t c) h w"}
      nothing: {block: conv, in: first, out: 3, kernel: 1, init: zeros}
      first_out: {block: add, in: [first, nothing]}
    outputs: {first: first_out, last: last}
graph:
  fake: {call: G, in: data.lr}
  pix: {loss: l1, in: [fake.first, data.hr]}
optimizers:
  G: {type: adam, params: G, lr: 1.0e-3}
train:
  iterations: 1
  phases: [{name: main, steps: [{optimizer: G, minimize: {pix: 1.0}}]}]
data:
  train: {type: frames, hr: "builtin:pans", frames: 3, crop_size: 16, batch_size: 1}
"""
#: Four frames whose natural order (f1, f2, f3, f10) is not their name order.
NAMES = ["f1.png", "f2.png", "f3.png", "f10.png"]


def frames_folder(folder: Path, names: list[str], size: tuple[int, int] = (16, 12)) -> list:
    """Frames of random pixels (each unlike the others) named ``names``; their arrays."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = []
    for name in names:
        pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / name)
        arrays.append(pixels)
    return arrays


def export_untrained(
    spec: Path, overrides: list[str], folder: Path, *, seed: int | None
) -> tuple[Model, Path]:
    """The spec's network G (randomized when ``seed`` is given), exported as training
    does: the model and its weights file."""
    from engine.apply.source import open_model
    from engine.train.state import export_networks
    from tests.conftest import randomize

    model = open_model(spec, need_weights=False, overrides=overrides, windows=True)
    if seed is not None:
        randomize(model.module, seed)
    export_networks(folder, {"G": model.module}, 1)
    return model, folder / "G_iter_00000001.safetensors"


def read_png(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path))


def test_infer_writes_every_frame_of_a_folder_at_x4_with_its_name(tmp_path: Path) -> None:
    """A tiny FlowVSR over a folder of 4 frames: one x4 output per frame, same names;
    the first frame's output is the network on its reflected window (f2, f1, f2)."""
    import cli

    spec = ROOT / "specs" / "vsr.yaml"
    model, weights = export_untrained(spec, TINY, tmp_path / "models", seed=0)
    arrays = frames_folder(tmp_path / "in" / "clip", NAMES)
    args = ["infer", str(spec), *TINY, "--weights", str(weights), "--input", str(tmp_path / "in")]
    assert cli.main([*args, "--output", str(tmp_path / "out")]) == 0
    written = sorted(p.name for p in (tmp_path / "out" / "clip").iterdir())
    assert written == sorted(NAMES)
    assert all(read_png(tmp_path / "out" / "clip" / n).shape == (48, 64, 3) for n in NAMES)

    assert (model.frames, model.input, model.port) == (3, "x", "sr")
    window = torch.stack([torch.from_numpy(arrays[i]).permute(2, 0, 1) / 255 for i in (1, 0, 1)])
    with torch.no_grad():
        want = model.module(x=window[None])["sr"][0].clamp(0, 1)
    got = torch.from_numpy(read_png(tmp_path / "out" / "clip" / "f1.png").copy()).permute(2, 0, 1)
    assert (got / 255 - want).abs().max() <= 0.5 / 255 + 1e-5  # the 8-bit rounding only


def test_infer_windows_are_reflected_at_the_ends_in_natural_order(tmp_path: Path) -> None:
    """Windows of 3 over f1, f2, f3, f10: frame −1 is frame 1 and frame 4 is frame 2, so
    the first frames of the windows are (f2, f1, f2, f3) and the last (f2, f3, f10, f3);
    tiles and batches of windows give the same frames."""
    from engine.apply.images import list_inputs
    from engine.apply.infer import InferOptions
    from engine.apply.source import open_model
    from engine.apply.video_sr import super_resolve_sequences

    spec = tmp_path / "pick.yaml"
    spec.write_text(PICK, encoding="utf-8")
    _, weights = export_untrained(spec, [], tmp_path / "models", seed=None)
    arrays = frames_folder(tmp_path / "in", NAMES)
    items = list_inputs(str(tmp_path / "in"))
    runs = {
        "first": ("first", InferOptions(progress=False)),
        "last": ("last", InferOptions(progress=False)),
        "tiled": ("first", InferOptions(tile=8, overlap=0, progress=False)),
        "batched": ("last", InferOptions(batch=3, progress=False)),
    }
    expected = {"first": [1, 0, 1, 2], "last": [1, 2, 3, 2]}
    for label, (port, options) in runs.items():
        model = open_model(spec, weights=weights, port=port, windows=True)
        result = super_resolve_sequences(
            model, items, tmp_path / label, options, log=lambda _: None
        )
        assert not result.failed and len(result.done) == 4, label
        for name, source in zip(NAMES, expected[port], strict=True):
            assert np.array_equal(read_png(tmp_path / label / name), arrays[source]), (label, name)


def test_infer_refuses_short_and_mixed_sequences_and_empty_folders(tmp_path: Path) -> None:
    """A folder of fewer frames than the window, or of frames of two sizes, fails as a
    whole with the reason (the other folders still run); a folder without images, and
    export of a window network, are refused before anything runs."""
    import cli
    from engine.apply.images import list_inputs
    from engine.apply.infer import InferOptions
    from engine.apply.source import ApplyError, open_model
    from engine.apply.video_sr import super_resolve_sequences

    spec = tmp_path / "pick.yaml"
    spec.write_text(PICK, encoding="utf-8")
    _, weights = export_untrained(spec, [], tmp_path / "models", seed=None)
    frames_folder(tmp_path / "in" / "short", ["a.png", "b.png"])
    frames_folder(tmp_path / "in" / "mixed", ["a.png", "b.png"])
    frames_folder(tmp_path / "in" / "mixed", ["c.png"], size=(8, 8))
    frames_folder(tmp_path / "in" / "good", NAMES[:3])
    model = open_model(spec, weights=weights, windows=True)
    items = list_inputs(str(tmp_path / "in"))
    result = super_resolve_sequences(
        model, items, tmp_path / "out", InferOptions(progress=False), log=print
    )
    assert sorted(p.name for p in result.done) == sorted(NAMES[:3])
    why = {(p.parent.name, p.name): w for p, w in result.failed}
    assert len(why) == 5
    assert "2 frames, but the network takes windows of 3" in why["short", "a.png"]
    assert "c.png is 8×8 pixels, but" in why["mixed", "b.png"]
    assert "must have one size" in why["mixed", "a.png"]

    (tmp_path / "empty").mkdir()
    args = ["infer", str(spec), "--weights", str(weights), "--input", str(tmp_path / "empty")]
    assert cli.main([*args, "--output", str(tmp_path / "o")]) == cli.EXIT_INVALID
    with pytest.raises(ApplyError, match="frame windows run in infer only"):
        open_model(spec, weights=weights)


# The slow tier's recipe: small models, long enough to beat the baselines on 2 CPU cores.
SLOW = [
    "train.iterations=600",
    "validation.every=600",
    "checkpoints.every=600",
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

"""RIFE: specs/rife.yaml validates, compiles and trains; the ECCV 2022 IFNet layout
loads with identical outputs; the losses, the interp augmentations and validation's
frame-averaging baseline.

The reference below is written here from the paper and the published code's layout
(hzwer/ECCV2022-RIFE, model/IFNet.py and refine.py): module names, widths and the
order of concatenations are the published ones, so its state_dict has the keys of a
published flownet.pkl. Widths are parameters, so the tests build it tiny.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import engine

ROOT = Path(__file__).resolve().parent.parent
SPEC = str(ROOT / "specs" / "rife.yaml")
TINY_WIDTHS = {"c0": 8, "c1": 6, "c2": 4, "c_tea": 4, "c_ctx": 2}
TINY = [f"networks.flownet.params.{k}={v}" for k, v in TINY_WIDTHS.items()]


# --- a reference IFNet, written from the published description --------------------------


def _cp(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.PReLU(cout))


def _dp(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1), nn.PReLU(cout))


def _warp(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward warp with positions clamped inside the image (align_corners grid)."""
    n, _, h, w = flow.shape
    ys = torch.linspace(-1.0, 1.0, h).view(1, h, 1).expand(n, h, w)
    xs = torch.linspace(-1.0, 1.0, w).view(1, 1, w).expand(n, h, w)
    gx = xs + flow[:, 0] / ((w - 1) / 2)
    gy = ys + flow[:, 1] / ((h - 1) / 2)
    grid = torch.stack((gx, gy), -1).clamp(-1, 1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def _resize(x: torch.Tensor, factor: float) -> torch.Tensor:
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)


class RefIFBlock(nn.Module):
    def __init__(self, cin: int, c: int) -> None:
        super().__init__()
        self.conv0 = nn.Sequential(_cp(cin, c // 2, 2), _cp(c // 2, c, 2))
        self.convblock = nn.Sequential(*(_cp(c, c) for _ in range(8)))
        self.lastconv = nn.ConvTranspose2d(c, 5, 4, 2, 1)

    def forward(
        self, x: torch.Tensor, flow: torch.Tensor | None, scale: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if scale != 1:
            x = _resize(x, 1.0 / scale)
        if flow is not None:
            x = torch.cat((x, _resize(flow, 1.0 / scale) / scale), 1)
        x = self.conv0(x)
        x = self.convblock(x) + x
        out = _resize(self.lastconv(x), scale * 2.0)
        return out[:, :4] * scale * 2, out[:, 4:5]


class RefConv2(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = _cp(cin, cout, 2)
        self.conv2 = _cp(cout, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class RefContext(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.conv2 = RefConv2(3, c), RefConv2(c, 2 * c)
        self.conv3, self.conv4 = RefConv2(2 * c, 4 * c), RefConv2(4 * c, 8 * c)

    def forward(self, x: torch.Tensor, flow: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            x = conv(x)
            flow = _resize(flow, 0.5) * 0.5
            feats.append(_warp(x, flow))
        return feats


class RefUnet(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.down0, self.down1 = RefConv2(17, 2 * c), RefConv2(4 * c, 4 * c)
        self.down2, self.down3 = RefConv2(8 * c, 8 * c), RefConv2(16 * c, 16 * c)
        self.up0, self.up1 = _dp(32 * c, 8 * c), _dp(16 * c, 4 * c)
        self.up2, self.up3 = _dp(8 * c, 2 * c), _dp(4 * c, c)
        self.conv = nn.Conv2d(c, 3, 3, 1, 1)

    def forward(
        self, x: torch.Tensor, c0: list[torch.Tensor], c1: list[torch.Tensor]
    ) -> torch.Tensor:
        s0 = self.down0(x)
        s1 = self.down1(torch.cat((s0, c0[0], c1[0]), 1))
        s2 = self.down2(torch.cat((s1, c0[1], c1[1]), 1))
        s3 = self.down3(torch.cat((s2, c0[2], c1[2]), 1))
        y = self.up0(torch.cat((s3, c0[3], c1[3]), 1))
        y = self.up1(torch.cat((y, s2), 1))
        y = self.up2(torch.cat((y, s1), 1))
        y = self.up3(torch.cat((y, s0), 1))
        return torch.sigmoid(self.conv(y))


class RefIFNet(nn.Module):
    def __init__(self, c0: int, c1: int, c2: int, c_tea: int, c_ctx: int) -> None:
        super().__init__()
        self.block0 = RefIFBlock(6, c0)
        self.block1 = RefIFBlock(17, c1)
        self.block2 = RefIFBlock(17, c2)
        self.block_tea = RefIFBlock(20, c_tea)
        self.contextnet = RefContext(c_ctx)
        self.unet = RefUnet(c_ctx)

    def forward(
        self, img0: torch.Tensor, img1: torch.Tensor, gt: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        flow: torch.Tensor | None = None
        mask = w0 = w1 = img0
        for i, (block, scale) in enumerate(((self.block0, 4), (self.block1, 2), (self.block2, 1))):
            if flow is None:
                flow, mask = block(torch.cat((img0, img1), 1), None, scale)
            else:
                fd, md = block(torch.cat((img0, img1, w0, w1, mask), 1), flow, scale)
                flow, mask = flow + fd, mask + md
            w0, w1 = _warp(img0, flow[:, :2]), _warp(img1, flow[:, 2:4])
            m = torch.sigmoid(mask)
            out[f"flow{i}"], out[f"merged{i}"] = flow, w0 * m + w1 * (1 - m)
        assert flow is not None
        fd, md = self.block_tea(torch.cat((img0, img1, w0, w1, mask, gt), 1), flow, 1)
        flow_tea = flow + fd
        m = torch.sigmoid(mask + md)
        out["flow_tea"] = flow_tea
        out["merged_tea"] = _warp(img0, flow_tea[:, :2]) * m + _warp(img1, flow_tea[:, 2:4]) * (
            1 - m
        )
        c0 = self.contextnet(img0, flow[:, :2])
        c1 = self.contextnet(img1, flow[:, 2:4])
        res = self.unet(torch.cat((img0, img1, w0, w1, mask, flow), 1), c0, c1) * 2 - 1
        out["out"] = torch.clamp(out["merged2"] + res, 0, 1)
        out["mask"] = torch.sigmoid(mask)
        return out


def _lap_reference(x: torch.Tensor, y: torch.Tensor, levels: int) -> torch.Tensor:
    """RIFE's LapLoss, written from its description (binomial 5×5, reflect, 2× steps)."""
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
    kernel = (torch.outer(k, k) / 256).expand(x.shape[1], 1, 5, 5)

    def blur(t: torch.Tensor, kk: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(t, (2, 2, 2, 2), mode="reflect"), kk, groups=t.shape[1])

    def pyramid(t: torch.Tensor) -> list[torch.Tensor]:
        bands = []
        for _ in range(levels):
            down = blur(t, kernel)[..., ::2, ::2]
            up = torch.zeros(*down.shape[:2], down.shape[2] * 2, down.shape[3] * 2)
            up[..., ::2, ::2] = down
            bands.append(t - blur(up, 4 * kernel))
            t = down
        return bands

    return sum(
        (F.l1_loss(a, b) for a, b in zip(pyramid(x), pyramid(y), strict=True)), torch.tensor(0.0)
    )


# --- tests ------------------------------------------------------------------------------


def test_published_layout_loads_with_identical_outputs(tmp_path: Path) -> None:
    """A checkpoint in the ECCV 2022 layout (saved from DataParallel, keys 'module.*')
    loads into Loom's IFNet unchanged, with the reference's parameter count and
    outputs; the teacher can be left out for inference."""
    torch.manual_seed(0)
    ref = RefIFNet(**TINY_WIDTHS).eval()
    ckpt = tmp_path / "flownet.pkl"
    torch.save({f"module.{k}": v for k, v in ref.state_dict().items()}, ckpt)

    net = engine.build(SPEC, overrides=TINY)["flownet"].eval()
    assert sorted(net.state_dict()) == sorted(ref.state_dict())
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in ref.parameters())
    from engine.compile.weights import load_weights

    load_weights(net, ckpt)
    img0, img1, gt = (torch.rand(1, 3, 32, 48) for _ in range(3))
    with torch.no_grad():
        want = ref(img0, img1, gt)
        got = net(img0=img0, img1=img1, gt=gt)
    for key in ("out", "mask", "flow0", "flow1", "flow2", "merged2", "flow_tea", "merged_tea"):
        torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-5, msg=key)

    # infer: the same checkpoint without the teacher, a folder of frames at ×2 the rate.
    from engine.apply.frame_rate import double_frame_rate, open_interpolator
    from engine.apply.images import list_inputs
    from engine.data.imageio import read_image, to_tensor

    frames = _pan_clip(tmp_path / "in", (3, 1), size=30, frames=3)  # 30×30: padded to 32
    model = open_interpolator(SPEC, weights=ckpt, overrides=TINY)
    assert model is not None and (model.earlier, model.later, model.middle) == (
        "img0",
        "img1",
        "gt",
    )
    assert not any(k.startswith("block_tea.") for k in model.module.state_dict())
    model.multiple = 16  # what inspect reports; probing every size would cost seconds here
    result = double_frame_rate(model, list_inputs(str(frames)), tmp_path / "out")
    written = sorted((tmp_path / "out" / "pan").iterdir())
    assert (
        [p.name for p in written]
        == [f"{i:08d}.png" for i in range(5)]
        == [p.name for p in result.done]
    )
    read = [to_tensor(read_image(p, 3)) for p in written]
    originals = [to_tensor(read_image(p, 3)) for p in sorted((frames / "pan").iterdir())]
    assert all(read[2 * i].equal(originals[i]) for i in range(3))  # originals kept
    pad = [F.pad(f[None], (0, 2, 0, 2), mode="replicate") for f in originals[:2]]
    with torch.no_grad():
        mid = ref(pad[0], pad[1], (pad[0] + pad[1]) / 2)["out"][0, :, :30, :30]
    assert (read[1] - mid).abs().max() <= 0.5 / 255 + 1e-6  # the 8-bit rounding only


def test_published_widths_count() -> None:
    """At the published widths Loom's IFNet has the reference's parameters: 10,708,215
    with the teacher block, 10,071,550 without."""
    published = {"c0": 240, "c1": 150, "c2": 90, "c_tea": 90, "c_ctx": 16}
    ref = RefIFNet(**published)
    count = sum(p.numel() for p in ref.parameters())
    student = sum(p.numel() for k, p in ref.named_parameters() if not k.startswith("block_tea."))
    assert (count, student) == (10_708_215, 10_071_550)
    net = engine.build(SPEC, ["data.train.crop_size=48"], device="meta")["flownet"]
    assert sum(p.numel() for p in net.parameters()) == count
    assert sorted(net.state_dict()) == sorted(ref.state_dict())


def test_losses_match_rife() -> None:
    """laplacian_l1 equals RIFE's LapLoss; distill_flow is the masked RMS flow gap,
    zero where the teacher is not better and with no gradient to the teacher."""
    from blocks.builtin.losses_rife import DistillFlowLoss, LaplacianL1Loss

    torch.manual_seed(1)
    x, y = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    torch.testing.assert_close(LaplacianL1Loss(levels=5)(x, y), _lap_reference(x, y, 5))
    assert LaplacianL1Loss(levels=5)(x, x).item() == 0.0
    with pytest.raises(ValueError, match="at least 48"):
        LaplacianL1Loss(levels=5)(x[..., :40], y[..., :40])
    odd = torch.rand(1, 3, 51, 49)  # odd sizes: each expansion is cropped back
    assert math.isfinite(LaplacianL1Loss(levels=4)(odd, odd.flip(-1)).item())

    gt = torch.rand(1, 3, 8, 8)
    flow = torch.zeros(1, 4, 8, 8, requires_grad=True)
    flow_t = torch.full((1, 4, 8, 8), 2.0, requires_grad=True)
    loss = DistillFlowLoss()
    worse = (gt + 0.5).clamp(0, 1)
    assert loss(flow, worse, flow_t, gt, gt).item() == pytest.approx(2.0)  # teacher exact
    assert loss(flow, gt, flow_t, worse, gt).item() == 0.0  # student better: no pull
    loss(flow, worse, flow_t, gt, gt).backward()
    assert flow.grad is not None and flow_t.grad is None
    same = torch.zeros(1, 4, 8, 8, requires_grad=True)
    loss(same, worse, torch.zeros(1, 4, 8, 8), gt, gt).backward()
    assert same.grad is not None and torch.isfinite(same.grad).all()


def _pan_clip(tmp: Path, shift: tuple[int, int], size: int = 24, frames: int = 3) -> Path:
    """A symmetric clip: frame t is one noise image seen through a window moved by
    t × shift pixels, so the middle frame is exactly f0 and f1 moved halfway."""
    from PIL import Image

    dx, dy = shift
    pad = size
    rng = np.random.default_rng(3)
    scene = rng.integers(0, 256, (size + 2 * pad, size + 2 * pad, 3), dtype=np.uint8)
    folder = tmp / "clips" / "pan"
    folder.mkdir(parents=True)
    for t in range(frames):
        y, x = pad + t * dy, pad + t * dx
        Image.fromarray(scene[y : y + size, x : x + size]).save(folder / f"{t:03d}.png")
    return tmp / "clips"


def _best_shift(frame: torch.Tensor, mid: torch.Tensor, reach: int = 3) -> tuple[int, int]:
    """The whole-pixel flow (x, y) whose backward warp of frame best gives mid."""
    from blocks.builtin.warp import FlowWarp

    warp = FlowWarp(padding_mode="border")
    inner = (slice(None), slice(reach, -reach), slice(reach, -reach))
    errors = {}
    for fx in range(-reach, reach + 1):
        for fy in range(-reach, reach + 1):
            flow = (
                torch.tensor([float(fx), float(fy)]).view(1, 2, 1, 1).expand(1, 2, *mid.shape[-2:])
            )
            warped = warp(frame[None], flow)[0]
            errors[(fx, fy)] = float((warped - mid)[inner].abs().mean())
    return min(errors, key=errors.__getitem__)


def test_laplacian_losses_of_one_step_share_the_targets_pyramid_with_the_same_result() -> None:
    """Inside a training step (a step memo) two laplacian_l1 losses against one target,
    as specs/rife.yaml's lap and lap_tea, give the values and gradients they give
    alone; a target changed in place in between is not served its old pyramid."""
    from blocks.builtin.losses_rife import LaplacianL1Loss
    from blocks.memo import step_memo

    torch.manual_seed(2)
    target = torch.rand(2, 3, 48, 48)
    student, teacher = (torch.rand(2, 3, 48, 48, requires_grad=True) for _ in range(2))
    lap, lap_tea = LaplacianL1Loss(levels=4), LaplacianL1Loss(levels=4)
    alone = torch.stack([lap(student, target), lap_tea(teacher, target)])
    expected = torch.autograd.grad(alone.sum(), [student, teacher])
    with torch.no_grad():
        fresh = LaplacianL1Loss(levels=4)(student, target * 0.5).item()
    with step_memo():
        shared = torch.stack([lap(student, target), lap_tea(teacher, target)])
        assert torch.equal(shared, alone)
        grads = torch.autograd.grad(shared.sum(), [student, teacher])
        assert all(torch.equal(a, b) for a, b in zip(grads, expected, strict=True))
        target.mul_(0.5)
        assert lap(student, target).item() == fresh


def test_temporal_swap_mirrors_the_flows_and_augmentations_are_alike(tmp_path: Path) -> None:
    """On a symmetric clip the flow from the middle frame to f0 is minus the flow to
    f1; a temporally swapped sample (reverse) exchanges them, and so mirrors both.
    Channel reversal, flips and rotations act alike on the three frames."""
    from engine.data import make_dataset

    _pan_clip(tmp_path, (2, -1))
    section = {"type": "interp", "folder": "clips", "reverse": True, "flip": False}
    plain = make_dataset(section, scale=1, train=False, seed=0, spec_dir=tmp_path)[0]
    to_f0, to_f1 = _best_shift(plain["f0"], plain["mid"]), _best_shift(plain["f1"], plain["mid"])
    assert to_f0 == (2, -1) and to_f1 == (-2, 1)  # mirrored: F_t→0 = −F_t→1

    train = make_dataset(section, scale=1, train=True, seed=0, spec_dir=tmp_path)
    swapped = next(s for s in (train[(e, 0)] for e in range(20)) if not s["f0"].equal(plain["f0"]))
    assert swapped["f0"].equal(plain["f1"]) and swapped["f1"].equal(plain["f0"])
    assert swapped["mid"].equal(plain["mid"])  # t = 0.5 ↔ 1 − t = 0.5: the same target
    assert _best_shift(swapped["f0"], swapped["mid"]) == to_f1
    assert _best_shift(swapped["f1"], swapped["mid"]) == to_f0

    augmented = {**section, "reverse": False, "channel_reverse": True, "flip": True, "rotate": True}
    aug = make_dataset(augmented, scale=1, train=True, seed=0, spec_dir=tmp_path)
    samples = [aug[(e, 0)] for e in range(24)]
    bgr = [s for s in samples if _same_geometry(s, plain, channels=[2, 1, 0])]
    rgb = [s for s in samples if _same_geometry(s, plain, channels=[0, 1, 2])]
    assert bgr and rgb and len(bgr) + len(rgb) == len(samples)
    with pytest.raises(Exception, match="only type interp reverses channels"):
        make_dataset(
            {"type": "single", "folder": "clips", "channel_reverse": True},
            scale=1,
            train=True,
            seed=0,
            spec_dir=tmp_path,
        )


def _same_geometry(
    s: dict[str, torch.Tensor], plain: dict[str, torch.Tensor], channels: list[int]
) -> bool:
    """Whether one orientation of the plain triplet, with these channels, gives s."""
    for k in range(4):
        for flip in (False, True):

            def move(t: torch.Tensor, k: int = k, flip: bool = flip) -> torch.Tensor:
                t = t[channels].rot90(k, (-2, -1))
                return t.flip(-1) if flip else t

            if all(move(plain[n]).equal(s[n]) for n in ("f0", "mid", "f1")):
                return True
    return False


def test_validation_reports_the_frame_average_baseline() -> None:
    """interp data is judged against (f0 + f1) / 2: val/psnr_average beside val/psnr."""
    from types import SimpleNamespace

    from engine.metrics import METRICS
    from engine.train.validate import evaluate
    from engine.train.validator import BASELINE_KEYS, baseline_of

    assert baseline_of(1, SimpleNamespace(opts=SimpleNamespace(kind="interp"))) == "average"
    assert "_average" in BASELINE_KEYS
    torch.manual_seed(0)
    batch = {k: torch.rand(1, 3, 16, 16) for k in ("f0", "f1", "mid")}
    pred = batch["mid"] * 0.9

    def run_graph(
        b: dict[str, torch.Tensor], nodes: list[str]
    ) -> dict[str, dict[str, torch.Tensor]]:
        return {"net": {"out": pred}}

    values = evaluate(
        run_graph,
        [batch],
        output="net.out",
        target="data.mid",
        source="data.f0",
        metrics=["psnr", "ssim"],
        crop=0,
        y_channel=False,
        samples=0,
        sample_dir=None,
        iteration=1,
        baseline="average",
    )
    average = (batch["f0"] + batch["f1"]) / 2
    want = METRICS["psnr"](average, batch["mid"], crop=0, y_channel=False)
    assert values["psnr_average"] == pytest.approx(want)
    assert set(values) == {"psnr", "ssim", "psnr_average", "ssim_average"}


SLOW = [
    "data.train.crop_size=64",
    "data.train.batch_size=4",
    "+data.val.max_size=8",
    "+data.val.crop_size=64",
    "train.iterations=800",
    "optimizers.flownet.lr=1.0e-3",
    "optimizers.flownet.scheduler.warmup=20",
    "validation.every=400",
    "checkpoints.every=800",
    "logging.every=20",
    *(
        f"networks.flownet.params.{k}={v}"
        for k, v in {"c0": 32, "c1": 24, "c2": 16, "c_tea": 16, "c_ctx": 4}.items()
    ),
]


@pytest.mark.slow
def test_rife_beats_frame_averaging_on_builtin_pans(tmp_path: Path) -> None:
    """A short run of specs/rife.yaml (narrower IFNet, 800 iterations) on the camera
    pans: the middle frame beats averaging the two input frames, by 0.3 dB of PSNR and
    in SSIM (docs/video.md has the figures)."""
    import json
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), "run", SPEC, *SLOW, "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in records if "val/psnr" in r][-1]
    assert last["val/psnr"] > last["val/psnr_average"] + 0.3, last
    assert last["val/ssim"] > last["val/ssim_average"], last

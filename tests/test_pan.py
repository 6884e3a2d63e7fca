"""PAN (specs/pan.yaml, specs/lib/pan.yaml): the published network, both community
weight layouts, and training.

PAN is not in spandrel, so the references are written here from the paper's
description, one per community layout: ``OriginalPAN`` with the original repository's
module names, ``TrainnerPAN`` with traiNNer's, whose upsampling stages are built and
flattened into one ``nn.Sequential`` the way traiNNer builds them (so its quirk, one
activation per stage kept after flattening, comes from the same mechanism, not from a
rule written twice). Checkpoints are these modules' own state dicts; nothing is
downloaded.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import engine
from engine import load_spec
from engine.compile.inspect import inspect_spec
from engine.compile.weights import WeightsError, export, load_weights

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "specs" / "pan.yaml"
TOL = 1e-5
NF, UNF, NB = 8, 6, 2  # tiny, but with several SC-PA blocks and a real reduction


# ----------------------------------------------------------------- references
class PixelAttention(nn.Module):
    """x · sigmoid(1x1 conv of x)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.conv(x))


class GatedConv(nn.Module):
    """PAN's PAConv: k4(k3(x) · sigmoid(k2(x))), k3 and k4 without bias."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.k2 = nn.Conv2d(ch, ch, 1)
        self.k3 = nn.Conv2d(ch, ch, 3, padding=1, bias=False)
        self.k4 = nn.Conv2d(ch, ch, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.k4(self.k3(x) * torch.sigmoid(self.k2(x)))


class SelfCalibratedBlock(nn.Module):
    """SC-PA: two half-width branches (3x3 conv | PAConv), joined by a 1x1 conv, + x.

    ``gated`` is the name the layout gives the PAConv branch (PAConv or PACnv).
    """

    def __init__(self, nf: int, gated: str) -> None:
        super().__init__()
        half = nf // 2
        self.conv1_a = nn.Conv2d(nf, half, 1, bias=False)
        self.conv1_b = nn.Conv2d(nf, half, 1, bias=False)
        self.k1 = nn.Sequential(nn.Conv2d(half, half, 3, padding=1, bias=False))
        self.gated = gated
        self.add_module(gated, GatedConv(half))
        self.conv3 = nn.Conv2d(2 * half, nf, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.leaky_relu(self.k1(F.leaky_relu(self.conv1_a(x), 0.2)), 0.2)
        b = F.leaky_relu(getattr(self, self.gated)(F.leaky_relu(self.conv1_b(x), 0.2)), 0.2)
        return x + self.conv3(torch.cat([a, b], 1))


def stage_factors(scale: int) -> list[int]:
    return {1: [], 2: [2], 3: [3], 4: [2, 2], 8: [2, 2, 2]}[scale]


class OriginalPAN(nn.Module):
    """The PAN repository's network and names (x2, x3, x4)."""

    def __init__(self, scale: int, nf: int = NF, unf: int = UNF, nb: int = NB) -> None:
        super().__init__()
        self.scale = scale
        self.conv_first = nn.Conv2d(3, nf, 3, padding=1)
        self.SCPA_trunk = nn.Sequential(*(SelfCalibratedBlock(nf, "PAConv") for _ in range(nb)))
        self.trunk_conv = nn.Conv2d(nf, nf, 3, padding=1)
        for k, _ in enumerate(stage_factors(scale), 1):
            self.add_module(f"upconv{k}", nn.Conv2d(nf if k == 1 else unf, unf, 3, padding=1))
            self.add_module(f"att{k}", PixelAttention(unf))
            self.add_module(f"HRconv{k}", nn.Conv2d(unf, unf, 3, padding=1))
        self.conv_last = nn.Conv2d(unf, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fea = self.conv_first(x)
        fea = fea + self.trunk_conv(self.SCPA_trunk(fea))
        for k, factor in enumerate(stage_factors(self.scale), 1):
            fea = getattr(self, f"upconv{k}")(F.interpolate(fea, scale_factor=factor))
            fea = F.leaky_relu(getattr(self, f"att{k}")(fea), 0.2)
            fea = F.leaky_relu(getattr(self, f"HRconv{k}")(fea), 0.2)
        up = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return self.conv_last(fea) + up


class Resize(nn.Module):
    def __init__(self, factor: int) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=self.factor, mode="nearest")


class TrainnerPAN(nn.Module):
    """traiNNer's pan_net (no self-attention, no second trunk) and its names.

    Each stage is ``Sequential(resize, upconv, att, act, HRconv, act)`` with one
    activation module used twice; several stages are flattened through ``children()``,
    which lists that module once. Scale 1 has no stage and adds the input itself.
    """

    def __init__(self, scale: int, nf: int = NF, unf: int = UNF, nb: int = NB) -> None:
        super().__init__()
        self.scale = scale
        unf = nf if scale == 1 else unf
        self.conv_first = nn.Conv2d(3, nf, 3, padding=1)
        self.SCPA_trunk = nn.Sequential(*(SelfCalibratedBlock(nf, "PACnv") for _ in range(nb)))
        self.trunk_conv = nn.Conv2d(nf, nf, 3, padding=1)
        stages = []
        for k, factor in enumerate(stage_factors(scale)):
            act = nn.LeakyReLU(0.2)
            upconv = nn.Conv2d(nf if k == 0 else unf, unf, 3, padding=1)
            hr = nn.Conv2d(unf, unf, 3, padding=1)
            stages.append(nn.Sequential(Resize(factor), upconv, PixelAttention(unf), act, hr, act))
        if len(stages) == 1:
            self.upsample = stages[0]
        else:
            self.upsample = nn.Sequential(*(m for s in stages for m in s.children()))
        self.conv_last = nn.Conv2d(unf, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fea = self.conv_first(x)
        fea = self.upsample(fea + self.trunk_conv(self.SCPA_trunk(fea)))
        if self.scale > 1:
            x = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=True)
        return self.conv_last(fea) + x


# -------------------------------------------------------------------- helpers
def pan(tmp_path: Path, **params: Any) -> nn.Module:
    """Loom's PAN from the shipped library, random weights, eval mode."""
    spec = tmp_path / "pan_case.yaml"
    params = {"nf": NF, "unf": UNF, "nb": NB, **params}
    spec.write_text(
        "spec: 1\nname: pan_case\nimports: [lib/pan.yaml]\nnetworks:\n"
        f"  G: {{use: PAN, params: {json.dumps(params)}, trainable: false}}\n",
        encoding="utf-8",
    )
    net = engine.build(spec)["G"].eval()
    randomize(net, seed=7)
    return net


def randomize(net: nn.Module, seed: int = 0) -> nn.Module:
    """Every parameter random, so that no key goes unchecked."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    return net.eval()


def max_diff(a: nn.Module, b: nn.Module, size: int = 12) -> float:
    # Values around zero, so that a missing LeakyReLU would show.
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ya, yb = a(x), b(x)
    assert ya.shape == yb.shape
    return float((ya - yb).abs().max())


# ------------------------------------------------------------ the architecture
def test_pan_x4_has_the_published_parameter_count() -> None:
    (report,) = inspect_spec(load_spec(SPEC), probe_sizes=False)
    assert report.params == 272_419
    net = engine.build(SPEC)["G"]
    assert sum(p.numel() for p in net.parameters()) == 272_419


def test_inspect_agrees_with_a_forward_pass() -> None:
    overrides = ["data.train.crop_size=64", "data.train.batch_size=2"]
    spec = load_spec(SPEC, overrides)
    (report,) = inspect_spec(spec, probe_sizes=False)
    assert report.inputs == {"x": [2, 3, 16, 16]}
    net = engine.build(spec)["G"]
    with torch.no_grad():
        out = net(torch.rand(2, 3, 16, 16))
    assert report.outputs == {"out": list(out.shape)} == {"out": [2, 3, 64, 64]}
    rows = {r.name: r for r in report.rows}
    assert rows["conv_first"].params == 3 * 40 * 9 + 40
    assert rows["HRconv2"].shape == [2, 24, 64, 64]


@pytest.mark.parametrize("scale", [1, 2, 3, 4, 8])
def test_every_scale_upsamples_and_keeps_the_stage_names(tmp_path: Path, scale: int) -> None:
    net = pan(tmp_path, scale=scale)
    keys = set(net.state_dict())
    stages = len(stage_factors(scale))
    for k in range(1, 4):
        assert (f"upconv{k}.weight" in keys) == (k <= stages)
        assert (f"att{k}.conv.weight" in keys) == (k <= stages)
    with torch.no_grad():
        assert net(torch.rand(1, 3, 5, 7)).shape == (1, 3, 5 * scale, 7 * scale)


# -------------------------------------------------------- community layouts in
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_original_repository_weights_load_with_identical_outputs(
    tmp_path: Path, scale: int
) -> None:
    reference = randomize(OriginalPAN(scale), seed=scale)
    torch.save(reference.state_dict(), tmp_path / f"PANx{scale}.pth")
    net = pan(tmp_path, scale=scale)
    report = load_weights(net, tmp_path / f"PANx{scale}.pth")
    assert report.ok and report.layout == "loom"  # Loom's names are the original's
    assert len(report.loaded) == len(reference.state_dict())
    assert max_diff(net, reference) <= TOL


@pytest.mark.parametrize("scale", [1, 2, 3, 4, 8])
def test_trainner_weights_load_with_identical_outputs(tmp_path: Path, scale: int) -> None:
    reference = randomize(TrainnerPAN(scale), seed=10 + scale)
    state = reference.state_dict()
    assert any(".PACnv.k2." in k for k in state)
    net = pan(tmp_path, scale=scale, variant="trainner")
    report = load_weights(net, {"params": state} if scale == 4 else state)
    assert report.ok and report.layout == "pan_trainner"
    assert len(report.loaded) == len(state)
    assert max_diff(net, reference) <= TOL


def test_trainner_keys_are_the_known_ones_at_x4() -> None:
    keys = {k.rpartition(".")[0] for k in TrainnerPAN(4).state_dict()}
    upsample = sorted(k for k in keys if k.startswith("upsample."))
    assert upsample == [f"upsample.{i}" for i in ("1", "2.conv", "4", "6", "7.conv", "9")]


@pytest.mark.parametrize("scale", [2, 4])
def test_a_trainner_file_in_an_original_network_computes_otherwise(
    tmp_path: Path, scale: int
) -> None:
    """Why ``variant`` exists: the names fit, the computation does not."""
    reference = randomize(TrainnerPAN(scale), seed=3)
    net = pan(tmp_path, scale=scale)  # variant original
    assert load_weights(net, reference.state_dict()).ok
    assert max_diff(net, reference) > 1e-3


# ------------------------------------------------------- Loom's weights out
@pytest.mark.parametrize(
    ("layout", "suffix", "scale"),
    [
        ("pan", ".pth", 4),
        ("pan", ".safetensors", 3),
        ("pan_trainner", ".pth", 4),
        ("pan_trainner", ".safetensors", 2),
        ("pan_trainner", ".pth", 8),
    ],
)
def test_exports_load_in_the_tools_layout(
    tmp_path: Path, layout: str, suffix: str, scale: int
) -> None:
    variant = "trainner" if layout == "pan_trainner" else "original"
    net = pan(tmp_path, scale=scale, variant=variant)
    path = export(net, tmp_path / f"G{suffix}", layout)  # type: ignore[arg-type]
    if suffix == ".pth":
        state = torch.load(path, weights_only=True)
        assert type(state) is dict
    else:
        from safetensors.torch import load_file

        state = load_file(path)
    reference = (TrainnerPAN if variant == "trainner" else OriginalPAN)(scale)
    reference.load_state_dict(state)  # strict: every key and shape of the tool's own
    assert max_diff(net.eval(), reference.eval()) <= TOL
    again = pan(tmp_path, scale=scale, variant=variant)
    assert load_weights(again, path).ok
    assert max_diff(again, net) == 0


def test_export_refuses_a_pan_layout_for_another_network(tmp_path: Path) -> None:
    spec = tmp_path / "other.yaml"
    spec.write_text(
        "spec: 1\nname: other\nnetworks:\n  G:\n    inputs: {x: 3}\n"
        "    nodes: {conv_first: {block: conv, in: x, out: 3}}\n",
        encoding="utf-8",
    )
    net = engine.build(spec)["G"]
    with pytest.raises(WeightsError, match=r"layout 'pan_trainner' is for a PAN.*'loom'"):
        export(net, tmp_path / "G.pth", "pan_trainner")


def test_a_trainner_file_with_weights_at_a_parameter_free_index_is_refused(
    tmp_path: Path,
) -> None:
    state = TrainnerPAN(2).state_dict()
    state["upsample.3.weight"] = torch.zeros(1)
    net = pan(tmp_path, scale=2, variant="trainner")
    with pytest.raises(WeightsError, match=r"'upsample\.3'.*parameter-free"):
        load_weights(net, state, strict=False)


def test_a_file_of_another_size_is_reported_key_by_key(tmp_path: Path) -> None:
    reference = TrainnerPAN(4, nf=NF, unf=UNF, nb=NB + 1)  # one SC-PA block more
    net = pan(tmp_path, scale=4, variant="trainner")
    # Reported in Loom's names, as every load report is.
    with pytest.raises(WeightsError, match=r"(?s)8 unexpected.*SCPA_trunk\.2\.PAConv\.k2\.weight"):
        load_weights(net, reference.state_dict())
    assert load_weights(net, reference.state_dict(), strict=False).layout == "pan_trainner"


# ---------------------------------------------------------------- training
TINY = [
    "data.train.crop_size=32",
    "data.train.batch_size=2",
    "networks.G.params.nf=8",
    "networks.G.params.unf=4",
    "networks.G.params.nb=1",
    "train.iterations=3",
    "validation.every=3",
    "checkpoints.every=3",
    "logging.every=1",
]


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_the_shipped_spec_trains_a_few_iterations_and_exports(tmp_path: Path) -> None:
    from engine.train.runner import run

    result = run(SPEC, TINY, out=tmp_path / "run", stream=io.StringIO())
    records = read_metrics(result.run_dir)
    assert [r["iter"] for r in records if "loss/pix" in r] == [1, 2, 3]
    val = [r for r in records if "val/psnr" in r][-1]
    assert math.isfinite(val["val/psnr"]) and val["val/psnr_bicubic"] > 20
    exported = result.run_dir / "models" / "G_iter_00000003.pth"
    net = engine.build(SPEC, TINY)["G"]
    assert load_weights(net, exported).ok


@pytest.mark.slow
def test_pan_learns_to_beat_bicubic(tmp_path: Path) -> None:
    """The shipped x4 network, PAN's optimizer, shortened to a few CPU minutes.

    The schedule is one cosine cycle over the shortened run (the shipped spec's four
    restarts would each last a few hundred iterations).
    """
    from engine.train.runner import run

    overrides = [
        "data.train.crop_size=64",
        "data.train.batch_size=8",
        "train.iterations=600",
        "optimizers.G.scheduler.periods=[1.0]",
        "optimizers.G.scheduler.restart_weights=[1]",
        "validation.every=200",
        "checkpoints.every=600",
        "logging.every=25",
    ]
    result = run(SPEC, overrides, out=tmp_path / "run", stream=io.StringIO())
    records = read_metrics(result.run_dir)
    val = [r for r in records if "val/psnr" in r]
    for r in val:  # shown with -s; docs/pan.md records these
        print(
            f"iter {r['iter']}: PSNR {r['val/psnr']:.2f} dB (bicubic {r['val/psnr_bicubic']:.2f}),"
            f" SSIM {r['val/ssim']:.4f} (bicubic {r['val/ssim_bicubic']:.4f})"
        )
    assert val[-1]["val/psnr"] > val[-1]["val/psnr_bicubic"] + 0.2
    losses = [r["loss/pix"] for r in records if "loss/pix" in r]
    n = len(losses) // 5
    assert sum(losses[-n:]) < sum(losses[:n])

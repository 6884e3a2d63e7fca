"""The YAML block library (specs/lib/*.yaml): every block is compiled from a tiny spec,
run forward and backward on CPU, and checked for output shapes and finite gradients;
then the architectures are checked against hand-written references and weight layouts.

Blocks are discovered by reading the library files, so a new block is covered as soon
as it gets an entry in ``TINY`` (a test fails until it does).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from ruamel.yaml import YAML
from torch import fx, nn

import engine
from blocks.builtin.vgg import VGG19_LAYERS

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "specs" / "lib"
BATCH = 2
#: VGG19's five stages: (number of convs, channels as a multiple of the first stage's).
VGG19_STAGES = ((2, 1), (2, 2), (4, 4), (4, 8), (4, 8))

Shape = tuple[int, ...]


def library_blocks() -> list[str]:
    """``file.yaml#Block`` for every block defined in specs/lib, read from the YAML."""
    found = []
    for path in sorted(LIB.glob("*.yaml")):
        data = YAML(typ="safe").load(path.read_text(encoding="utf-8")) or {}
        found += [f"{path.name}#{name}" for name in data.get("blocks") or {}]
    return found


def build_block(
    tmp_path: Path,
    key: str,
    params: dict[str, Any],
    *,
    size: int,
    channels: int = 3,
    inputs: tuple[str, ...] = ("x",),
    sizes: dict[str, int] | None = None,
    widths: dict[str, int] | None = None,
) -> fx.GraphModule:
    """Compile ``file.yaml#Block`` as network N of a minimal spec that feeds it size² crops.

    The graph call on a ``single`` dataset gives shape inference the crop size (a VGG
    discriminator's linear layer depends on it). Without ``train:`` no optimizer is needed.
    """
    file, _, block = key.partition("#")
    sizes, widths = sizes or {}, widths or {}
    ops: dict[str, Any] = {}
    feeds = dict.fromkeys(inputs, "data.x")
    for k, n in widths.items():
        index = [i % channels for i in range(n)]
        ops[f"picked_{k}"] = {"op": "index_select", "in": feeds[k], "index": index}
        feeds[k] = f"picked_{k}"
    for k, n in sizes.items():
        ops[f"resized_{k}"] = {
            "op": "upsample",
            "in": feeds[k],
            "scale": n / size,
            "mode": "bilinear",
        }
        feeds[k] = f"resized_{k}"
    spec = {
        "spec": 1,
        "name": "library_case",
        "imports": [str(LIB / file)],
        "networks": {
            "N": {
                "use": block,
                "params": params,
                "inputs": {k: widths.get(k, channels) for k in inputs},
            }
        },
        "graph": {**ops, "probe": {"call": "N", "in": feeds}},
        "data": {
            "train": {
                "type": "single",
                "folder": "builtin:photos",
                "crop_size": size,
                "channels": channels,
            }
        },
    }
    path = tmp_path / f"{block}.yaml"
    path.write_text(json.dumps(spec, indent=2), encoding="utf-8")  # JSON is YAML
    return engine.build(path)["N"]


def outputs_of(result: torch.Tensor | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A compiled network's outputs by port (a single output is the port 'out')."""
    return result if isinstance(result, dict) else {"out": result}


def vgg_ports(nf: int, size: int, *, bn: bool) -> dict[str, Shape]:
    """Output ports of the VGG19 extractors and their shapes (without batch)."""
    ports: dict[str, Shape] = {}
    for stage, (convs, mult) in enumerate(VGG19_STAGES, 1):
        side = size >> (stage - 1)
        for c in range(1, convs + 1):
            kinds = ("conv", "bn", "relu") if bn else ("conv", "relu")
            ports |= {f"{kind}{stage}_{c}": (nf * mult, side, side) for kind in kinds}
        ports[f"pool{stage}"] = (nf * mult, side // 2, side // 2)
    return ports


@dataclass
class Case:
    """Tiny parameters of one block, the input it gets and its output shapes (no batch)."""

    params: dict[str, Any]
    size: int
    ports: dict[str, Shape]
    channels: int = 3
    inputs: tuple[str, ...] = ("x",)  # every one is given the same image
    #: Inputs given the image resized to another size (a U-Net's features per level).
    sizes: dict[str, int] | None = None
    #: Inputs given other channels: the image's channels picked round-robin (a flow).
    widths: dict[str, int] | None = None
    #: A block of operations only (RIFE's warping and blending): nothing to train.
    stateless: bool = False


TINY: dict[str, Case] = {
    # Residual blocks keep the channel count: their input has nf channels.
    "esrgan.yaml#RDB": Case({"nf": 4, "gc": 2}, 8, {"out": (4, 8, 8)}, channels=4),
    "esrgan.yaml#RRDB": Case({"nf": 4, "gc": 2}, 8, {"out": (4, 8, 8)}, channels=4),
    "srflow.yaml#SRFlowRRDB": Case({"nf": 4, "gc": 2}, 8, {"out": (4, 8, 8)}, channels=4),
    "srflow.yaml#SRFlowEncoder": Case(
        {"nf": 4, "gc": 2, "nb": 23},
        8,
        {"level1": (20, 16, 16), "level2": (20, 8, 8), "level3": (20, 4, 4)},
    ),
    "srflow.yaml#SRFlowEncoderX8": Case(
        {"nf": 4, "gc": 2, "nb": 8},
        8,
        {
            "level1": (20, 32, 32),
            "level2": (20, 16, 16),
            "level3": (20, 8, 8),
            "level4": (20, 4, 4),
        },
    ),
    "esrgan.yaml#RRDBNet": Case({"nf": 8, "nb": 1, "gc": 4, "scale": 2}, 8, {"out": (3, 16, 16)}),
    "discriminators.yaml#vgg": Case({"nf": 4, "stages": 4}, 32, {"out": (1,)}),
    "discriminators.yaml#vgg128": Case({"nf": 4}, 64, {"out": (1,)}),
    "discriminators.yaml#patchgan": Case(
        {"nf": 4, "n_layers": 2, "norm": "instance", "spectral_norm": True}, 32, {"out": (1, 6, 6)}
    ),
    "discriminators.yaml#multiscale": Case(
        {"nf": 4, "n_layers": 1, "norm": "batch", "num_D": 3},
        32,
        {"scale0": (1, 14, 14), "scale1": (1, 6, 6), "scale2": (1, 2, 2)},
    ),
    "discriminators.yaml#unet": Case({"nf": 4}, 16, {"out": (1, 16, 16)}),
    "unet.yaml#UNet": Case({"nf": 4, "depth": 3}, 16, {"out": (3, 16, 16)}),
    "unet.yaml#UNetUp": Case({"out": 4}, 16, {"out": (4, 32, 32)}, channels=4),
    # A middle level returns cat(its input, its output): twice its outer channels.
    "unet.yaml#UNetLevel": Case(
        {"level": 1, "depth": 3, "nf": 4}, 16, {"out": (8, 16, 16)}, channels=4
    ),
    "image2image.yaml#ResnetBlock": Case({"nf": 4}, 8, {"out": (4, 8, 8)}, channels=4),
    "image2image.yaml#ResnetGenerator": Case({"nf": 4, "n_blocks": 1}, 16, {"out": (3, 16, 16)}),
    "image2image.yaml#PatchGAN": Case({"nf": 4}, 32, {"out": (1, 2, 2)}),
    "image2image.yaml#WBCResBlock": Case({"nf": 4}, 8, {"out": (4, 8, 8)}, channels=4),
    "image2image.yaml#WBCUNet": Case({"nf": 4, "n_blocks": 1}, 16, {"out": (3, 16, 16)}),
    "nafnet.yaml#NAFBlock": Case({"c": 4, "dropout": 0.1}, 8, {"out": (4, 8, 8)}, channels=4),
    # The level blocks take each level's input; here all four levels have 4 channels.
    **{
        f"nafnet.yaml#{block}": Case(
            {f"c{i}": 4 for i in range(4)},
            8,
            {f"o{i}": shape for i in range(4)},
            channels=4,
            inputs=inputs,
        )
        for block, shape, inputs in [
            ("NAFEncoders", (4, 8, 8), ("x0", "x1", "x2", "x3")),
            ("NAFDowns", (8, 4, 4), ("x0", "x1", "x2", "x3")),
            ("NAFUps", (4, 16, 16), ("x0", "x1", "x2", "x3")),
            ("NAFDecoders", (4, 8, 8), tuple(f"{p}{i}" for p in "us" for i in range(4))),
        ]
    },
    "nafnet.yaml#NAFNet": Case(
        {
            "width": 2,
            "middle_blk_num": 1,
            **{f"{s}{i}": 1 for s in ("enc", "dec") for i in range(4)},
        },
        13,  # padded to 16 inside, cropped back
        {"out": (3, 13, 13)},
    ),
    "pan.yaml#PA": Case({"nf": 4}, 8, {"out": (4, 8, 8)}, channels=4),
    "pan.yaml#PAConv": Case({"nf": 4}, 8, {"out": (4, 8, 8)}, channels=4),
    "pan.yaml#SCPAConv": Case({"nf": 4}, 8, {"out": (4, 8, 8)}, channels=4),
    "pan.yaml#SCPA": Case({"nf": 4}, 8, {"out": (4, 8, 8)}, channels=4),
    "pan.yaml#PAN": Case({"nf": 4, "unf": 4, "nb": 1, "scale": 3}, 8, {"out": (3, 24, 24)}),
    "rcan.yaml#RCAB": Case({"nf": 4, "reduction": 2}, 8, {"out": (4, 8, 8)}, channels=4),
    "rcan.yaml#ResidualGroup": Case(
        {"nf": 4, "reduction": 2, "n_resblocks": 1}, 8, {"out": (4, 8, 8)}, channels=4
    ),
    "rcan.yaml#RCANUpsampler": Case({"nf": 4, "scale": 3}, 8, {"out": (4, 24, 24)}, channels=4),
    "rcan.yaml#RCAN": Case(
        {"nf": 4, "reduction": 2, "n_resgroups": 1, "n_resblocks": 1, "scale": 2},
        8,
        {"out": (3, 16, 16)},
    ),
    "realplksr.yaml#PLKConv": Case({"dim": 4, "pdim": 1, "kernel": 5}, 8, {"out": (4, 8, 8)}, 4),
    "realplksr.yaml#ElementwiseAttention": Case({"dim": 4}, 8, {"out": (4, 8, 8)}, channels=4),
    "realplksr.yaml#PLKBlock": Case(
        {"dim": 4, "kernel": 5, "norm_groups": 2}, 8, {"out": (4, 8, 8)}, channels=4
    ),
    "realplksr.yaml#RealPLKSR": Case(
        {"dim": 8, "n_blocks": 1, "kernel": 5, "scale": 2}, 8, {"out": (3, 16, 16)}
    ),
    "span.yaml#Conv3XC": Case({"c_in": 3, "c_out": 4}, 8, {"out": (4, 8, 8)}),
    "span.yaml#Conv3XCBranch": Case({"c_in": 3, "c_out": 4}, 8, {"out": (4, 6, 6)}),
    "span.yaml#SPAB": Case({"nf": 4}, 8, {"out": (4, 8, 8), "out1": (4, 8, 8)}, channels=4),
    "span.yaml#SPANUpsampler": Case({"out_nc": 3, "scale": 2}, 8, {"out": (3, 16, 16)}, 4),
    "span.yaml#SPAN": Case({"nf": 4, "scale": 2}, 8, {"out": (3, 16, 16)}),
    "srresnet.yaml#SRResBlock": Case({"nf": 4}, 8, {"out": (4, 8, 8)}, channels=4),
    "srresnet.yaml#SRResNet": Case({"nf": 4, "nb": 1, "scale": 3}, 8, {"out": (3, 24, 24)}),
    "srvgg.yaml#SRVGGNetCompact": Case({"nf": 4, "scale": 2}, 8, {"out": (3, 16, 16)}),
    "srvgg.yaml#SRVGGBody": Case({"nf": 4, "scale": 2}, 8, {"out": (12, 8, 8)}),
    # A 4-D 'saved' is no saved mask: the mask is computed for the image's size.
    "swinir.yaml#WindowAttention": Case(
        {"dim": 4, "heads": 2, "window": 4, "shift": 2, "img_size": 16},
        8,
        {"out": (4, 8, 8)},
        channels=4,
        inputs=("x", "saved"),
    ),
    "swinir.yaml#Mlp": Case({"dim": 4, "hidden": 8}, 8, {"out": (4, 8, 8)}, channels=4),
    "swinir.yaml#SwinTransformerBlock": Case(
        {"dim": 4, "heads": 2, "window": 4, "shift": 2, "img_size": 8}, 8, {"out": (4, 8, 8)}, 4
    ),
    "swinir.yaml#BasicLayer": Case(
        {"dim": 4, "depth": 2, "heads": 2, "window": 4, "img_size": 8}, 8, {"out": (4, 8, 8)}, 4
    ),
    "swinir.yaml#ResiConv3": Case({"out": 4}, 8, {"out": (4, 8, 8)}, channels=4),
    "swinir.yaml#RSTB": Case(
        {"dim": 4, "depth": 2, "heads": 2, "window": 4, "resi_connection": "3conv"},
        8,
        {"out": (4, 8, 8)},
        channels=4,
    ),
    "swinir.yaml#PatchNorm": Case({"dim": 4}, 8, {"out": (4, 8, 8)}, channels=4),
    "swinir.yaml#SwinIRUpsample": Case({"num_feat": 4, "scale": 3}, 8, {"out": (4, 24, 24)}, 4),
    "swinir.yaml#SwinIR": Case(
        {
            "embed_dim": 8,
            "num_layers": 1,
            "depth": 2,
            "num_heads": 2,
            "window_size": 4,
            "img_size": 8,
        },
        8,
        {"out": (3, 16, 16)},
    ),
    # PPON (lib/ppon.yaml): dilated residual blocks keep nf channels.
    "ppon.yaml#DilatedResBlock": Case({"nf": 4}, 8, {"out": (4, 8, 8)}, channels=4),
    "ppon.yaml#RRDilatedBlock": Case({"nf": 4}, 8, {"out": (4, 8, 8)}, channels=4),
    "ppon.yaml#PPONTrunk": Case({"nf": 4, "nb": 1}, 8, {"out": (4, 8, 8)}, channels=4),
    "ppon.yaml#PPON": Case(
        {"nf": 4, "nb": 1, "nb_branch": 1, "scale": 2},
        8,
        {k: (3, 16, 16) for k in ("out_c", "out_s", "out_p")},
    ),
    # SFTGAN (lib/sftgan.yaml): the SFT blocks read features and condition concatenated.
    "sftgan.yaml#SFTLayer": Case({"nf": 2, "cond_nf": 2}, 8, {"out": (2, 8, 8)}, channels=4),
    "sftgan.yaml#ResBlock_SFT": Case({"nf": 2, "cond_nf": 2}, 8, {"out": (4, 8, 8)}, channels=4),
    "sftgan.yaml#SFT_Net": Case(
        {"nf": 4, "nb": 1, "cond_nf": 2, "cond_mid": 4, "scale": 2},
        8,
        {"out": (3, 16, 16)},
        inputs=("x", "seg"),
        sizes={"seg": 16},
        widths={"seg": 8},
    ),
    "discriminators.yaml#acd_vgg_bn_96": Case({"nf": 2, "fc": 4}, 96, {"gan": (1,), "cls": (8,)}),
    # Video SR (lib/video.yaml): the 4-D parts here; the 5-D models in VIDEO_5D below.
    "video.yaml#FlowNet": Case(
        {"nf": 4}, 8, {"half": (2, 4, 4), "full": (2, 8, 8)}, inputs=("neighbour", "centre")
    ),
    "video.yaml#VSRTrunk": Case(
        {"nf": 4, "nb": 1, "gc": 2, "scale": 2}, 8, {"out": (3, 16, 16)}, inputs=("fused", "centre")
    ),
    "rife.yaml#ConvP": Case({"out": 4}, 8, {"out": (4, 8, 8)}),
    "rife.yaml#DeconvP": Case({"out": 4}, 8, {"out": (4, 16, 16)}),
    "rife.yaml#Conv2": Case({"out": 4}, 8, {"out": (4, 4, 4)}),
    "rife.yaml#IFBlock": Case({"c": 4, "scale": 2}, 8, {"out": (5, 16, 16)}),
    "rife.yaml#Shrink": Case(
        {"factor": 2}, 8, {"out": (4, 4, 4)}, channels=4, inputs=("flow",), stateless=True
    ),
    "rife.yaml#WarpBlend": Case(
        {},
        8,
        {"merged": (4, 8, 8), "warped0": (4, 8, 8), "warped1": (4, 8, 8)},
        channels=4,
        inputs=("img0", "img1", "flow", "mask"),
        stateless=True,
    ),
    "rife.yaml#Blend": Case(
        {},
        8,
        {"out": (3, 8, 8)},
        inputs=("img0", "img1", "fm"),
        widths={"fm": 5},
        stateless=True,
    ),
    "rife.yaml#ContextNet": Case(
        {"c": 2},
        32,
        {"f1": (2, 16, 16), "f2": (4, 8, 8), "f3": (8, 4, 4), "f4": (16, 2, 2)},
        inputs=("x", "flow"),
        widths={"flow": 2},
    ),
    "rife.yaml#RefineUNet": Case(
        {"c": 2},
        32,
        {"out": (3, 32, 32)},
        inputs=("x", "a1", "a2", "a3", "a4", "b1", "b2", "b3", "b4"),
        sizes={f"{s}{i}": 32 >> i for s in "ab" for i in range(1, 5)},
    ),
    "rife.yaml#IFNet": Case(
        {"c0": 4, "c1": 4, "c2": 4, "c_tea": 4, "c_ctx": 1},
        16,
        {
            **{k: (3, 16, 16) for k in ("out", "merged0", "merged1", "merged2", "merged_tea")},
            **{k: (4, 16, 16) for k in ("flow", "flow0", "flow1", "flow2", "flow_tea")},
            "mask": (1, 16, 16),
        },
        inputs=("img0", "img1", "gt"),
    ),
    "vgg.yaml#VGG19Features": Case({"nf": 2}, 32, vgg_ports(2, 32, bn=False)),
    "vgg.yaml#VGG19": Case({"nf": 2}, 32, vgg_ports(2, 32, bn=False)),
    "vgg.yaml#VGG19BNFeatures": Case({"nf": 2}, 32, vgg_ports(2, 32, bn=True)),
    "vgg.yaml#VGG19BN": Case({"nf": 2}, 32, vgg_ports(2, 32, bn=True)),
}


# ------------------------------------------------------------- every library block
#: Blocks that take (N, T, C, H, W) windows of frames, which this harness (one image per
#: input) cannot feed: tests/test_vsr.py builds and trains them, and the shipped-spec
#: rows (tests/test_specs_train.py) train specs/vsr.yaml and specs/vsr_3d.yaml.
VIDEO_5D = {
    f"video.yaml#{name}": "tests/test_vsr.py"
    for name in ("FlowVSR", "StackVSR", "Conv3dVSR", "RDB3D", "RRDB3D")
}


#: Steps of a normalizing flow, which only a network with ``flow:`` may hold:
#: tests/test_flow.py builds, inverts and trains them inside SRFlow's network, and
#: tests/test_srflow_layout.py the x8 flow inside specs/srflow_x8.yaml.
FLOW_STEPS = {
    f"srflow.yaml#{name}": "tests/test_flow.py"
    for name in ("SRFlowTransition", "SRFlowStep", "SRFlowUpsampler")
}
FLOW_STEPS["srflow.yaml#SRFlowUpsamplerX8"] = "tests/test_srflow_layout.py"
ELSEWHERE = {**VIDEO_5D, **FLOW_STEPS}


def test_every_library_block_has_a_tiny_case() -> None:
    blocks = set(library_blocks())
    assert blocks, "no blocks found in specs/lib"
    missing = sorted(blocks - set(TINY) - set(ELSEWHERE))
    stale = sorted((set(TINY) | set(ELSEWHERE)) - blocks)
    assert not missing, f"add tiny params for these library blocks to TINY: {missing}"
    assert not stale, f"TINY names blocks that no library defines: {stale}"


@pytest.mark.parametrize("key", library_blocks())
def test_block_compiles_runs_and_trains(tmp_path: Path, key: str) -> None:
    if key in ELSEWHERE:
        pytest.skip(f"{key} is covered by {ELSEWHERE[key]}")
    if key not in TINY:
        pytest.fail(f"library block {key} has no entry in TINY")
    case = TINY[key]
    net = build_block(
        tmp_path,
        key,
        case.params,
        size=case.size,
        channels=case.channels,
        inputs=case.inputs,
        sizes=case.sizes,
        widths=case.widths,
    )
    params = dict(net.named_parameters())
    assert bool(params) != case.stateless, f"{key}: parameters {list(params)}"
    torch.manual_seed(0)
    x = torch.rand(BATCH, case.channels, case.size, case.size)
    if case.stateless:
        x.requires_grad_(True)
    sizes, widths = case.sizes or {}, case.widths or {}
    feeds = []
    for k in case.inputs:
        feed = x[:, [i % case.channels for i in range(widths[k])]] if k in widths else x
        if k in sizes:
            feed = F.interpolate(feed, size=(sizes[k], sizes[k]), mode="bilinear")
        feeds.append(feed)
    outputs = outputs_of(net(*feeds))
    assert {k: tuple(v.shape) for k, v in outputs.items()} == {
        k: (BATCH, *v) for k, v in case.ports.items()
    }
    sum(out.square().mean() for out in outputs.values()).backward()
    if case.stateless:  # the gradient reaches the inputs
        assert x.grad is not None and torch.isfinite(x.grad).all()
    for name, p in params.items():
        assert p.grad is not None, f"{key}: parameter {name} gets no gradient"
        assert torch.isfinite(p.grad).all(), f"{key}: parameter {name} has a non-finite gradient"


# ------------------------------------------------------------------- references
Convs = dict[str, tuple[torch.Tensor, torch.Tensor | None]]


def conv_weights(net: nn.Module) -> Convs:
    """Every conv's effective weight and bias by node name (spectral norm applied)."""
    return {
        name: (m.weight.detach(), None if m.bias is None else m.bias.detach())
        for name, m in net.named_modules()
        if isinstance(m, nn.Conv2d)
    }


def conv_fn(weights: Convs) -> Callable[..., torch.Tensor]:
    def conv(name: str, x: torch.Tensor, stride: int = 1) -> torch.Tensor:
        w, b = weights[name]
        return F.conv2d(x, w, b, stride=stride, padding=1)

    return conv


def rrdbnet_reference(net: nn.Module, x: torch.Tensor, scale: int, nb: int) -> torch.Tensor:
    """BasicSR's RRDBNet forward, written out with the network's own weights."""
    conv = conv_fn(conv_weights(net))

    def lrelu(t: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(t, 0.2)

    def rdb(prefix: str, t: torch.Tensor) -> torch.Tensor:
        feats = [t]
        for k in range(1, 5):
            feats.append(lrelu(conv(f"{prefix}.conv{k}", torch.cat(feats, 1))))
        return t + 0.2 * conv(f"{prefix}.conv5", torch.cat(feats, 1))

    if scale < 4:
        x = F.pixel_unshuffle(x, 4 // scale)
    feat = conv("conv_first", x)
    body = feat
    for i in range(nb):
        inner = body
        for r in (1, 2, 3):
            inner = rdb(f"body.{i}.rdb{r}", inner)
        body = body + 0.2 * inner
    feat = feat + conv("conv_body", body)
    for k in range(1, 4 if scale == 8 else 3):
        feat = lrelu(conv(f"conv_up{k}", F.interpolate(feat, scale_factor=2, mode="nearest")))
    return conv("conv_last", lrelu(conv("conv_hr", feat)))


def srresnet_reference(net: nn.Module, x: torch.Tensor, scale: int, nb: int) -> torch.Tensor:
    """BasicSR's MSRResNet forward, written out with the network's own weights."""
    conv = conv_fn(conv_weights(net))

    def lrelu(t: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(t, 0.1)

    feat = lrelu(conv("conv_first", x))
    out = feat
    for i in range(nb):
        out = out + conv(f"body.{i}.conv2", F.relu(conv(f"body.{i}.conv1", out)))
    if scale == 4:
        out = lrelu(F.pixel_shuffle(conv("upconv1", out), 2))
        out = lrelu(F.pixel_shuffle(conv("upconv2", out), 2))
    else:
        out = lrelu(F.pixel_shuffle(conv("upconv1", out), scale))
    out = conv("conv_last", lrelu(conv("conv_hr", out)))
    return out + F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)


def unet_reference(net: nn.Module, x: torch.Tensor, skip: bool) -> torch.Tensor:
    """Real-ESRGAN's UNetDiscriminatorSN forward, written out with the network's weights."""
    conv = conv_fn(conv_weights(net))

    def lrelu(t: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(t, 0.2)

    def up(t: torch.Tensor) -> torch.Tensor:
        return F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False)

    x0 = lrelu(conv("conv0", x))
    x1 = lrelu(conv("conv1", x0, stride=2))
    x2 = lrelu(conv("conv2", x1, stride=2))
    x3 = lrelu(conv("conv3", x2, stride=2))
    x4 = lrelu(conv("conv4", up(x3))) + (x2 if skip else 0)
    x5 = lrelu(conv("conv5", up(x4))) + (x1 if skip else 0)
    x6 = lrelu(conv("conv6", up(x5))) + (x0 if skip else 0)
    out = lrelu(conv("conv8", lrelu(conv("conv7", x6))))
    return conv("conv9", out)


# ---------------------------------------------------------------------- RRDBNet
@pytest.mark.parametrize("scale", [1, 2, 4, 8])
def test_rrdbnet_scales_and_canonical_keys(tmp_path: Path, scale: int) -> None:
    params = {"nf": 8, "nb": 2, "gc": 4, "scale": scale}
    net = build_block(tmp_path, "esrgan.yaml#RRDBNet", params, size=8).eval()
    keys = set(net.state_dict())
    assert {
        "conv_first.weight",
        "body.0.rdb1.conv1.weight",
        "body.1.rdb3.conv5.bias",
        "conv_body.weight",
        "conv_up1.weight",
        "conv_up2.weight",
        "conv_hr.weight",
        "conv_last.weight",
    } <= keys
    assert ("conv_up3.weight" in keys) == (scale == 8)
    # Scales 1 and 2 pixel-unshuffle the input by 4 and 2 before conv_first.
    assert net.conv_first.weight.shape[1] == {1: 48, 2: 12}.get(scale, 3)
    torch.manual_seed(0)
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        y = net(x)
        assert y.shape == (1, 3, 8 * scale, 8 * scale)
        torch.testing.assert_close(y, rrdbnet_reference(net, x, scale, nb=2))


def test_one_block_keeps_its_index(tmp_path: Path) -> None:
    params = {"nf": 8, "nb": 1, "gc": 4}
    net = build_block(tmp_path, "esrgan.yaml#RRDBNet", params, size=8)
    assert "body.0.rdb1.conv1.weight" in net.state_dict()


# ---------------------------------------------------------------------- SRResNet
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_srresnet_matches_msrresnet(tmp_path: Path, scale: int) -> None:
    params = {"nf": 4, "nb": 2, "scale": scale}
    net = build_block(tmp_path, "srresnet.yaml#SRResNet", params, size=8).eval()
    keys = set(net.state_dict())
    expected = {"conv_first", "body.0.conv1", "body.1.conv2", "upconv1", "conv_hr", "conv_last"}
    assert {f"{name}.weight" for name in expected} <= keys
    assert ("upconv2.weight" in keys) == (scale == 4)
    assert net.upconv1.weight.shape[0] == 4 * (9 if scale == 3 else 4)
    torch.manual_seed(0)
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        y = net(x)
        assert y.shape == (1, 3, 8 * scale, 8 * scale)
        torch.testing.assert_close(y, srresnet_reference(net, x, scale, nb=2))


# ---------------------------------------------------------------- discriminators
@pytest.mark.parametrize(("size", "stages"), [(96, 5), (128, 5), (192, 6), (256, 6)])
def test_vgg_discriminator_sizes(tmp_path: Path, size: int, stages: int) -> None:
    nf = 2
    net = build_block(tmp_path, "discriminators.yaml#vgg", {"nf": nf, "stages": stages}, size=size)
    side = size >> stages
    assert net.linear1.in_features == nf * 8 * side * side
    keys = set(net.state_dict())
    assert {"conv0_0.bias", "conv0_1.weight", "bn0_1.running_mean", "linear2.weight"} <= keys
    assert "conv0_1.bias" not in keys  # convs before batch norm have no bias, as BasicSR's
    assert ("conv5_1.weight" in keys) == (stages == 6)
    assert net(torch.rand(BATCH, 3, size, size)).shape == (BATCH, 1)


def test_vgg128_preset(tmp_path: Path) -> None:
    net = build_block(tmp_path, "discriminators.yaml#vgg128", {"nf": 2}, size=128)
    assert net.vgg.linear1.in_features == 2 * 8 * 4 * 4
    assert net(torch.rand(BATCH, 3, 128, 128)).shape == (BATCH, 1)


@pytest.mark.parametrize("n_layers", [1, 2, 3, 4])
def test_patchgan_depth(tmp_path: Path, n_layers: int) -> None:
    nf, size = 2, 64
    params = {"nf": nf, "n_layers": n_layers, "norm": "batch"}
    net = build_block(tmp_path, "discriminators.yaml#patchgan", params, size=size)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert [c.stride[0] for c in convs] == [2] * n_layers + [1, 1]
    assert {c.kernel_size for c in convs} == {(4, 4)} and {c.padding for c in convs} == {(1, 1)}
    widths = [nf * min(2**i, 8) for i in range(n_layers + 1)]
    assert [c.out_channels for c in convs] == [*widths, 1]
    # Convs followed by batch norm have no bias; the first and the head have one.
    assert [c.bias is not None for c in convs] == [True] + [False] * n_layers + [True]
    side = (size >> n_layers) - 2
    assert net(torch.rand(BATCH, 3, size, size)).shape == (BATCH, 1, side, side)


@pytest.mark.parametrize("norm", ["instance", "none"])
def test_patchgan_norm_and_spectral_norm(tmp_path: Path, norm: str) -> None:
    params = {"nf": 2, "n_layers": 2, "norm": norm, "spectral_norm": True}
    net = build_block(tmp_path, "discriminators.yaml#patchgan", params, size=32)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert all(nn.utils.parametrize.is_parametrized(c, "weight") for c in convs)
    norms = [m for m in net.modules() if isinstance(m, nn.InstanceNorm2d)]
    assert len(norms) == (2 if norm == "instance" else 0)
    assert all(c.bias is not None for c in convs)


@pytest.mark.parametrize("num_d", [2, 3])
def test_multiscale_scales(tmp_path: Path, num_d: int) -> None:
    settings = {"nf": 2, "n_layers": 1, "norm": "instance"}
    net = build_block(
        tmp_path, "discriminators.yaml#multiscale", {**settings, "num_D": num_d}, size=32
    ).eval()
    single = build_block(tmp_path, "discriminators.yaml#patchgan", settings, size=32).eval()
    assert ("d2" in dict(net.named_children())) == (num_d == 3)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        out = net(x)
        # The k-th PatchGAN sees the input average-pooled k times (3x3, stride 2, pad 1,
        # the padding not counted), as pix2pixHD pools.
        image = x
        for k in range(num_d):
            prefix = f"d{k}."
            state = {
                n[len(prefix) :]: v
                for n, v in net.state_dict().items()
                if n[: len(prefix)] == prefix
            }
            single.load_state_dict(state, strict=True)
            torch.testing.assert_close(out[f"scale{k}"], single(image))
            image = F.avg_pool2d(image, 3, stride=2, padding=1, count_include_pad=False)
    assert out["scale0"].shape == (1, 1, 14, 14)


@pytest.mark.parametrize("skip", [True, False])
def test_unet_discriminator_matches_real_esrgan(tmp_path: Path, skip: bool) -> None:
    net = build_block(tmp_path, "discriminators.yaml#unet", {"nf": 4, "skip": skip}, size=16)
    convs = {name: m for name, m in net.named_modules() if isinstance(m, nn.Conv2d)}
    assert list(convs) == [f"conv{i}" for i in range(10)]
    normed = [n for n, m in convs.items() if nn.utils.parametrize.is_parametrized(m, "weight")]
    assert normed == [f"conv{i}" for i in range(1, 9)]
    net.eval()  # spectral norm: no power iteration, so the reference sees the same weights
    torch.manual_seed(0)
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(net(x), unet_reference(net, x, skip))


# --------------------------------------------------------------------- VGG19
def torchvision_vgg19(nf: int, *, bn: bool) -> tuple[dict[str, torch.Tensor], list[tuple]]:
    """A random state dict with the keys and shapes of torchvision's vgg19(_bn), and the
    layers of ``features`` in order as (kind, port name, index)."""
    g = torch.Generator().manual_seed(0)
    state: dict[str, torch.Tensor] = {}
    layers: list[tuple] = []
    index, in_ch = 0, 3
    for stage, (convs, mult) in enumerate(VGG19_STAGES, 1):
        ch = nf * mult
        for c in range(1, convs + 1):
            key = f"features.{index}"
            std = (2.0 / (9 * in_ch)) ** 0.5  # He init: activations keep their scale
            state[f"{key}.weight"] = torch.randn(ch, in_ch, 3, 3, generator=g) * std
            state[f"{key}.bias"] = torch.randn(ch, generator=g) * 0.1
            layers.append(("conv", f"conv{stage}_{c}", index))
            index += 1
            if bn:
                key = f"features.{index}"
                state[f"{key}.weight"] = 1 + 0.1 * torch.randn(ch, generator=g)
                state[f"{key}.bias"] = 0.1 * torch.randn(ch, generator=g)
                state[f"{key}.running_mean"] = 0.1 * torch.randn(ch, generator=g)
                state[f"{key}.running_var"] = 0.5 + torch.rand(ch, generator=g)
                state[f"{key}.num_batches_tracked"] = torch.tensor(100)
                layers.append(("bn", f"bn{stage}_{c}", index))
                index += 1
            layers.append(("relu", f"relu{stage}_{c}", index))
            index += 1
            in_ch = ch
        layers.append(("pool", f"pool{stage}", index))
        index += 1
    return state, layers


def vgg_reference(
    state: dict[str, torch.Tensor], layers: list[tuple], x: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Every named layer's output, computed from the state dict with torch functions."""
    out = {}
    for kind, name, index in layers:
        p = {k.rsplit(".", 1)[1]: v for k, v in state.items() if k.startswith(f"features.{index}.")}
        if kind == "conv":
            x = F.conv2d(x, p["weight"], p["bias"], padding=1)
        elif kind == "bn":
            x = F.batch_norm(x, p["running_mean"], p["running_var"], p["weight"], p["bias"])
        elif kind == "relu":
            x = F.relu(x)
        else:
            x = F.max_pool2d(x, 2)
        out[name] = x
    return out


def test_vgg19_indices_are_torchvision_s() -> None:
    _, plain = torchvision_vgg19(1, bn=False)
    assert [i for kind, _, i in plain if kind == "conv"] == [
        *(0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)
    ]
    assert [i for kind, _, i in plain if kind == "pool"] == [4, 9, 18, 27, 36]
    # The perceptual loss's built-in trunk names the same layers at the same indices.
    assert {name: i for _, name, i in plain} == VGG19_LAYERS
    _, with_bn = torchvision_vgg19(1, bn=True)
    assert [i for kind, _, i in with_bn if kind == "conv"] == [
        *(0, 3, 7, 10, 14, 17, 20, 23, 27, 30, 33, 36, 40, 43, 46, 49)
    ]
    assert [i for kind, _, i in with_bn if kind == "pool"] == [6, 13, 26, 39, 52]


@pytest.mark.parametrize("block", ["VGG19", "VGG19BN"])
def test_vgg19_loads_torchvision_weights(tmp_path: Path, block: str) -> None:
    state, layers = torchvision_vgg19(64, bn=block == "VGG19BN")
    torch.save(state, tmp_path / "vgg19.pth")
    net = build_block(tmp_path, f"vgg.yaml#{block}", {}, size=32)
    net.load_state_dict(torch.load(tmp_path / "vgg19.pth", weights_only=True), strict=True)
    net.eval()
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = net(x)
        want = vgg_reference(state, layers, x)
    assert list(got) == list(want)
    for name in want:
        torch.testing.assert_close(got[name], want[name], msg=lambda m, n=name: f"{n}: {m}")

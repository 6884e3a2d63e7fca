"""The modern SR zoo: published architectures written in YAML (specs/lib/), each one the
published network.

For every row of ZOO: Loom's network has spandrel's parameter count and key names;
its export is detected by chaiNNer's loader (spandrel) as that architecture, at the
right scale, computing the same image; weights made with spandrel's own classes load
into Loom's network and compute the same image; and the architecture's spec under
specs/zoo/ trains through the real runner. Every weight is made here; nothing is
downloaded. New architectures are new rows (and cases).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import engine
from engine.compile import reparam
from engine.compile.weights import WeightsError, export, load_weights

spandrel = pytest.importorskip("spandrel", reason="zoo interop tests need the dev extra")
from spandrel.architectures.NAFNet import NAFNet  # noqa: E402
from spandrel.architectures.PLKSR import RealPLKSR  # noqa: E402
from spandrel.architectures.RCAN import RCAN  # noqa: E402
from spandrel.architectures.SPAN import SPAN  # noqa: E402
from spandrel.architectures.SwinIR import SwinIR  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-5  # of the output's range


@dataclass(frozen=True)
class Arch:
    """One zoo architecture: Loom's block, spandrel's class, and how their settings map."""

    block: str
    library: str  # under specs/lib/
    spandrel_id: str
    reference: Callable[..., nn.Module]
    # Loom params → spandrel's keyword arguments for the same network.
    reference_kwargs: Callable[[dict[str, Any]], dict[str, Any]]
    # A tiny configuration, and the cases (tiny + changes) tried both ways.
    tiny: dict[str, Any]
    cases: list[dict[str, Any]]
    # Keys spandrel's network holds that Loom's computes at export instead.
    derived: Callable[[str], bool] = lambda key: False
    # Parameters spandrel counts that Loom keeps as constant buffers.
    buffers_counted_as_parameters: int = 0
    # Overrides that make specs/zoo/<spec> tiny.
    run_overrides: list[str] = field(default_factory=list)
    spec: str = ""
    # The scale spandrel reads from an export of specs/zoo/<spec>.
    spec_scale: int = 2


def _rcan_kwargs(p: dict[str, Any]) -> dict[str, Any]:
    return {
        "scale": p.get("scale", 4),
        "n_resgroups": p.get("n_resgroups", 10),
        "n_resblocks": p.get("n_resblocks", 20),
        "n_feats": p.get("nf", 64),
        "reduction": p.get("reduction", 16),
        "norm": p.get("norm", True),
        "unshuffle_mod": p.get("unshuffle", p.get("scale", 4) == 1),
    }


def _span_kwargs(p: dict[str, Any]) -> dict[str, Any]:
    return {
        "num_in_ch": 3,
        "num_out_ch": 3,
        "feature_channels": p.get("nf", 48),
        "upscale": p.get("scale", 4),
        "norm": p.get("norm", True),
    }


def _plksr_kwargs(p: dict[str, Any]) -> dict[str, Any]:
    return {
        "dim": p.get("dim", 64),
        "n_blocks": p.get("n_blocks", 28),
        "upscaling_factor": p.get("scale", 4),
        "kernel_size": p.get("kernel", 17),
        "split_ratio": p.get("split_ratio", 0.25),
        "use_ea": p.get("use_ea", True),
        "layer_norm": p.get("layer_norm", False),
    }


def _swinir_kwargs(p: dict[str, Any]) -> dict[str, Any]:
    window = p.get("window_size", 8)
    upsampler = p.get("upsampler", "pixelshuffledirect")
    return {
        "img_size": p.get("img_size", 64),
        "embed_dim": p.get("embed_dim", 60),
        "depths": [p.get("depth", 6)] * p.get("num_layers", 4),
        "num_heads": [p.get("num_heads", 6)] * p.get("num_layers", 4),
        "window_size": window,
        "mlp_ratio": p.get("mlp_ratio", 2.0),
        "upscale": p.get("scale", 2),
        "img_range": 255.0 if window == 7 else 1.0,
        "upsampler": "" if upsampler == "none" else upsampler,
        "resi_connection": p.get("resi_connection", "1conv"),
    }


#: SwinIR with two groups of two blocks (one shifted each), 12 channels, window 4.
SWINIR_TINY = {"embed_dim": 12, "num_layers": 2, "depth": 2, "num_heads": 2, "window_size": 4}
SWINIR_TINY |= {"img_size": 16}


def _nafnet_kwargs(p: dict[str, Any]) -> dict[str, Any]:
    return {
        "img_channel": p.get("img_channel", 3),
        "width": p.get("width", 32),
        "middle_blk_num": p.get("middle_blk_num", 12),
        "enc_blk_nums": [p.get(f"enc{i}", n) for i, n in enumerate((2, 2, 4, 8))],
        "dec_blk_nums": [p.get(f"dec{i}", 2) for i in range(4)],
    }


#: NAFNet with one block per level at width 4: all four levels, every key, 75,887 parameters.
NAFNET_TINY = {"width": 4, "middle_blk_num": 1}
NAFNET_TINY |= {f"{side}{i}": 1 for side in ("enc", "dec") for i in range(4)}


RUN = ["train.iterations=3", "validation.every=3", "checkpoints.every=3", "logging.every=1"]
RUN += ["data.train.crop_size=32", "data.train.batch_size=2", "+data.val.crop_size=32"]

ZOO = {
    "RCAN": Arch(
        block="RCAN",
        library="rcan.yaml",
        spandrel_id="RCAN",
        reference=RCAN,
        reference_kwargs=_rcan_kwargs,
        tiny={"n_resgroups": 2, "n_resblocks": 2, "nf": 16, "reduction": 4},
        cases=[
            {"scale": 2},
            {"scale": 3},
            {"scale": 4},
            {"scale": 8},
            {"scale": 1},  # unshuffle by 4 into an x4 trunk (the default at scale 1)
            {"scale": 2, "unshuffle": True},
            {"scale": 4, "norm": False},
        ],
        buffers_counted_as_parameters=2 * (9 + 3),  # sub_mean, add_mean
        spec="rcan.yaml",
        run_overrides=[*RUN, "networks.G.params.nf=8", "networks.G.params.n_resblocks=1"],
    ),
    "SPAN": Arch(
        block="SPAN",
        library="span.yaml",
        spandrel_id="SPAN",
        reference=SPAN,
        reference_kwargs=_span_kwargs,
        tiny={"nf": 8},
        cases=[{"scale": 1}, {"scale": 2}, {"scale": 3}, {"scale": 4}, {"scale": 2, "norm": False}],
        derived=lambda key: ".eval_conv." in key,
        spec="span.yaml",
        run_overrides=[*RUN, "networks.G.params.nf=8"],
    ),
    "RealPLKSR": Arch(
        block="RealPLKSR",
        library="realplksr.yaml",
        spandrel_id="PLKSR",
        reference=RealPLKSR,
        reference_kwargs=_plksr_kwargs,
        tiny={"dim": 16, "n_blocks": 2, "kernel": 7},
        cases=[
            {"scale": 4},
            {"scale": 2, "layer_norm": True},
            {"scale": 3, "split_ratio": 0.5},
            {"scale": 1, "use_ea": False},
        ],
        spec="realplksr.yaml",
        run_overrides=[*RUN, "networks.G.params.dim=8", "networks.G.params.n_blocks=1"],
    ),
    "NAFNet": Arch(
        block="NAFNet",
        library="nafnet.yaml",
        spandrel_id="NAFNet",
        reference=NAFNet,
        reference_kwargs=_nafnet_kwargs,
        tiny=NAFNET_TINY,
        cases=[
            {"dropout": 0.1},  # 1x: NAFNet has no scale; dropout adds no keys
            {"width": 8, "middle_blk_num": 2, "enc3": 3},
            {"enc0": 2, "dec0": 2, "dec3": 2},
        ],
        spec="nafnet.yaml",
        spec_scale=1,
        run_overrides=[*RUN, "networks.G.params.width=4", "validation.metrics=[psnr]"],
    ),
    "SwinIR": Arch(
        block="SwinIR",
        library="swinir.yaml",
        spandrel_id="SwinIR",
        reference=SwinIR,
        reference_kwargs=_swinir_kwargs,
        tiny=SWINIR_TINY,
        cases=[
            {"scale": 2},  # the lightweight model's pixelshuffledirect
            {"scale": 4, "upsampler": "pixelshuffle", "resi_connection": "3conv"},
            # 1x restoration with window 7 (the JPEG models: they work in 0-255)
            {"scale": 1, "upsampler": "none", "window_size": 7, "img_size": 14},
        ],
        spec="swinir.yaml",
        run_overrides=[
            *RUN,
            "networks.G.params.embed_dim=8",
            "networks.G.params.num_heads=2",
            "networks.G.params.num_layers=1",
        ],
    ),
}
CASES = [
    pytest.param(name, case, id=f"{name}-" + "-".join(f"{k}{v}" for k, v in case.items()))
    for name, arch in ZOO.items()
    for case in arch.cases
]


def build(tmp_path: Path, arch: Arch, **params: Any) -> nn.Module:
    """Loom's network from the shipped library block, in eval mode."""
    spec = tmp_path / "zoo.yaml"
    spec.write_text(
        f"spec: 1\nname: zoo\nimports: [lib/{arch.library}]\nnetworks:\n"
        f"  G: {{use: {arch.block}, params: {json.dumps(params)}, trainable: false}}\n",
        encoding="utf-8",
    )
    return engine.build(spec)["G"].eval()


def randomize(net: nn.Module, seed: int) -> None:
    """Every parameter random, so no key goes unchecked (norm weights included)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)


def reference(arch: Arch, params: dict[str, Any], seed: int) -> nn.Module:
    model = arch.reference(**arch.reference_kwargs(params))
    randomize(model, seed)
    return model.eval()


def relative_difference(a: nn.Module, b: nn.Module, size: tuple[int, int] = (15, 17)) -> float:
    """Max |a(x) − b(x)| over the output's range, on an odd-sized input."""
    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ya, yb = a(x.clone()), b(x.clone())  # spandrel's RCAN scales its input in place
    assert ya.shape == yb.shape
    return float((ya - yb).abs().max() / (yb.max() - yb.min()))


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ------------------------------------------------------------ the published network
@pytest.mark.parametrize("name", ["SPAN", "RealPLKSR", "NAFNet"])
def test_default_configuration_has_the_published_parameter_count(tmp_path: Path, name: str) -> None:
    arch = ZOO[name]
    net, ref = build(tmp_path, arch), reference(arch, {}, seed=0)
    derived = sum(v.numel() for k, v in ref.state_dict().items() if arch.derived(k))
    assert count(net) + derived + arch.buffers_counted_as_parameters == count(ref)
    assert set(net.state_dict()) == {k for k in ref.state_dict() if not arch.derived(k)}


@pytest.mark.slow  # 200 RCABs: the build alone takes tens of seconds
def test_rcan_default_configuration_has_the_published_parameter_count(tmp_path: Path) -> None:
    arch = ZOO["RCAN"]
    net, ref = build(tmp_path, arch), reference(arch, {}, seed=0)
    assert count(net) == 15_592_355 and count(ref) == 15_592_379  # sub_mean, add_mean
    assert set(net.state_dict()) == set(ref.state_dict())


@pytest.mark.parametrize("name", list(ZOO))
def test_tiny_configuration_matches_spandrel_key_for_key(tmp_path: Path, name: str) -> None:
    arch = ZOO[name]
    net, ref = build(tmp_path, arch, **arch.tiny), reference(arch, arch.tiny, seed=0)
    theirs = {k: tuple(v.shape) for k, v in ref.state_dict().items() if not arch.derived(k)}
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == theirs
    derived = sum(v.numel() for k, v in ref.state_dict().items() if arch.derived(k))
    assert count(net) + derived + arch.buffers_counted_as_parameters == count(ref)


# ------------------------------------------------------------ Loom → spandrel
@pytest.mark.parametrize(("name", "case"), CASES)
def test_export_loads_in_spandrel_as_the_architecture(
    tmp_path: Path, name: str, case: dict[str, Any]
) -> None:
    arch = ZOO[name]
    params = {**arch.tiny, **case}
    net = build(tmp_path, arch, **params)
    randomize(net, seed=3)
    suffix = ".safetensors" if len(case) % 2 else ".pth"
    model = spandrel.ModelLoader().load_from_file(export(net, tmp_path / f"G{suffix}"))
    assert model.architecture.id == arch.spandrel_id
    scale = case.get("scale", 1)  # a 1x architecture has no scale parameter
    assert (model.scale, model.input_channels, model.output_channels) == (scale, 3, 3)
    assert relative_difference(net, model.model.eval()) <= TOL


# ------------------------------------------------------------ spandrel → Loom
@pytest.mark.parametrize(("name", "case"), CASES)
def test_spandrel_weights_load_into_loom(tmp_path: Path, name: str, case: dict[str, Any]) -> None:
    arch = ZOO[name]
    params = {**arch.tiny, **case}
    ref = reference(arch, params, seed=4)
    with torch.no_grad():
        ref(torch.rand(1, 3, 8, 8))  # SPAN's eval mode writes eval_conv from the branches
    torch.save({"params": ref.state_dict()}, tmp_path / "community.pth")  # as released
    net = build(tmp_path, arch, **params)
    report = load_weights(net, tmp_path / "community.pth")
    assert report.ok, str(report)
    assert relative_difference(net, ref) <= TOL


# ------------------------------------------------------------ training
@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_spec_trains_and_exports_for_spandrel(tmp_path: Path, name: str) -> None:
    from engine.train.runner import run

    arch = ZOO[name]
    result = run(
        ROOT / "specs" / "zoo" / arch.spec,
        arch.run_overrides,
        out=tmp_path / "run",
        stream=io.StringIO(),
        live=False,
    )
    assert result.iteration == 3
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    losses = [r["loss/pix"] for r in records if "loss/pix" in r]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    exported = sorted((tmp_path / "run" / "models").glob("G_*.pth"))[-1]
    model = spandrel.ModelLoader().load_from_file(exported)
    assert (model.architecture.id, model.scale) == (arch.spandrel_id, arch.spec_scale)
    fresh = engine.build(ROOT / "specs" / "zoo" / arch.spec, arch.run_overrides)["G"]
    assert load_weights(fresh, exported).ok
    if name == "RCAN":  # MeanShift is data, not a weight: training leaves it as it was
        net = result.networks["G"]
        assert not any("mean" in key for key, _ in net.named_parameters())
        mean = torch.tensor([0.4488, 0.4371, 0.4040]) * 255
        eye = torch.eye(3).view(3, 3, 1, 1)
        torch.testing.assert_close(net.get_buffer("sub_mean.weight").cpu(), eye)
        torch.testing.assert_close(net.get_buffer("sub_mean.bias").cpu(), -mean)
        torch.testing.assert_close(net.get_buffer("add_mean.bias").cpu(), mean)


# ------------------------------------------------------------ SPAN's eval_conv
def test_exported_eval_conv_is_the_reparameterization_spandrel_computes(tmp_path: Path) -> None:
    arch = ZOO["SPAN"]
    net = build(tmp_path, arch, nf=8, scale=2)
    randomize(net, seed=5)
    path = export(net, tmp_path / "span.pth")
    written = torch.load(path, weights_only=True)
    assert sum(".eval_conv." in k for k in written) == 2 * (2 + 6 * 3)  # 20 Conv3XCs
    model = spandrel.ModelLoader().load_from_file(path).model.eval()
    with torch.no_grad():
        model(torch.rand(1, 3, 8, 8))  # recomputes every eval_conv from the branches
    for key, value in model.state_dict().items():
        if ".eval_conv." in key:
            torch.testing.assert_close(written[key], value, rtol=1e-5, atol=1e-6)


def test_a_tool_running_only_eval_conv_computes_the_same_image(tmp_path: Path) -> None:
    """The merged convs alone, swapped in for the branches, give Loom's training output."""
    net = build(tmp_path, ZOO["SPAN"], nf=8, scale=2)
    randomize(net, seed=6)
    state = {k: v.double() for k, v in net.state_dict().items()}
    merged = reparam.derived_weights(net, state)
    x = torch.rand(1, 8, 9, 11, dtype=torch.float64)  # block_2.c2_r: 8 channels in
    prefix = "block_2.c2_r"
    with torch.no_grad():
        branches = nn.functional.pad(x, [1, 1, 1, 1])
        for k in range(3):
            branches = nn.functional.conv2d(
                branches, state[f"{prefix}.conv.{k}.weight"], state[f"{prefix}.conv.{k}.bias"]
            )
        branches = branches + nn.functional.conv2d(
            x, state[f"{prefix}.sk.weight"], state[f"{prefix}.sk.bias"]
        )
        single = nn.functional.conv2d(
            x, merged[f"{prefix}.eval_conv.weight"], merged[f"{prefix}.eval_conv.bias"], padding=1
        )
    torch.testing.assert_close(single, branches, rtol=1e-10, atol=1e-10)


def test_a_file_whose_eval_conv_disagrees_is_refused_then_loaded_by_its_branches(
    tmp_path: Path,
) -> None:
    arch = ZOO["SPAN"]
    ref = reference(arch, {"nf": 8, "scale": 2}, seed=7)
    with torch.no_grad():
        ref(torch.rand(1, 3, 8, 8))
    state = dict(ref.state_dict())
    state["block_3.c1_r.eval_conv.weight"] = state["block_3.c1_r.eval_conv.weight"] + 1.0
    net = build(tmp_path, arch, nf=8, scale=2)
    with pytest.raises(
        WeightsError, match=r"1 merged conv\(s\) disagree.*block_3\.c1_r\.eval_conv"
    ):
        load_weights(net, state)
    report = load_weights(net, state, strict=False)
    assert report.ok
    assert relative_difference(net, ref) <= TOL


def test_reparam_composes_any_chain_of_convs() -> None:
    """A 3×3 → 1×1 → 5×5 chain (unpadded) equals the one 7×7 conv compose returns."""
    gen = torch.Generator().manual_seed(8)
    shapes = [(5, 2, 3), (4, 5, 1), (3, 4, 5)]
    chain = [
        (
            torch.randn(o, i, k, k, generator=gen, dtype=torch.float64),
            torch.randn(o, dtype=torch.float64),
        )
        for o, i, k in shapes
    ]
    x = torch.randn(1, 2, 12, 12, generator=gen).double()
    y = x
    for w, b in chain:
        y = nn.functional.conv2d(y, w, b)
    weight, bias = reparam.compose(chain)
    assert weight.shape == (3, 2, 7, 7)
    torch.testing.assert_close(nn.functional.conv2d(x, weight, bias), y)


def test_a_branch_that_cannot_merge_is_refused_at_export(tmp_path: Path) -> None:
    net = build(tmp_path, ZOO["SPAN"], nf=8, scale=2)
    net.get_submodule("conv_2.conv.1").padding = (1, 1)  # no longer a valid-conv chain
    with pytest.raises(WeightsError, match=r"conv_2\.conv\.1: a SPAN Conv3XC branch must be"):
        export(net, tmp_path / "span.pth")


# ------------------------------------------------------------ bad settings
@pytest.mark.parametrize(
    ("block", "params", "message"),
    [
        ("RCAN", {"scale": 5}, "scale"),
        ("RealPLKSR", {"dim": 8, "split_ratio": 0.05}, "pdim"),
    ],
)
def test_impossible_settings_are_spec_errors(
    tmp_path: Path, block: str, params: dict[str, Any], message: str
) -> None:
    arch = ZOO[block]
    with pytest.raises(engine.SpecError, match=message):
        build(tmp_path, arch, **{**arch.tiny, **params})


def test_channel_attention_has_rcans_key_layout(tmp_path: Path) -> None:
    net = build(tmp_path, ZOO["RCAN"], **ZOO["RCAN"].tiny)
    keys = {k for k in net.state_dict() if ".body.3." in k and k.startswith("body.0.body.0.")}
    assert keys == {
        f"body.0.body.0.body.3.conv_du.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")
    }


# ------------------------------------------------------------ SwinIR's tables and masks
@pytest.mark.slow  # 24 Swin blocks: the build takes a while on a small CPU
def test_swinir_light_has_the_published_parameter_count(tmp_path: Path) -> None:
    arch = ZOO["SwinIR"]
    net, ref = build(tmp_path, arch), reference(arch, {}, seed=0)  # light x2
    assert count(net) == count(ref) == 910_152
    assert {k: v.shape for k, v in net.state_dict().items()} == {
        k: v.shape for k, v in ref.state_dict().items()
    }


def test_swinir_export_carries_the_index_and_the_masks_of_shifted_blocks(tmp_path: Path) -> None:
    net = build(tmp_path, ZOO["SwinIR"], **SWINIR_TINY)
    written = torch.load(export(net, tmp_path / "swinir.pth"), weights_only=True)
    masks = sorted(k for k in written if k.endswith("attn_mask"))
    assert masks == [f"layers.{g}.residual_group.blocks.1.attn_mask" for g in (0, 1)]
    assert written[masks[0]].shape == (16, 16, 16)  # (16 / 4)² windows of 4² tokens
    index = written["layers.0.residual_group.blocks.0.attn.relative_position_index"]
    assert index.dtype == torch.int64 and index.shape == (16, 16)
    assert not any("mean" in k for k in written)  # SwinIR's mean is not in its files


def test_swinir_uses_a_loaded_mask_at_its_size_and_computes_others(tmp_path: Path) -> None:
    """At img_size the network runs on the file's attn_mask (as SwinIR does); any other
    size, or a multiple of the window that is not square, gets its own mask."""
    arch = ZOO["SwinIR"]
    ref = reference(arch, SWINIR_TINY, seed=9)
    net = build(tmp_path, arch, **SWINIR_TINY)
    assert load_weights(net, ref.state_dict()).ok
    for size in [(16, 16), (8, 24), (24, 8), (13, 16)]:
        assert relative_difference(net, ref, size) <= TOL, size
    state = dict(ref.state_dict())
    key = "layers.1.residual_group.blocks.1.attn_mask"
    state[key] = torch.zeros_like(state[key])  # a mask that masks nothing
    assert load_weights(net, state).ok
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        at_size, other = net(x), net(torch.rand(1, 3, 8, 16))
    assert (at_size - ref(x)).abs().max() > 1e-4  # the file's mask was used …
    assert other.shape == (1, 3, 16, 32)  # … and only at its size


def test_swinir_checkpoint_for_another_size_names_the_mask(tmp_path: Path) -> None:
    arch = ZOO["SwinIR"]
    ref = reference(arch, {**SWINIR_TINY, "img_size": 32}, seed=10)
    net = build(tmp_path, arch, **SWINIR_TINY)
    with pytest.raises(WeightsError, match=r"blocks\.1\.attn_mask"):
        load_weights(net, ref.state_dict())


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"embed_dim": 10, "num_heads": 4}, "heads"),
        ({"img_size": 18}, "multiple of the window"),
        ({"scale": 5, "upsampler": "pixelshuffle"}, "scale_supported"),
    ],
)
def test_impossible_swinir_settings_are_spec_errors(
    tmp_path: Path, params: dict[str, Any], message: str
) -> None:
    with pytest.raises(engine.SpecError, match=message):
        build(tmp_path, ZOO["SwinIR"], **{**SWINIR_TINY, **params})


# ------------------------------------------------------------ NAFNet
def test_nafnet_gradients_are_those_of_layernorm2ds_own_backward(tmp_path: Path) -> None:
    """NAFNet's LayerNorm2d has a hand-written backward. It is the exact gradient, so
    autograd through Loom's layer norm trains NAFNet as the original does: the same
    gradient for every weight (float64; beta and gamma random, so every branch counts)."""
    arch = ZOO["NAFNet"]
    ref = reference(arch, arch.tiny, seed=11).double().train()
    net = build(tmp_path, arch, **arch.tiny).double().train().requires_grad_(True)
    assert load_weights(net, ref.state_dict()).ok
    x = torch.rand(2, 3, 20, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    for model in (net, ref):
        model(x.clone()).square().mean().backward()
    theirs = dict(ref.named_parameters())
    assert set(theirs) == {name for name, _ in net.named_parameters()}
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
        torch.testing.assert_close(p.grad, theirs[name].grad, rtol=1e-9, atol=1e-12, msg=name)


def test_nafnet_takes_any_size_as_the_original_does(tmp_path: Path) -> None:
    """Zero-padded to a multiple of 16 inside, cropped back: 1×1 works as well as 33×18."""
    arch = ZOO["NAFNet"]
    ref = reference(arch, arch.tiny, seed=12)
    net = build(tmp_path, arch, **arch.tiny)
    assert load_weights(net, ref.state_dict()).ok
    for size in [(1, 1), (16, 16), (33, 18), (7, 64)]:
        assert relative_difference(net, ref, size) <= TOL, size


def test_gray_nafnet_exports_as_a_one_channel_nafnet(tmp_path: Path) -> None:
    params = json.dumps({**NAFNET_TINY, "img_channel": 1})
    spec = tmp_path / "gray.yaml"
    spec.write_text(
        "spec: 1\nname: gray\nimports: [lib/nafnet.yaml]\nnetworks:\n"
        f"  G: {{use: NAFNet, inputs: {{x: 1}}, params: {params}, trainable: false}}\n",
        encoding="utf-8",
    )
    net = engine.build(spec)["G"].eval()
    randomize(net, seed=13)
    model = spandrel.ModelLoader().load_from_file(export(net, tmp_path / "gray.safetensors"))
    assert (model.architecture.id, model.input_channels, model.output_channels) == ("NAFNet", 1, 1)
    x = torch.rand(1, 1, 9, 23, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours, theirs = net(x), model.model.eval()(x)
    assert float((ours - theirs).abs().max() / (theirs.max() - theirs.min())) <= TOL


def test_a_nafnet_file_with_three_levels_is_refused_naming_the_keys(tmp_path: Path) -> None:
    """Loom's NAFNet has the four levels of every released model; a file with three
    is refused by name, not loaded half."""
    ref = NAFNet(width=4, middle_blk_num=1, enc_blk_nums=[1, 1, 1], dec_blk_nums=[1, 1, 1])
    net = build(tmp_path, ZOO["NAFNet"], **NAFNET_TINY)
    with pytest.raises(WeightsError, match=r"39 missing(.|\n)*encoders\.3\.0\.beta"):
        load_weights(net, ref.state_dict())


@pytest.mark.slow
def test_nafnet_learns_to_denoise(tmp_path: Path) -> None:
    """The shipped spec, shortened to a few CPU minutes, beats the noisy input."""
    from engine.train.runner import run

    overrides = [
        "train.iterations=400",
        "data.train.crop_size=48",
        "data.train.batch_size=4",
        "validation.every=200",
        "checkpoints.every=400",
        "logging.every=25",
    ]
    spec = ROOT / "specs" / "zoo" / "nafnet.yaml"
    run(spec, overrides, out=tmp_path / "run", stream=io.StringIO(), live=False)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    val = [r for r in records if "val/psnr" in r]
    for r in val:  # shown with -s; docs/zoo.md records these
        print(
            f"iter {r['iter']}: PSNR {r['val/psnr']:.2f} dB (noisy input "
            f"{r['val/psnr_input']:.2f}), SSIM {r['val/ssim']:.4f} ({r['val/ssim_input']:.4f})"
        )
    assert val[-1]["val/psnr"] > val[-1]["val/psnr_input"] + 1.0
    assert val[-1]["val/ssim"] > val[-1]["val/ssim_input"]

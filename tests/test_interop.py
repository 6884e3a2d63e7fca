"""Weights move between Loom and the tools the community uses.

chaiNNer's loader (spandrel) reads what Loom exports and computes the same image; Loom
loads what spandrel's reference architectures hold, in ESRGAN's old and new layouts;
and a file that does not fit, or that carries pickled code, is reported or refused.
Every weight is made here; nothing is downloaded.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import engine
from engine.compile.weights import LoadReport, ShapePair, WeightsError, export, load_weights

spandrel = pytest.importorskip("spandrel", reason="interop tests need the dev extra (spandrel)")
from spandrel.architectures.Compact import Compact  # noqa: E402
from spandrel.architectures.ESRGAN import ESRGAN  # noqa: E402

TOL = 1e-5
NF, NB, GC = 16, 2, 32  # spandrel's RRDBNet always has growth 32
LIBS = {"RRDBNet": "esrgan.yaml", "SRVGGNetCompact": "srvgg.yaml"}


def build(tmp_path: Path, block: str, **params: Any) -> nn.Module:
    """A Loom network from a shipped library block, with random weights, in eval mode."""
    spec = tmp_path / "interop.yaml"
    spec.write_text(
        f"spec: 1\nname: interop\nimports: [lib/{LIBS[block]}]\nnetworks:\n"
        f"  G: {{use: {block}, params: {json.dumps(params)}, trainable: false}}\n",
        encoding="utf-8",
    )
    net = engine.build(spec)["G"].eval()
    randomize(net)
    return net


def randomize(net: nn.Module, seed: int = 0) -> None:
    """Every parameter random (PReLU slopes included), so that no key goes unchecked."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)


def same_output(a: nn.Module, b: nn.Module, size: int = 16) -> float:
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ya, yb = a(x), b(x)
    assert ya.shape == yb.shape
    return float((ya - yb).abs().max())


# ------------------------------------------------------------ Loom → spandrel
@pytest.mark.parametrize("scale", [1, 2, 4, 8])
@pytest.mark.parametrize(
    ("layout", "suffix"), [("esrgan", ".pth"), ("esrgan", ".safetensors"), ("esrgan_old", ".pth")]
)
def test_exported_rrdbnet_loads_in_spandrel(
    tmp_path: Path, scale: int, layout: str, suffix: str
) -> None:
    net = build(tmp_path, "RRDBNet", nf=NF, nb=NB, gc=GC, scale=scale)
    path = export(net, tmp_path / f"G{suffix}", layout)  # type: ignore[arg-type]
    model = spandrel.ModelLoader().load_from_file(path)
    assert model.architecture.id == "ESRGAN"
    assert (model.scale, model.input_channels, model.output_channels) == (scale, 3, 3)
    assert same_output(net, model.model.eval()) <= TOL


@pytest.mark.parametrize(
    ("num_conv", "scale", "suffix"),
    [(16, 4, ".pth"), (32, 4, ".safetensors"), (16, 2, ".safetensors"), (16, 1, ".pth")],
)
def test_exported_compact_loads_in_spandrel(
    tmp_path: Path, num_conv: int, scale: int, suffix: str
) -> None:
    net = build(tmp_path, "SRVGGNetCompact", nf=NF, num_conv=num_conv, scale=scale)
    path = export(net, tmp_path / f"G{suffix}", "compact")
    model = spandrel.ModelLoader().load_from_file(path)
    assert model.architecture.id == "Compact"
    assert (model.scale, model.input_channels, model.output_channels) == (scale, 3, 3)
    assert model.model.num_conv == num_conv
    assert same_output(net, model.model.eval()) <= TOL


def test_exported_pth_is_a_plain_dict_of_tensors(tmp_path: Path) -> None:
    net = build(tmp_path, "SRVGGNetCompact", nf=8, num_conv=16)
    state = torch.load(export(net, tmp_path / "G.pth", "compact"), weights_only=True)
    assert type(state) is dict
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert list(state)[:3] == ["body.0.weight", "body.0.bias", "body.1.weight"]
    assert state["body.1.weight"].shape == (8,)  # one PReLU slope per channel
    assert state["body.34.weight"].shape == (3 * 4**2, 8, 3, 3)


# ------------------------------------------------------------ spandrel → Loom
def old_to_new_esrgan(reference: ESRGAN, state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The new layout of a spandrel (old layout) RRDBNet state dict.

    Written for the test from the reference's own module order, independently of
    engine.compile.weights: first conv, upsample-then-conv stages, then HR and last conv.
    """
    layers = list(reference.model)
    convs = [i for i, m in enumerate(layers) if isinstance(m, nn.Conv2d)]
    ups = [i + 1 for i, m in enumerate(layers) if isinstance(m, nn.Upsample)]
    nb = len(layers[1].sub) - 1
    names = {0: "conv_first", convs[-2]: "conv_hr", convs[-1]: "conv_last"}
    names.update({i: f"conv_up{k}" for k, i in enumerate(ups, 1)})
    new = {}
    for key, value in state.items():
        if m := re.fullmatch(r"model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(\w+)", key):
            new[f"body.{m[1]}.rdb{m[2]}.conv{m[3]}.{m[4]}"] = value
        elif m := re.fullmatch(rf"model\.1\.sub\.{nb}\.(\w+)", key):
            new[f"conv_body.{m[1]}"] = value
        else:
            index, param = re.fullmatch(r"model\.(\d+)\.(\w+)", key).groups()  # type: ignore[union-attr]
            new[f"{names[int(index)]}.{param}"] = value
    return new


def spandrel_esrgan(scale: int) -> ESRGAN:
    """spandrel's RRDBNet as Real-ESRGAN builds it: x1 and x2 unshuffle into an x4 trunk."""
    shuffle = {1: 4, 2: 2}.get(scale)
    reference = ESRGAN(
        in_nc=3 * (shuffle or 1) ** 2,
        out_nc=3,
        num_filters=NF,
        num_blocks=NB,
        scale=scale * (shuffle or 1),
        shuffle_factor=shuffle,
    )
    randomize(reference, seed=scale)
    return reference.eval()


@pytest.mark.parametrize("scale", [1, 2, 4, 8])
def test_spandrel_esrgan_weights_load_in_both_layouts(tmp_path: Path, scale: int) -> None:
    reference = spandrel_esrgan(scale)
    old = reference.state_dict()
    assert "model.0.weight" in old  # spandrel keeps the original repository's layout
    new = old_to_new_esrgan(reference, old)
    net = build(tmp_path, "RRDBNet", nf=NF, nb=NB, gc=GC, scale=scale)
    torch.save(old, tmp_path / "old.pth")
    for source, layout in ((tmp_path / "old.pth", "esrgan_old"), (new, "loom")):
        randomize(net, seed=99)
        report = load_weights(net, source)
        assert report.ok and report.layout == layout
        assert len(report.loaded) == len(old)
        assert same_output(net, reference) <= TOL


def test_bsrgan_names_load_too(tmp_path: Path) -> None:
    reference = spandrel_esrgan(4)
    new = old_to_new_esrgan(reference, reference.state_dict())
    renames = [
        (r"^body\.(\d+)\.rdb", r"RRDB_trunk.\1.RDB"),
        (r"^conv_body\.", "trunk_conv."),
        (r"^conv_up", "upconv"),
        (r"^conv_hr\.", "HRconv."),
    ]
    bsrgan = {}
    for key, value in new.items():
        for pattern, replacement in renames:
            key = re.sub(pattern, replacement, key)
        bsrgan[key] = value
    assert {"RRDB_trunk.1.RDB3.conv5.bias", "trunk_conv.weight", "HRconv.bias"} <= set(bsrgan)
    net = build(tmp_path, "RRDBNet", nf=NF, nb=NB, gc=GC)
    assert load_weights(net, bsrgan).layout == "bsrgan"
    assert same_output(net, reference) <= TOL


@pytest.mark.parametrize("num_conv", [16, 32])
def test_spandrel_compact_weights_load(tmp_path: Path, num_conv: int) -> None:
    reference = Compact(num_feat=NF, num_conv=num_conv, upscale=4)
    randomize(reference, seed=num_conv)
    net = build(tmp_path, "SRVGGNetCompact", nf=NF, num_conv=num_conv)
    torch.save({"params": reference.state_dict()}, tmp_path / "compact.pth")  # as released
    assert load_weights(net, tmp_path / "compact.pth").ok
    assert same_output(net, reference.eval()) <= TOL


# ------------------------------------------------------ reports and refusals
def test_a_file_that_does_not_fit_is_refused_then_loaded_in_part(tmp_path: Path) -> None:
    # An old-style x2 ESRGAN (one upsampling stage: model.3, HR conv model.5, last
    # conv model.7) against Loom's x2, which unshuffles into two stages.
    reference = ESRGAN(in_nc=3, out_nc=3, num_filters=NF, num_blocks=NB, scale=2)
    randomize(reference, seed=5)
    state = {**reference.state_dict(), "extra.weight": torch.zeros(2, 3)}
    net = build(tmp_path, "RRDBNet", nf=NF, nb=NB, gc=GC, scale=2)
    before = {k: v.clone() for k, v in net.state_dict().items()}

    with pytest.raises(WeightsError) as refused:
        load_weights(net, state)
    message = str(refused.value)
    assert "2 missing, 1 unexpected, 1 of another shape" in message
    assert "conv_up2.weight (16, 16, 3, 3)" in message
    assert "extra.weight (2, 3)" in message
    assert "conv_first.weight: (16, 12, 3, 3) vs (16, 3, 3, 3)" in message
    assert "strict=False" in message
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # untouched

    report = load_weights(net, state, strict=False)
    assert report.layout == "esrgan_old"
    assert report.missing == {"conv_up2.weight": (16, 16, 3, 3), "conv_up2.bias": (16,)}
    assert report.unexpected == {"extra.weight": (2, 3)}
    assert report.mismatched == {"conv_first.weight": ShapePair((16, 12, 3, 3), (16, 3, 3, 3))}
    assert torch.equal(net.conv_hr.weight, state["model.5.weight"])
    assert torch.equal(net.conv_last.bias, state["model.7.bias"])
    assert torch.equal(net.conv_first.bias, state["model.0.bias"])  # same shape: loaded
    assert torch.equal(net.conv_first.weight, before["conv_first.weight"])


def test_ema_weights_are_preferred_and_wrappers_removed(tmp_path: Path) -> None:
    net = build(tmp_path, "SRVGGNetCompact", nf=8, num_conv=16)
    ema = {k: torch.full_like(v, 0.5) for k, v in net.state_dict().items()}
    raw = {k: torch.zeros_like(v) for k, v in net.state_dict().items()}
    torch.save({"params": raw, "params_ema": ema}, tmp_path / "basicsr.pth")
    assert load_weights(net, tmp_path / "basicsr.pth").ok
    assert torch.equal(net.get_parameter("body.34.bias"), ema["body.34.bias"])
    parallel = {"state_dict": {f"module.{k}": v for k, v in raw.items()}}
    assert isinstance(load_weights(net, parallel), LoadReport)
    assert torch.equal(net.get_parameter("body.34.bias"), raw["body.34.bias"])


EXECUTED: list[str] = []


def _record_execution() -> None:
    """What a malicious file would run; here it only leaves a trace."""
    EXECUTED.append("ran")


class Payload:
    def __reduce__(self) -> tuple[Any, ...]:
        return (_record_execution, ())


def test_a_file_with_pickled_code_is_refused_without_running_it(tmp_path: Path) -> None:
    net = build(tmp_path, "SRVGGNetCompact", nf=8, num_conv=16)
    path = tmp_path / "evil.pth"
    torch.save({**net.state_dict(), "payload": Payload()}, path)
    with pytest.raises(WeightsError, match="refused as unsafe: it would import and run"):
        load_weights(net, path, strict=False)
    assert EXECUTED == []
    torch.load(path, weights_only=False)  # the file really does carry code
    assert EXECUTED == ["ran"]


def test_export_refuses_a_layout_the_network_does_not_have(tmp_path: Path) -> None:
    net = build(tmp_path, "SRVGGNetCompact", nf=8, num_conv=16)
    with pytest.raises(WeightsError, match=r"layout 'esrgan' is for an RRDBNet.*'conv_first"):
        export(net, tmp_path / "G.pth", "esrgan")
    with pytest.raises(WeightsError, match=r"unknown weight file type '\.bin'"):
        load_weights(net, tmp_path / "G.bin")


# ------------------------------------------------- old-style spectral norm (Real-ESRGAN)
def old_style_unet_d(nf: int) -> nn.ModuleDict:
    """Real-ESRGAN's U-Net discriminator layers, spectral norm applied the old way
    (torch.nn.utils.spectral_norm: keys convK.weight_orig, weight_u, weight_v)."""
    sn = nn.utils.spectral_norm
    widths = [(3, nf, 3), (nf, 2 * nf, 4), (2 * nf, 4 * nf, 4), (4 * nf, 8 * nf, 4)]
    widths += [(8 * nf, 4 * nf, 3), (4 * nf, 2 * nf, 3), (2 * nf, nf, 3), (nf, nf, 3)]
    widths += [(nf, nf, 3), (nf, 1, 3)]
    layers = {}
    for k, (cin, cout, kernel) in enumerate(widths):
        stride = 2 if kernel == 4 else 1
        conv = nn.Conv2d(cin, cout, kernel, stride, 1, bias=k in (0, 9))
        layers[f"conv{k}"] = conv if k in (0, 9) else sn(conv)
    return nn.ModuleDict(layers)


def old_style_forward(d: nn.ModuleDict, x: torch.Tensor) -> torch.Tensor:
    def act(t: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.leaky_relu(t, 0.2)

    def up(t: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(t, scale_factor=2, mode="bilinear")

    x0 = act(d["conv0"](x))
    x1 = act(d["conv1"](x0))
    x2 = act(d["conv2"](x1))
    x3 = act(d["conv3"](x2))
    x4 = act(d["conv4"](up(x3))) + x2
    x5 = act(d["conv5"](up(x4))) + x1
    x6 = act(d["conv6"](up(x5))) + x0
    return d["conv9"](act(d["conv8"](act(d["conv7"](x6)))))


def test_old_style_spectral_norm_weights_load(tmp_path: Path) -> None:
    torch.manual_seed(0)
    reference = old_style_unet_d(4)
    for _ in range(3):  # power iterations move u and v away from their start
        old_style_forward(reference.train(), torch.rand(1, 3, 16, 16))
    path = tmp_path / "net_d.pth"
    torch.save({"params": reference.state_dict()}, path)  # BasicSR's container
    assert "conv1.weight_orig" in reference.state_dict()
    spec = tmp_path / "d.yaml"
    spec.write_text(
        "spec: 1\nname: d\nimports: [lib/discriminators.yaml]\nnetworks:\n"
        "  D: {use: unet, params: {nf: 4}, inputs: {x: 3}}\n",
        encoding="utf-8",
    )
    loom = engine.build(spec)["D"].eval()
    report = load_weights(loom, path, strict=True)
    assert report.ok and "conv1.parametrizations.weight.original" in report.loaded
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loom(x), old_style_forward(reference.eval(), x))

"""SRFlow's published layout: Loom's network computes what SRFlow's does.

A hand-written SRFlow x4 in plain PyTorch (``benchmarks/reference_srflow.py``, SRFlow's
own module names and quirks) is built tiny with random weights and saved; the file
loads into Loom's ``specs/srflow.yaml`` through the ``pretrained:`` the spec documents
for SRFlow's checkpoint, and both networks give the same latents, log-determinant,
NLL and images, forward and in reverse. ESRGAN generators in the new and the old layout
load into the encoder through the spec's other documented key map. The same holds at
x8 (``specs/srflow_x8.yaml``: L 4, two splits), where SRFlow's own RRDB file loads into
the encoder.
"""

from __future__ import annotations

import copy
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from ruamel.yaml import YAML
from torch import nn

import engine
from blocks.builtin.losses_flow import FlowNLL
from engine.compile.weights import esrgan_to_old, load_weights

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from reference_srflow import SRFlowNet  # noqa: E402

SRFLOW = ROOT / "specs" / "srflow.yaml"
SRFLOW_X8 = ROOT / "specs" / "srflow_x8.yaml"
ESRGAN = ROOT / "specs" / "esrgan.yaml"
SIZES = {"nf": 8, "nb": 23, "gc": 4, "K": 2, "hidden": 16}
TINY = [
    f"networks.G.nodes.RRDB.nf={SIZES['nf']}",
    f"networks.G.nodes.RRDB.gc={SIZES['gc']}",
    f"networks.G.nodes.flowUpsamplerNet.K={SIZES['K']}",
    f"networks.G.nodes.flowUpsamplerNet.hidden={SIZES['hidden']}",
    "data.train.crop_size=16",
    "data.train.batch_size=2",
]
#: SRFlow x4 at full size (nf 64, nb 23, K 16, hidden 64), counted on the reference.
SRFLOW_PARAMETERS = 39_541_811
#: Of which Loom leaves out what the flow never reads: the RRDB's SR head (upconv2,
#: HRconv, conv_last) and flowUpsamplerNet.f.
UNREAD_PARAMETERS = 352_163
UNREAD = ("RRDB.upconv2.", "RRDB.HRconv.", "RRDB.conv_last.", "flowUpsamplerNet.f.")


def documented_pretrained(spec: Path = SRFLOW) -> dict[str, dict[str, Any]]:
    """The ``pretrained:`` blocks a spec shows in its comments, by file name."""
    lines = spec.read_text(encoding="utf-8").splitlines()
    found = {}
    for i, line in enumerate(lines):
        head = re.fullmatch(r"\s*#( *)pretrained:\s*", line)
        if head is None:
            continue
        body = []
        for following in lines[i + 1 :]:
            item = re.fullmatch(r"\s*#( *)(\S.*)", following)
            if item is None or len(item[1]) <= len(head[1]):
                break
            body.append(" " * (len(item[1]) - len(head[1])) + item[2])
        block = YAML(typ="safe").load("\n".join(body))
        found[Path(block["path"]).name] = block
    return found


def pretrained_settings(
    path: Path, documented: str, spec: Path = SRFLOW, tiny: list[str] = TINY
) -> Any:
    """The spec's own ``pretrained:`` settings for the documented block, set to ``path``."""
    block = dict(documented_pretrained(spec)[documented], path=str(path))
    loaded = engine.load_spec(spec, [*tiny, f"+networks.G.pretrained={json.dumps(block)}"])
    return loaded.settings.pretrained["G"]


def _perturbed(module: nn.Module, scale: float = 0.01, seed: int = 1) -> nn.Module:
    """Every parameter moved: zero-started convs and actnorms do something, and actnorm
    biases are non-zero (what a trained file holds)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


@pytest.fixture(scope="module")
def loom_g() -> nn.Module:
    return engine.build(SRFLOW, TINY)["G"]


@pytest.fixture(scope="module")
def reference() -> SRFlowNet:
    torch.manual_seed(0)
    return _perturbed(SRFlowNet(**SIZES)).eval()  # type: ignore[return-value]


@pytest.fixture(scope="module")
def loaded(
    loom_g: nn.Module, reference: SRFlowNet, tmp_path_factory: pytest.TempPathFactory
) -> nn.Module:
    """Loom's G with the reference's weights, read from a file as SRFlow saves one."""
    path = tmp_path_factory.mktemp("srflow") / "SRFlow_tiny.pth"
    torch.save(reference.state_dict(), path)
    settings = pretrained_settings(path, "SRFlow_DF2K_4X.pth")
    g = copy.deepcopy(loom_g)
    report = load_weights(g, settings.path, strict=settings.strict, key_map=settings.key_map)
    assert report.ok and report.renamed == 8  # the SR head's and f's weights and biases
    return g.eval()


def _inputs(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    hr = torch.rand(2, 3, 16, 16, generator=g, dtype=dtype)
    return hr, torch.rand(2, 3, 4, 4, generator=g, dtype=dtype)


def test_the_layouts_are_srflows_less_what_the_flow_never_reads(
    loom_g: nn.Module, reference: SRFlowNet
) -> None:
    ours = {k for k in loom_g.state_dict() if not k.endswith(".initialized")}
    theirs = set(reference.state_dict())
    assert theirs - ours == {k for k in theirs if k.startswith(UNREAD)}
    assert ours <= theirs
    # Loom's one extra key per actnorm: its initialized flag (implied when loading).
    assert all(k.endswith("actnorm.initialized") for k in set(loom_g.state_dict()) - ours)


@pytest.mark.parametrize(
    ("dtype", "tolerance"), [(torch.float32, 1e-6), (torch.float64, 1e-12)], ids=["f32", "f64"]
)
def test_loom_computes_what_srflow_computes(
    loaded: nn.Module, reference: SRFlowNet, dtype: torch.dtype, tolerance: float
) -> None:
    g, ref = copy.deepcopy(loaded).to(dtype), copy.deepcopy(reference).to(dtype)
    hr, lr = _inputs(dtype)
    with torch.no_grad():
        z, z1, logdet = ref(hr, lr)
        out = g(hr=hr, lr=lr)
        # Same operations in the same order: the latents are bit for bit SRFlow's; the
        # log-determinant sums ~60 terms in another order (float rounding).
        assert torch.equal(out["z"], z) and torch.equal(out["z1"], z1)
        assert (out["logdet"] - logdet).abs().max() <= tolerance * logdet.abs().max()
        nll = FlowNLL()(out["z"], out["logdet"], hr)
        assert nll.item() == pytest.approx(ref.nll(hr, lr).mean().item(), rel=tolerance)
        back = g(lr=lr, z=z, z1=z1, reverse=True)["hr"]
        assert torch.equal(back, ref.reverse(lr, z, z1))
        assert (back - hr).abs().max() <= 10 * tolerance  # and it is the HR image again
        mode = g(lr=lr, reverse=True, heat=0.0)["hr"]
        assert torch.isfinite(mode).all()
        assert torch.equal(mode, ref.reverse(lr, heat=0.0))


def test_actnorms_initialize_as_srflows_in_training_mode_only(loom_g: nn.Module) -> None:
    torch.manual_seed(4)
    fresh = SRFlowNet(**SIZES).double()  # actnorms at zero: they initialize on a batch
    state = dict(fresh.state_dict())
    g = copy.deepcopy(loom_g).double()
    for key in g.state_dict():
        if key.endswith(".initialized"):
            state[key] = torch.tensor(False)  # an untrained file: not initialized
    load_weights(g, state, strict=False)
    hr, lr = _inputs(torch.float64)
    with torch.no_grad():
        g.eval()
        g(hr=hr, lr=lr)  # eval mode: nothing initializes, in either
        fresh.eval()
        fresh(hr, lr)
        assert not any(bool(v) for k, v in g.state_dict().items() if k.endswith("initialized"))
        g.train()
        fresh.train()
        out = g(hr=hr, lr=lr)
        z, z1, logdet = fresh(hr, lr)
    assert torch.allclose(out["z"], z, rtol=0, atol=1e-12)
    assert torch.allclose(out["z1"], z1, rtol=0, atol=1e-12)
    assert torch.allclose(out["logdet"], logdet, rtol=1e-12, atol=0)
    ours, theirs = g.state_dict(), fresh.state_dict()
    norms = [k for k in theirs if ".actnorm." in k]
    assert len(norms) == 2 * (2 * 3 + SIZES["K"] * 3 * 5)  # steps' and coupling nets'
    for key in norms:
        assert torch.allclose(ours[key], theirs[key], rtol=1e-10, atol=1e-12), key
        assert theirs[key].abs().sum() > 0, key  # it did initialize


def test_full_size_parameter_counts() -> None:
    ours = engine.build(SRFLOW, ["data.train.crop_size=16"], device="meta")["G"]
    theirs = SRFlowNet()  # nf 64, nb 23, gc 32, K 16, hidden 64
    counted = sum(p.numel() for p in theirs.parameters())
    unread = sum(p.numel() for k, p in theirs.named_parameters() if k.startswith(UNREAD))
    assert (counted, unread) == (SRFLOW_PARAMETERS, UNREAD_PARAMETERS)
    assert sum(p.numel() for p in ours.parameters()) == SRFLOW_PARAMETERS - UNREAD_PARAMETERS
    layers = [ours.flowUpsamplerNet.layers, theirs.flowUpsamplerNet.layers]
    assert [len(list(m.children())) for m in layers] == [58, 58]


@pytest.mark.parametrize("layout", ["new", "old"])
def test_an_esrgan_generator_loads_into_the_encoder(
    loom_g: nn.Module, layout: str, tmp_path: Path
) -> None:
    esrgan = engine.build(
        ESRGAN,
        [
            f"networks.G.params.nf={SIZES['nf']}",
            f"networks.G.params.gc={SIZES['gc']}",
            "networks.D.params.nf=4",
            "data.train.crop_size=32",
        ],
    )["G"]
    _perturbed(esrgan, scale=0.1, seed=5)
    state = {k: v.clone() for k, v in esrgan.state_dict().items()}
    path = tmp_path / f"RRDB_ESRGAN_x4_{layout}.pth"
    torch.save(state if layout == "new" else esrgan_to_old(state), path)
    if layout == "old":
        assert "model.1.sub.0.RDB1.conv1.0.weight" in torch.load(path, weights_only=True)
    settings = pretrained_settings(path, "RRDB_ESRGAN_x4.pth")
    g = copy.deepcopy(loom_g)
    report = load_weights(g, settings.path, strict=settings.strict, key_map=settings.key_map)
    assert not report.unexpected and not report.mismatched
    assert all(k.startswith("flowUpsamplerNet.") for k in report.missing)
    renames = {
        "conv_first.": "RRDB.conv_first.",
        "conv_body.": "RRDB.trunk_conv.",
        "conv_up1.": "RRDB.upconv1.",
    }
    loaded = g.state_dict()
    encoder = [k for k in loaded if k.startswith("RRDB.")]
    for key, value in state.items():
        if key.startswith(("conv_up2.", "conv_hr.", "conv_last.")):
            continue
        body = re.fullmatch(r"body\.(\d+)\.rdb([1-3])\.(.*)", key)
        if body is not None:
            ours = f"RRDB.RRDB_trunk.{body[1]}.RDB{body[2]}.{body[3]}"
        else:
            old = next(p for p in renames if key.startswith(p))
            ours = renames[old] + key.removeprefix(old)
        assert torch.equal(loaded[ours], value), ours
        encoder.remove(ours)
    assert encoder == []  # every weight of the encoder came from the file


# ------------------------------------------------------------------------- x8
SIZES_X8 = {"nf": 8, "nb": 8, "gc": 4, "K": 2, "hidden": 16}  # the taps end at block 7
TINY_X8 = [
    f"networks.G.nodes.RRDB.nf={SIZES_X8['nf']}",
    f"networks.G.nodes.RRDB.nb={SIZES_X8['nb']}",
    f"networks.G.nodes.RRDB.gc={SIZES_X8['gc']}",
    f"networks.G.nodes.flowUpsamplerNet.K={SIZES_X8['K']}",
    f"networks.G.nodes.flowUpsamplerNet.hidden={SIZES_X8['hidden']}",
    "data.train.crop_size=32",
    "data.train.batch_size=2",
]
#: SRFlow x8 at full size, counted on the reference; at x8 the SR head that the flow
#: never reads is upconv3, HRconv and conv_last (upconv2 gives level 1's features).
SRFLOW_X8_PARAMETERS = 50_821_891
UNREAD_X8 = ("RRDB.upconv3.", "RRDB.HRconv.", "RRDB.conv_last.", "flowUpsamplerNet.f.")


@pytest.fixture(scope="module")
def loom_x8() -> nn.Module:
    return engine.build(SRFLOW_X8, TINY_X8)["G"]


@pytest.fixture(scope="module")
def reference_x8() -> SRFlowNet:
    torch.manual_seed(6)
    return _perturbed(SRFlowNet(**SIZES_X8, scale=8), seed=7).eval()  # type: ignore[return-value]


def _inputs_x8(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(8)
    hr = torch.rand(2, 3, 32, 32, generator=g, dtype=dtype)  # four squeezes: 32/16 = 2
    return hr, torch.rand(2, 3, 4, 4, generator=g, dtype=dtype)


def test_the_x8_layout_is_srflows_less_what_the_flow_never_reads(
    loom_x8: nn.Module, reference_x8: SRFlowNet
) -> None:
    ours = {k for k in loom_x8.state_dict() if not k.endswith(".initialized")}
    theirs = set(reference_x8.state_dict())
    assert theirs - ours == {k for k in theirs if k.startswith(UNREAD_X8)}
    assert ours <= theirs


@pytest.mark.parametrize(
    ("dtype", "tolerance"), [(torch.float32, 1e-6), (torch.float64, 1e-12)], ids=["f32", "f64"]
)
def test_loom_computes_what_srflow_computes_at_x8(
    loom_x8: nn.Module,
    reference_x8: SRFlowNet,
    tmp_path: Path,
    dtype: torch.dtype,
    tolerance: float,
) -> None:
    path = tmp_path / "SRFlow_tiny_8X.pth"
    torch.save(reference_x8.state_dict(), path)
    settings = pretrained_settings(path, "SRFlow_DF2K_8X.pth", SRFLOW_X8, TINY_X8)
    g = copy.deepcopy(loom_x8)
    report = load_weights(g, settings.path, strict=settings.strict, key_map=settings.key_map)
    assert report.ok and report.renamed == 8  # upconv3's, HRconv's, conv_last's and f's
    g, ref = g.eval().to(dtype), copy.deepcopy(reference_x8).to(dtype)
    hr, lr = _inputs_x8(dtype)
    with torch.no_grad():
        z, z1, z2, logdet = ref(hr, lr)
        out = g(hr=hr, lr=lr)
        assert (z.shape, z1.shape, z2.shape) == ((2, 192, 2, 2), (2, 6, 16, 16), (2, 12, 8, 8))
        assert torch.equal(out["z"], z) and torch.equal(out["z1"], z1)
        assert torch.equal(out["z2"], z2)
        assert (out["logdet"] - logdet).abs().max() <= tolerance * logdet.abs().max()
        nll = FlowNLL()(out["z"], out["logdet"], hr)
        assert nll.item() == pytest.approx(ref.nll(hr, lr).mean().item(), rel=tolerance)
        back = g(lr=lr, z=z, z1=z1, z2=z2, reverse=True)["hr"]
        assert torch.equal(back, ref.reverse(lr, z, z1, z2))
        assert (back - hr).abs().max() <= 10 * tolerance
        mode = g(lr=lr, reverse=True, heat=0.0)["hr"]
        assert torch.isfinite(mode).all() and mode.shape == hr.shape
        assert torch.equal(mode, ref.reverse(lr, heat=0.0))


def test_the_tiny_x8_flow_inverts(loom_x8: nn.Module) -> None:
    g = copy.deepcopy(loom_x8)
    torch.manual_seed(9)
    hr, lr = _inputs_x8(torch.float32)
    g.train()
    g(hr=hr, lr=lr)  # the actnorms initialize
    g.eval()
    _perturbed(g, seed=10)
    with torch.no_grad():
        out = g(hr=hr, lr=lr)
        back = g(lr=lr, z=out["z"], z1=out["z1"], z2=out["z2"], reverse=True)["hr"]
        assert (back - hr).abs().max().item() <= 1e-4  # float32 through 78 layers
        mode = [g(lr=lr, reverse=True, heat=0.0)["hr"] for _ in range(2)]
        assert torch.equal(mode[0], mode[1])


@pytest.mark.parametrize("layout", ["srflow", "esrgan", "esrgan_old"])
def test_an_rrdb_file_loads_into_the_x8_encoder(
    loom_x8: nn.Module, layout: str, tmp_path: Path
) -> None:
    """SRFlow's RRDB_DF2K_8X.pth (its RRDBNet's names) and an x8 ESRGAN generator in
    either layout, through the one key map specs/srflow_x8.yaml documents."""
    torch.manual_seed(11)
    rrdb = _perturbed(SRFlowNet(**SIZES_X8, scale=8).RRDB, seed=12)
    theirs = {k: v.clone() for k, v in rrdb.state_dict().items()}
    # The same tensors in ESRGAN's names (BasicSR's layout, then the original's).
    renames = {"trunk_conv": "conv_body", "HRconv": "conv_hr"}
    esrgan = {}
    for key, value in theirs.items():
        module, _, param = key.rpartition(".")
        if body := re.fullmatch(r"RRDB_trunk\.(\d+)\.RDB([1-3])\.(conv[1-5])", module):
            module = f"body.{body[1]}.rdb{body[2]}.{body[3]}"
        elif up := re.fullmatch(r"upconv([1-3])", module):
            module = f"conv_up{up[1]}"
        esrgan[f"{renames.get(module, module)}.{param}"] = value
    files = {"srflow": theirs, "esrgan": esrgan, "esrgan_old": esrgan_to_old(esrgan)}
    path = tmp_path / "RRDB_DF2K_8X.pth"
    torch.save(files[layout], path)
    settings = pretrained_settings(path, "RRDB_DF2K_8X.pth", SRFLOW_X8, TINY_X8)
    g = copy.deepcopy(loom_x8)
    report = load_weights(g, settings.path, strict=settings.strict, key_map=settings.key_map)
    assert not report.unexpected and not report.mismatched
    assert all(k.startswith("flowUpsamplerNet.") for k in report.missing)
    loaded = g.state_dict()
    for key, value in theirs.items():
        if key.startswith(("upconv3.", "HRconv.", "conv_last.")):
            assert f"RRDB.{key}" not in loaded
        else:
            assert torch.equal(loaded[f"RRDB.{key}"], value), key


def test_full_size_x8_layout_and_parameter_counts() -> None:
    ours = engine.build(SRFLOW_X8, ["data.train.crop_size=32"], device="meta")["G"]
    with torch.device("meta"):
        theirs = SRFlowNet(scale=8)  # nf 64, nb 23, gc 32, K 16, hidden 64
    counted = sum(p.numel() for p in theirs.parameters())
    unread = sum(p.numel() for k, p in theirs.named_parameters() if k.startswith(UNREAD_X8))
    assert (counted, unread) == (SRFLOW_X8_PARAMETERS, UNREAD_PARAMETERS)
    assert sum(p.numel() for p in ours.parameters()) == SRFLOW_X8_PARAMETERS - UNREAD_PARAMETERS
    keys = set(ours.state_dict())
    assert {k for k in keys if not k.endswith(".initialized")} <= set(theirs.state_dict())
    # SRFlow's ModuleList at L 4: 4 × (squeeze, 2 transitions, 16 steps) + 2 splits.
    layers = {int(k.split(".layers.")[1].split(".")[0]) for k in keys if ".layers." in k}
    assert layers == set(range(78)) - {0, 20, 40, 59}  # the squeezes hold nothing
    assert len(theirs.flowUpsamplerNet.layers) == 78
    for split in (19, 39):
        assert f"flowUpsamplerNet.layers.{split}.conv.logs" in keys
    # Level 4 (192 channels) reads fea_up0; level 3 (48) the LR features.
    assert ours.get_submodule("flowUpsamplerNet.layers.77.invconv").weight.shape == (192, 192)
    assert ours.get_submodule("flowUpsamplerNet.layers.58.invconv").weight.shape == (48, 48)

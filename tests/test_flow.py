"""Normalizing flows: the invertible blocks, ``flow:`` networks, reverse calls, the NLL.

Every block is checked for an exact inverse and for a log-determinant equal to the
log-abs-determinant of its Jacobian computed by autograd; SRFlow's network (tiny) for
the same, and the grammar that writes it (side inputs of repeats and chain items, named
chain items, copies of a repeat) for what it builds and what it refuses.
"""

from __future__ import annotations

import copy
import math
import textwrap
from pathlib import Path

import pytest
import torch
from test_compile import SMALL
from torch import nn

import engine
from blocks.builtin.flow import (
    ActNorm,
    AffineCoupling,
    FeatureAffine,
    FlowSplit,
    InvConv1x1,
    Squeeze,
)
from blocks.builtin.losses_flow import FlowNLL
from engine.spec.diagnostics import SpecError

ROOT = Path(__file__).resolve().parents[1]
SRFLOW = ROOT / "specs" / "srflow.yaml"
TINY_SRFLOW = [
    "networks.G.nodes.RRDB.nf=4",
    "networks.G.nodes.RRDB.gc=2",
    "networks.G.nodes.flowUpsamplerNet.K=2",
    "networks.G.nodes.flowUpsamplerNet.hidden=8",
    "data.train.crop_size=16",
    "data.train.batch_size=2",
]


def _perturbed(module: nn.Module, seed: int = 0, scale: float = 0.05) -> nn.Module:
    """Away from the identity a zero-initialized flow step starts at."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


def _cases() -> list[tuple[str, nn.Module, tuple[int, ...], tuple[int, ...] | None]]:
    """(name, block, x shape, condition shape) — tiny, so the Jacobian is cheap."""
    return [
        ("actnorm", ActNorm(in_ch=4), (2, 4, 2, 2), None),
        ("invconv", InvConv1x1(in_ch=4), (2, 4, 2, 2), None),
        ("invconv_lu", InvConv1x1(in_ch=4, lu=True), (2, 4, 2, 2), None),
        ("coupling", AffineCoupling(in_chs=[4, 3], hidden=4), (2, 4, 2, 2), (2, 3, 2, 2)),
        (
            "coupling_features",
            AffineCoupling(in_chs=[4, 3], hidden=4, features=True),
            (2, 4, 2, 2),
            (2, 3, 2, 2),
        ),
        ("coupling_alone", AffineCoupling(in_chs=[5], hidden=4), (2, 5, 2, 2), None),
        ("feature_affine", FeatureAffine(in_chs=[4, 3], hidden=4), (2, 4, 2, 2), (2, 3, 2, 2)),
        ("squeeze", Squeeze(), (2, 2, 4, 4), None),
        ("split", FlowSplit(in_chs=[4]), (2, 4, 2, 2), None),
        ("split_cond", FlowSplit(in_chs=[4, 3]), (2, 4, 2, 2), (2, 3, 2, 2)),
    ]


CASES = _cases()


def _prepared(block: nn.Module, x: torch.Tensor, cond: torch.Tensor | None) -> nn.Module:
    block = block.double()
    block.train()
    block(x, *([] if cond is None else [cond]))  # actnorms initialize on this batch
    block.eval()
    return _perturbed(block)


def _setup(
    block: nn.Module, shape: tuple[int, ...], cond_shape: tuple[int, ...] | None, seed: int
) -> tuple[nn.Module, torch.Tensor, list[torch.Tensor]]:
    """A fresh float64 copy of a case's block, initialized and perturbed, its input and
    its condition (as a list: none or one)."""
    torch.manual_seed(seed)
    x = torch.randn(shape, dtype=torch.float64)
    cond = None if cond_shape is None else torch.randn(cond_shape, dtype=torch.float64)
    block = _prepared(copy.deepcopy(block), x, cond)
    return block, x, [] if cond is None else [cond]


@pytest.mark.parametrize(("name", "block", "shape", "cond_shape"), CASES, ids=[c[0] for c in CASES])
def test_every_flow_block_inverts_exactly(name, block, shape, cond_shape) -> None:  # type: ignore[no-untyped-def]
    block, x, extra = _setup(block, shape, cond_shape, seed=1)
    out = block(x, *extra)
    if isinstance(block, FlowSplit):
        kept, z, _ = out
        back = block.reverse(kept, *extra, z=z)
    else:
        back = block.reverse(out[0], *extra)
    assert (back - x).abs().max().item() <= 1e-10
    assert out[-1].shape == (shape[0],)


@pytest.mark.parametrize(("name", "block", "shape", "cond_shape"), CASES, ids=[c[0] for c in CASES])
def test_log_determinants_equal_autograds_jacobian(name, block, shape, cond_shape) -> None:  # type: ignore[no-untyped-def]
    block, x, extra = _setup(block, shape, cond_shape, seed=2)
    for i in range(shape[0]):
        sample = x[i : i + 1]
        c = [e[i : i + 1] for e in extra]

        def bijection(
            v: torch.Tensor, c: list[torch.Tensor] = c, shape: torch.Size = sample.shape
        ) -> torch.Tensor:
            out = block(v.reshape(shape), *c)
            # A split's bijection is x → (kept, z); its logdet scores the rest under the
            # prior instead, so compare on the normalized latent's own Jacobian.
            parts = out[:2] if isinstance(block, FlowSplit) else out[:1]
            return torch.cat([p.flatten() for p in parts])

        jacobian = torch.autograd.functional.jacobian(bijection, sample.flatten())
        logabsdet = torch.linalg.slogdet(jacobian)[1].item()
        logdet = block(sample, *c)[-1].item()
        if isinstance(block, FlowSplit):
            # logdet = log N(rest; prior) and z = (rest − mean)/scale: their difference is
            # log N(z; 0, 1) of the normalized latent, i.e. the change of variables.
            _, z, _ = block(sample, *c)
            standard = (-0.5 * (z**2 + math.log(2 * math.pi))).sum().item()
            assert logdet == pytest.approx(standard + logabsdet, abs=1e-8)
        else:
            assert logdet == pytest.approx(logabsdet, abs=1e-8)


def test_actnorm_initializes_from_the_first_batch_once_and_keeps_it_in_the_state() -> None:
    torch.manual_seed(0)
    norm = ActNorm(in_ch=3).train()
    x = torch.randn(4, 3, 8, 8) * torch.tensor([2.0, 0.5, 3.0]).view(1, 3, 1, 1) + 1.5
    y, _ = norm(x)
    assert y.mean(dim=(0, 2, 3)).abs().max() < 1e-5
    assert (y.std(dim=(0, 2, 3), unbiased=False) - 1).abs().max() < 1e-3
    before = norm.state_dict()
    assert bool(before["initialized"])
    norm(x * 10)  # a second batch does not initialize again
    assert torch.equal(norm.bias, before["bias"])
    resumed = ActNorm(in_ch=3).train()
    resumed.load_state_dict(before)
    resumed(x * 10)  # a resumed run keeps the saved values
    assert torch.equal(resumed.logs, before["logs"])
    # A file without the flag (SRFlow's own) counts as trained.
    srflow_file = {k: v for k, v in before.items() if k != "initialized"}
    loaded = ActNorm(in_ch=3).train()
    loaded.load_state_dict(srflow_file)
    loaded(x * 10)
    assert torch.equal(loaded.bias, before["bias"])


# ------------------------------------------------------------------- networks
@pytest.fixture(scope="module")
def srflow() -> nn.Module:
    return engine.build(SRFLOW, TINY_SRFLOW)["G"]


def test_srflow_runs_forward_and_backwards_with_the_same_weights(srflow: nn.Module) -> None:
    torch.manual_seed(0)
    hr, lr = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 4, 4)
    srflow.train()
    srflow(hr=hr, lr=lr)  # actnorms initialize
    srflow.eval()
    _perturbed(srflow, scale=0.01)  # float32: 58 layers of rounding stay under 1e-4
    with torch.no_grad():
        out = srflow(hr=hr, lr=lr)
        assert out["z"].shape == (2, 96, 2, 2) and out["z1"].shape == (2, 6, 8, 8)
        assert out["logdet"].shape == (2,)
        back = srflow(lr=lr, z=out["z"], z1=out["z1"], reverse=True)["hr"]
        assert (back - hr).abs().max().item() <= 1e-4
        mode = [srflow(lr=lr, reverse=True, heat=0.0)["hr"] for _ in range(2)]
        assert torch.equal(mode[0], mode[1])  # heat 0: no randomness left
        drawn = [srflow(lr=lr, reverse=True, heat=0.8)["hr"] for _ in range(2)]
        assert not torch.equal(drawn[0], drawn[1])
        assert drawn[0].shape == hr.shape


def test_srflow_layer_names_are_srflows(srflow: nn.Module) -> None:
    keys = set(srflow.state_dict())
    # K 2: squeeze 0, transitions 1-2, steps 3-4, the split 5, squeeze 6, ...
    for key in (
        "RRDB.conv_first.weight",
        "RRDB.RRDB_trunk.22.RDB3.conv5.bias",
        "RRDB.trunk_conv.weight",
        "RRDB.upconv1.weight",
        "flowUpsamplerNet.layers.1.actnorm.logs",
        "flowUpsamplerNet.layers.3.invconv.weight",
        "flowUpsamplerNet.layers.3.affine.fAffine.0.weight",
        "flowUpsamplerNet.layers.3.affine.fAffine.0.actnorm.bias",
        "flowUpsamplerNet.layers.3.affine.fAffine.4.logs",
        "flowUpsamplerNet.layers.4.affine.fFeatures.2.weight",
        "flowUpsamplerNet.layers.5.conv.logs",
        "flowUpsamplerNet.layers.15.affine.fFeatures.4.bias",
    ):
        assert key in keys, key
    assert not any(k.startswith("flowUpsamplerNet.layers.16.") for k in keys)


def test_the_shipped_srflow_has_srflows_layout_at_full_size() -> None:
    g = engine.build(SRFLOW, ["data.train.crop_size=32", "data.train.batch_size=2"])["G"]
    names = {k.rsplit(".", 2)[0] for k in g.state_dict() if ".layers." in k}
    layers = {int(k.split(".layers.")[1].split(".")[0]) for k in names}
    assert layers == set(range(58)) - {0, 20, 39}  # the squeezes hold nothing
    assert "flowUpsamplerNet.layers.19.conv.weight" in g.state_dict()  # the split
    # 39.19 M: SRFlow's 39.54 M less its RRDB's own SR head and `f`, unused by the flow.
    assert sum(p.numel() for p in g.parameters()) == 39_189_648


def test_nll_is_srflows_bits_per_pixel_or_glows_bits_per_dimension() -> None:
    z, logdet, x = torch.zeros(2, 12, 2, 2), torch.tensor([10.0, 20.0]), torch.zeros(2, 3, 4, 4)
    log_pz = -0.5 * math.log(2 * math.pi) * 48
    for convention, count in (("srflow", 16), ("glow", 48)):
        want = [-(ld + log_pz - count * math.log(255)) / (math.log(2) * count) for ld in (10, 20)]
        got = FlowNLL(convention=convention)(z, logdet, x).item()
        assert got == pytest.approx(sum(want) / 2, rel=1e-6)


# -------------------------------------------------------------------- grammar
def _spec(tmp_path: Path, body: str, graph: str = "") -> Path:
    text = "spec: 1\nname: flows\nscale: 2\nimports: [lib/srflow.yaml]\n"
    text += "networks:\n" + textwrap.indent(textwrap.dedent(body), "  ")
    if graph:
        text += "graph:\n" + textwrap.indent(textwrap.dedent(graph), "  ")
        text += "data:\n  train: {type: sr, hr: 'builtin:photos', crop_size: 16, batch_size: 2}\n"
    path = tmp_path / "flows.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _errors(tmp_path: Path, body: str, graph: str = "") -> str:
    with pytest.raises(SpecError) as info:
        engine.build(_spec(tmp_path, body, graph))
    return "\n".join(d.message for d in info.value.diagnostics.errors)


GLOW = """
G:
  inputs: {x: 3, c: 2}
  flow: x
  nodes:
    sq: {block: squeeze, in: x}
    cond: {block: conv, in: c, out: 4}
    steps:
      in: sq
      chain:
        - {block: actnorm}
        - {block: affine_coupling, in: {cond: cond}, hidden: 4, repeat: 2}
        - {block: flow_split, as: split}
        - {block: invconv}
    more: {block: affine_coupling, in: {x: steps, cond: cond}, hidden: 4, repeat: 2}
  outputs: {z: more, eps: steps.split.z}
"""


def test_repeats_and_chain_items_take_side_inputs_and_named_items(tmp_path: Path) -> None:
    g = engine.build(_spec(tmp_path, GLOW))["G"]
    keys = set(g.state_dict())
    assert {"steps.1.fAffine.0.weight", "steps.2.fAffine.0.weight", "steps.3.conv.weight"} <= keys
    assert {"more.0.fAffine.4.logs", "more.1.fAffine.4.logs", "steps.4.weight"} <= keys
    x, c = torch.rand(2, 3, 8, 8), torch.rand(2, 2, 4, 4)
    g.eval()
    _perturbed(g)
    with torch.no_grad():
        out = g(x=x, c=c)
        assert out["eps"].shape == (2, 6, 4, 4) and out["z"].shape == (2, 6, 4, 4)
        back = g(c=c, z=out["z"], eps=out["eps"], reverse=True)["x"]
    assert (back - x).abs().max().item() <= 1e-4


def test_a_copy_of_a_repeat_is_named_by_its_index(tmp_path: Path) -> None:
    body = """
    G:
      inputs: {x: 3}
      nodes:
        body: {block: conv, in: x, out: 3, repeat: 3}
        taps: {block: identity, in: [body.0, body.2]}
        bad: {block: identity, in: body.5}
      outputs: {out: taps, bad: bad}
    """
    assert "'body.5': 'body' has 3 copies (0 to 2)" in _errors(tmp_path, body)
    good = body.replace("bad: {block: identity, in: body.5}", "bad: {block: identity, in: body.1}")
    g = engine.build(_spec(tmp_path, good))["G"]
    x = torch.rand(1, 3, 4, 4)
    with torch.no_grad():
        first = g.body[0](x) if isinstance(g.body, nn.Sequential) else None
        out = g(x=x)
    assert out["out"].shape == (1, 6, 4, 4)
    del first


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            ("more: {", "more: {block: conv, in: steps, out: 6}\n    other: {"),
            "a value of the flow",
        ),
        (
            ("outputs: {z: more, eps: steps.split.z}", "outputs: {z: more, eps: cond}"),
            "not a latent",
        ),
        (("  flow: x\n", ""), "declare the input it transforms"),
        (("flow: x", "flow: y"), "'flow: y' names no input"),
        (("outputs: {z: more,", "outputs: {logdet: more,"), "'logdet' is the flow's own output"),
        (("in: {cond: cond}, hidden", "in: {x: cond}, hidden"), "takes the previous item's output"),
    ],
)
def test_a_broken_flow_is_refused_with_the_reason(
    tmp_path: Path, edit: tuple[str, str], message: str
) -> None:
    old, new = edit
    assert old in GLOW
    assert message in _errors(tmp_path, GLOW.replace(old, new, 1))


def test_reverse_calls_are_checked(tmp_path: Path) -> None:
    plain = "D:\n  inputs: {x: 3}\n  nodes:\n    c: {block: conv, in: x, out: 3}\n"
    graph = """
    a: {call: G, reverse: true, in: {c: data.lr}, heat: 0.5}
    b: {call: D, reverse: true, in: data.hr}
    c: {call: D, in: data.hr, heat: 0.5}
    """
    text = _errors(tmp_path, GLOW + plain, graph)
    assert "network 'D' is not invertible" in text
    assert "'heat' is the temperature of a reverse call" in text
    assert "call node 'a'" not in text


def test_batch_one_is_warned_of_at_its_key(tmp_path: Path) -> None:
    """SRFlow gives NaN at batch 1: validate says so at data.train.batch_size and points
    to accumulate; batch 2 is not warned of."""
    from engine.load import check_spec

    text = (ROOT / "specs" / "srflow.yaml").read_text(encoding="utf-8")
    assert "batch_size: 8" in text
    spec = tmp_path / "srflow.yaml"
    spec.write_text(text.replace("batch_size: 8", "batch_size: 1"), encoding="utf-8")
    (tmp_path / "lib").symlink_to(ROOT / "specs" / "lib")
    _, diags = check_spec(spec)
    found = [d for d in diags.warnings if "batch_size 1" in d.message]
    assert len(found) == 1 and "NaN" in found[0].message and "accumulate" in found[0].message
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "batch_size: 8" in t)
    assert found[0].loc is not None and found[0].loc.line == line
    _, diags = check_spec(ROOT / "specs" / "srflow.yaml", ["data.train.batch_size=2"])
    assert not [d for d in diags.warnings if "batch_size" in d.message]


# ----------------------------------------------------------------- input sizes
def _squeezes(levels: int) -> str:
    """A flow of ``levels`` squeezes on ``img``, conditioned on ``small`` (half its size)
    resized to the last level: nothing in it is named after SRFlow."""
    items = "\n".join(
        "        - {block: squeeze}\n        - {block: actnorm}" for _ in range(levels)
    )
    return f"""
Net:
  inputs: {{img: 3, small: 3}}
  flow: img
  nodes:
    cond: {{block: upsample, in: small, scale: {2.0 ** (1 - levels)}, mode: bilinear}}
    steps:
      in: img
      chain:
{items}
    top: {{block: affine_coupling, in: {{x: steps, cond: cond}}, hidden: 4}}
  outputs: {{z: top}}
"""


@pytest.mark.parametrize("levels", [2, 3])
def test_a_flows_input_size_follows_its_squeezes(tmp_path: Path, levels: int) -> None:
    from engine.compile.build import check_shapes
    from engine.compile.sizes import size_rule, size_text

    graph = "out: {call: Net, in: {img: data.hr, small: data.lr}}\n"
    spec = engine.load_spec(_spec(tmp_path, _squeezes(levels), graph))
    rule = size_rule(spec.networks["Net"], check_shapes(spec).networks["Net"])
    m = 2**levels  # each squeeze halves the flow's input
    assert (rule.input, rule.multiple, rule.multiple_of("small")) == ("img", m, m // 2)
    assert size_text(rule) == (
        f"input size: img a multiple of {m}, at least {m}×{m}; small 1/2 of img "
        f"(a multiple of {m // 2})"
    )


@pytest.mark.parametrize(
    ("name", "overrides", "text"),
    [
        (
            "srflow.yaml",
            TINY_SRFLOW,
            "hr a multiple of 8, at least 8×8; lr 1/4 of hr (a multiple of 2)",
        ),
        (
            "srflow_x8.yaml",
            SMALL["srflow_x8.yaml"],
            "hr a multiple of 16, at least 16×16; lr 1/8 of hr (a multiple of 2)",
        ),
    ],
)
def test_inspect_gives_srflows_hr_and_lr_sizes(name: str, overrides: list[str], text: str) -> None:
    from engine.compile.inspect import inspect_spec, text_lines

    spec = engine.load_spec(ROOT / "specs" / name, overrides)
    (report,) = inspect_spec(spec)
    assert text_lines(report)[-1] == f"  input size: {text}"


def test_srflow_refuses_an_hr_size_its_squeezes_cannot_take(srflow: nn.Module) -> None:
    g = copy.deepcopy(srflow).eval()
    with torch.no_grad():
        g(hr=torch.rand(1, 3, 24, 24), lr=torch.rand(1, 3, 6, 6))  # 24 = 3 × 8: taken
        with pytest.raises(ValueError) as info:
            g(hr=torch.rand(1, 3, 36, 36), lr=torch.rand(1, 3, 9, 9))  # 36 → 18 → 9 → ?
    assert "cannot take a 36×36 input (input size: hr a multiple of 8" in str(info.value)

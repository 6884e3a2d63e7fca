"""Primitives of modern restoration networks: norms, activations, math, axes, run-time
sizes and warping. Each block against the torch function it wraps, on tiny CPU tensors;
on an empty batch and the meta device, as shape inference runs it; then a spec that
composes several of them."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import blocks.builtin  # noqa: F401  (registers the blocks)
import engine
from blocks.builtin import layers
from blocks.registry import REGISTRY
from engine import SpecError

Tensors = list[torch.Tensor]


def block(name: str, **params: Any) -> Any:
    return REGISTRY.get(name).factory(**params)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def img(*shape: int) -> torch.Tensor:
    return torch.randn(*shape)


def positive(*shape: int) -> torch.Tensor:
    return torch.rand(*shape) + 0.5


# name, params, inputs, what torch computes from the same inputs
CASES: list[tuple[str, dict[str, Any], Callable[[], Tensors], Callable[..., torch.Tensor]]] = [
    ("exp", {}, lambda: [img(2, 3, 4, 4)], torch.exp),
    ("log", {}, lambda: [positive(2, 3, 4, 4)], torch.log),
    ("sqrt", {}, lambda: [positive(2, 3, 4, 4)], torch.sqrt),
    ("abs", {}, lambda: [img(2, 3, 4, 4)], torch.abs),
    ("pow", {"exponent": 1.5}, lambda: [positive(2, 3, 4, 4)], lambda x: x**1.5),
    (
        "mean",
        {"dims": [2, 3], "keepdim": True},
        lambda: [img(2, 3, 4, 5)],
        lambda x: x.mean((2, 3), keepdim=True),
    ),
    ("mean", {}, lambda: [img(2, 3, 4, 5)], lambda x: x.mean((-2, -1))),
    ("sum", {"dims": 1}, lambda: [img(2, 3, 4, 5)], lambda x: x.sum(1)),
    ("softmax", {"dim": 1}, lambda: [img(2, 3, 4, 5)], lambda x: F.softmax(x, dim=1)),
    ("matmul", {}, lambda: [img(2, 3, 4), img(2, 4, 5)], torch.matmul),
    (
        "einsum",
        {"equation": "nchw,ndhw->ncd"},
        lambda: [img(2, 3, 4, 4), img(2, 5, 4, 4)],
        lambda a, b: torch.einsum("nchw,ndhw->ncd", a, b),
    ),
    (
        "einsum",
        {"equation": "...hw->...wh"},
        lambda: [img(2, 3, 4, 5)],
        lambda x: x.transpose(-2, -1),
    ),
    ("permute", {"dims": [0, 2, 3, 1]}, lambda: [img(2, 3, 4, 5)], lambda x: x.permute(0, 2, 3, 1)),
    ("transpose", {}, lambda: [img(2, 3, 4, 5)], lambda x: x.transpose(-2, -1)),
    (
        "roll",
        {"shifts": [1, -2], "dims": [2, 3]},
        lambda: [img(2, 3, 4, 5)],
        lambda x: torch.roll(x, (1, -2), (2, 3)),
    ),
    ("roll", {"shifts": 2, "dims": 1}, lambda: [img(2, 3, 4, 5)], lambda x: x.roll(2, 1)),
    ("flatten", {}, lambda: [img(2, 3, 4, 5)], lambda x: x.flatten(1)),
    (
        "unflatten",
        {"dim": 1, "sizes": [2, -1]},
        lambda: [img(2, 6, 4, 5)],
        lambda x: x.unflatten(1, (2, 3)),
    ),
    ("index_select", {"index": [2, 1, 0]}, lambda: [img(2, 3, 4, 5)], lambda x: x.flip(1)),
    (
        "gather",
        {"dim": 1},
        lambda: [img(2, 3, 4, 5), torch.randint(0, 3, (2, 2, 4, 5)).float()],
        lambda x, i: torch.gather(x, 1, i.long()),
    ),
    (
        "sub",
        {"value": [0.4488, 0.4371, 0.4040]},
        lambda: [img(2, 3, 4, 5)],
        lambda x: x - torch.tensor([0.4488, 0.4371, 0.4040]).view(1, 3, 1, 1),
    ),
    ("sub", {"value": 1, "reverse": True}, lambda: [img(2, 3, 4, 5)], lambda x: 1 - x),
    ("sub", {}, lambda: [img(2, 3, 4, 5), img(2, 1, 4, 5)], torch.sub),
    ("div", {}, lambda: [img(2, 3, 4, 5), positive(2, 3, 1, 1)], torch.div),
    ("div", {"value": 1, "reverse": True}, lambda: [positive(2, 3, 4, 5)], torch.reciprocal),
    (
        "div",
        {"value": [0.5, 2.0]},
        lambda: [img(2, 2, 3, 3)],
        lambda x: x * torch.tensor([2.0, 0.5]).view(2, 1, 1),
    ),
    ("add", {"value": 0.5}, lambda: [img(2, 3, 4, 5)], lambda x: x + 0.5),
    (
        "add",
        {"value": [1, 2]},
        lambda: [img(2, 2, 4, 5), img(2, 2, 4, 5)],
        lambda a, b: a + b + torch.tensor([1.0, 2.0]).view(2, 1, 1),
    ),
    ("multiply", {"value": -2}, lambda: [img(2, 3, 4, 5)], lambda x: -2 * x),
    (
        "upsample",
        {"scale": None, "mode": "bilinear"},
        lambda: [img(2, 3, 4, 5), img(2, 1, 7, 9)],
        lambda x, like: F.interpolate(x, size=(7, 9), mode="bilinear", align_corners=False),
    ),
    (
        "upsample",
        {"scale": 0.5, "mode": "bicubic", "antialias": True},
        lambda: [img(2, 3, 8, 8)],
        lambda x: F.interpolate(x, scale_factor=0.5, mode="bicubic", antialias=True),
    ),
    (
        "upsample",
        {"scale": 0.5, "mode": "area"},
        lambda: [img(2, 3, 8, 8)],
        lambda x: F.avg_pool2d(x, 2),
    ),
    (
        "adaptive_pool",
        {"type": "avg", "size": [1, None]},
        lambda: [img(2, 3, 4, 5)],
        lambda x: x.mean(2, keepdim=True),
    ),
    (
        "pad_to_multiple",
        {"multiple": 4},
        lambda: [img(2, 3, 5, 8)],
        lambda x: F.pad(x, (0, 0, 0, 3), mode="reflect"),
    ),
    (
        "pad_to_multiple",
        {"multiple": [2, 8], "mode": "zeros"},
        lambda: [img(2, 3, 5, 5)],
        lambda x: F.pad(x, (0, 3, 0, 1)),
    ),
    (
        "crop_to",
        {"factor": 2},
        lambda: [img(2, 3, 12, 13), img(2, 3, 5, 6)],
        lambda x, like: x[..., :10, :12],
    ),
    (
        "crop_to",
        {"anchor": "center"},
        lambda: [img(2, 3, 8, 9), img(1, 1, 4, 5)],
        lambda x, like: x[..., 2:6, 2:7],
    ),
    (
        "grid_sample",
        {"mode": "nearest", "padding_mode": "border", "align_corners": True},
        lambda: [img(2, 3, 4, 5), torch.rand(2, 2, 3, 6) * 2.4 - 1.2],
        lambda x, g: F.grid_sample(
            x, g.permute(0, 2, 3, 1), mode="nearest", padding_mode="border", align_corners=True
        ),
    ),
    (
        "grid_sample",
        {},
        lambda: [img(2, 3, 4, 5), torch.rand(2, 2, 3, 6) * 2 - 1],
        lambda x, g: F.grid_sample(x, g.permute(0, 2, 3, 1), align_corners=False),
    ),
]

IDS = [f"{name}-{i}" for i, (name, *_) in enumerate(CASES)]


@pytest.mark.parametrize(("name", "params", "inputs", "reference"), CASES, ids=IDS)
def test_block_computes_what_torch_computes(
    name: str, params: dict[str, Any], inputs: Callable[[], Tensors], reference: Callable[..., Any]
) -> None:
    xs = inputs()
    torch.testing.assert_close(block(name, **params)(*xs), reference(*xs))


@pytest.mark.parametrize(("name", "params", "inputs", "reference"), CASES, ids=IDS)
def test_block_runs_on_an_empty_batch_and_on_meta(
    name: str, params: dict[str, Any], inputs: Callable[[], Tensors], reference: Callable[..., Any]
) -> None:
    """Shape inference runs blocks on batches of zero samples and on meta tensors."""
    xs = inputs()
    expected = block(name, **params)(*xs).shape
    if expected[:1] == xs[0].shape[:1]:  # the batch dimension survives
        empty = block(name, **params)(*[x[:0] for x in xs])
        assert empty.shape == (0, *expected[1:])
    meta = block(name, **params).to("meta")(*[x.to("meta") for x in xs])
    assert meta.shape == expected and meta.is_meta


# --- activations and norms ---------------------------------------------------------------


def test_activation_names_and_the_table_are_the_same_list() -> None:
    assert list(get_args(layers.ActType)) == list(layers._ACTIVATIONS)


ACTS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "none": lambda x: x,
    "relu": F.relu,
    "relu6": F.relu6,
    "lrelu": lambda x: F.leaky_relu(x, 0.1),
    "prelu": lambda x: F.prelu(x, torch.full((1,), 0.25)),
    "elu": F.elu,
    "selu": F.selu,
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
    "mish": F.mish,
    "softplus": F.softplus,
    "hardswish": F.hardswish,
    "hardsigmoid": F.hardsigmoid,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
}


@pytest.mark.parametrize("kind", list(get_args(layers.ActType)))
def test_every_activation_computes_the_torch_function(kind: str) -> None:
    x = torch.linspace(-4, 4, 2 * 3 * 5 * 5).view(2, 3, 5, 5)
    act = block("act", in_ch=3, type=kind, slope=0.1)
    torch.testing.assert_close(act(x), ACTS[kind](x))
    # conv resolves the same names, once, at construction
    conv = block("conv", in_ch=3, out=3, kernel=1, act=kind, slope=0.1)
    assert type(conv.act) is type(act)
    assert len(conv.act(x[:0]).shape) == 4  # an empty batch, as shape inference runs it


def test_gelu_tanh_differs_from_exact_gelu() -> None:
    x = torch.tensor([-2.0, -0.5, 0.7, 1.9])
    exact, approx = (
        block("act", in_ch=1, type="gelu")(x),
        block("act", in_ch=1, type="gelu_tanh")(x),
    )
    assert not torch.equal(exact, approx)
    torch.testing.assert_close(exact, approx, atol=1e-3, rtol=0)


def test_unknown_activation_lists_the_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown activation 'swish'; choose one of \['none'"):
        layers.make_act("swish")  # type: ignore[arg-type]


@pytest.mark.parametrize(("order", "channels"), [("cna", 6), ("nac", 4)])
def test_conv_prelu_per_channel_learns_one_slope_per_channel(order: str, channels: int) -> None:
    conv = block("conv", in_ch=4, out=6, act="prelu", prelu_per_channel=True, order=order)
    assert conv.act.weight.shape == (channels,)
    assert block("conv", in_ch=4, out=6, act="prelu").act.weight.shape == (1,)
    assert conv(torch.randn(0, 4, 5, 5)).shape == (0, 6, 5, 5)


def test_act_prelu_per_channel() -> None:
    act = block("act", in_ch=3, type="prelu", num_parameters=3)
    with torch.no_grad():
        act.weight.copy_(torch.tensor([0.0, 0.5, 1.0]))
    x = -torch.ones(1, 3, 2, 2)
    torch.testing.assert_close(act(x)[0, :, 0, 0], torch.tensor([0.0, -0.5, -1.0]))


TORCH_NORMS: dict[str, nn.Module] = {
    "batch": nn.BatchNorm2d(8),
    "instance": nn.InstanceNorm2d(8),
    "layer": nn.LayerNorm(8),
    "group": nn.GroupNorm(2, 8),
}


@pytest.mark.parametrize("kind", list(TORCH_NORMS))
def test_norm_defaults_are_torchs(kind: str) -> None:
    ours, theirs = block("norm", in_ch=8, type=kind, groups=2), TORCH_NORMS[kind]
    for attr in ("eps", "momentum", "affine", "elementwise_affine", "track_running_stats"):
        assert getattr(ours, attr, None) == getattr(theirs, attr, None), attr


@pytest.mark.parametrize("kind", list(TORCH_NORMS))
def test_norm_settings_reach_the_layer(kind: str) -> None:
    layer = block("norm", in_ch=8, type=kind, groups=2, eps=1e-3, momentum=0.3, affine=False)
    assert layer.eps == 1e-3
    assert list(layer.parameters()) == []
    if kind in ("batch", "instance"):
        assert layer.momentum == 0.3
    x = torch.randn(3, 8, 4, 4)
    assert layer(x).shape == x.shape and layer(x[:0]).shape == (0, 8, 4, 4)


def test_layer_norm_is_channels_first_with_its_eps() -> None:
    """NAFNet's LayerNorm2d: normalize each pixel's C values, eps inside the root."""
    x = torch.randn(2, 5, 3, 4)
    ours = block("norm", in_ch=5, type="layer", eps=1e-2)
    mean = x.mean(1, keepdim=True)
    var = (x - mean).pow(2).mean(1, keepdim=True)
    torch.testing.assert_close(ours(x), (x - mean) / (var + 1e-2).sqrt())


def test_batch_norm_momentum_weighs_the_running_mean() -> None:
    bn = block("norm", in_ch=1, type="batch", momentum=0.5)
    bn(torch.full((4, 1, 2, 2), 2.0))
    assert bn.running_mean.item() == pytest.approx(1.0)
    cumulative = block("norm", in_ch=1, type="batch", momentum=None)
    assert cumulative.momentum is None
    instance = block("norm", in_ch=2, type="instance", track_running_stats=True)
    assert instance.running_mean is not None
    with pytest.raises(ValueError, match=r"momentum null .* is batch norm's"):
        block("norm", in_ch=2, type="instance", momentum=None)


# --- constant operands, einsum, sizes: errors a user sees --------------------------------


def test_elementwise_blocks_need_a_second_operand() -> None:
    x = torch.randn(1, 2, 3, 3)
    with pytest.raises(ValueError, match="add: one input and no value"):
        block("add")(x)
    with pytest.raises(ValueError, match="sub: give either a second input y or value"):
        block("sub")(x)
    with pytest.raises(ValueError, match="give either a second input y or value, not both"):
        block("sub", value=1.0)(x, x)
    with pytest.raises(ValueError, match="div: reverse needs a value"):
        block("div", reverse=True)


def test_a_list_constant_stays_out_of_the_state_dict_and_keeps_the_dtype() -> None:
    sub = block("sub", value=[0.5, 0.25])
    assert dict(sub.state_dict()) == {}
    half = sub(torch.ones(1, 2, 2, 2, dtype=torch.bfloat16))
    assert half.dtype == torch.bfloat16
    assert half[0, :, 0, 0].tolist() == [0.5, 0.75]


@pytest.mark.parametrize(
    ("equation", "gist"),
    [
        ("nchw->nq", "invalid equation 'nchw->nq'"),
        ("nc hw;->x", "is not an equation"),
        ("nn..c..", "is not an equation"),
    ],
)
def test_einsum_checks_its_equation_at_construction(equation: str, gist: str) -> None:
    with pytest.raises(ValueError, match=gist):
        block("einsum", equation=equation)


def test_einsum_counts_its_inputs() -> None:
    with pytest.raises(ValueError, match="takes 2 inputs, got 1"):
        block("einsum", equation="ij,jk->ik")(torch.randn(2, 2))


def test_upsample_asks_for_a_size_source() -> None:
    x = torch.randn(1, 1, 4, 4)
    with pytest.raises(ValueError, match="needs a second input"):
        block("upsample", scale=None)(x)
    with pytest.raises(ValueError, match="set scale: null"):
        block("upsample")(x, x)
    with pytest.raises(ValueError, match="antialias applies to bilinear and bicubic"):
        block("upsample", antialias=True)


def test_pad_to_multiple_then_crop_to_gives_the_input_back() -> None:
    x = torch.randn(1, 3, 13, 10)
    padded = block("pad_to_multiple", multiple=8, mode="replicate")(x)
    assert padded.shape == (1, 3, 16, 16)
    assert block("pad_to_multiple", multiple=8)(padded).shape == padded.shape  # already divides
    torch.testing.assert_close(block("crop_to")(padded, x), x, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"cannot crop 13×10 to 26×20"):
        block("crop_to", factor=2)(x, x)


def test_permute_and_unflatten_check_their_settings() -> None:
    with pytest.raises(ValueError, match="not a permutation of 0 … 2"):
        block("permute", dims=[0, 2, 2])
    with pytest.raises(ValueError, match="at most one −1"):
        block("unflatten", sizes=[-1, -1])
    with pytest.raises(ValueError, match="2 shifts for 1 dims"):
        block("roll", shifts=[1, 2], dims=[1])


# --- flow_warp ---------------------------------------------------------------------------


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("padding_mode", ["zeros", "border"])
def test_flow_warp_zero_flow_is_the_identity(align_corners: bool, padding_mode: str) -> None:
    x = torch.randn(2, 3, 5, 7)
    warp = block("flow_warp", align_corners=align_corners, padding_mode=padding_mode)
    torch.testing.assert_close(warp(x, torch.zeros(2, 2, 5, 7)), x)


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_flow_warp_integer_flow_shifts_like_roll_inside_the_border(
    align_corners: bool, mode: str
) -> None:
    x = torch.randn(2, 3, 6, 8)
    flow = torch.zeros(2, 2, 6, 8)
    flow[:, 0], flow[:, 1] = 2.0, -1.0  # read 2 pixels right and 1 up
    out = block("flow_warp", align_corners=align_corners, mode=mode)(x, flow)
    rolled = torch.roll(x, shifts=(1, -2), dims=(2, 3))  # out[i, j] = x[i − 1, j + 2]
    torch.testing.assert_close(out[..., 1:, :-2], rolled[..., 1:, :-2])
    # Zero padding outside the image (up to rounding where a position meets the edge).
    assert out[..., 0, :].abs().max() < 1e-6
    assert out[..., :, -2:].abs().max() < 1e-6


def test_flow_warp_border_padding_repeats_the_edge() -> None:
    x = torch.arange(4.0).view(1, 1, 1, 4).expand(1, 1, 2, 4).contiguous()
    flow = torch.zeros(1, 2, 2, 4)
    flow[:, 0] = 3.0
    out = block("flow_warp", padding_mode="border")(x, flow)
    assert out[0, 0, 0].tolist() == [3.0, 3.0, 3.0, 3.0]


def test_flow_warp_gradients_reach_image_and_flow() -> None:
    x = torch.randn(1, 2, 5, 5, requires_grad=True)
    flow = (torch.rand(1, 2, 5, 5) - 0.5).requires_grad_()
    block("flow_warp")(x, flow).pow(2).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert flow.grad is not None and flow.grad.abs().sum() > 0
    torch.autograd.gradcheck(
        lambda a, f: block("flow_warp")(a, f),
        (x.detach().double().requires_grad_(), (flow.detach().double() * 0.9).requires_grad_()),
    )


def test_flow_warp_keeps_one_base_grid_per_size() -> None:
    warp = block("flow_warp")
    for size in [(4, 4), (4, 4), (3, 5)]:
        warp(torch.randn(1, 1, *size), torch.zeros(1, 2, *size))
    assert len(warp._grids) == 2
    first = warp._grids[4, 4, torch.device("cpu"), torch.float32]
    warp(torch.randn(2, 1, 4, 4), torch.zeros(2, 2, 4, 4))
    assert warp._grids[4, 4, torch.device("cpu"), torch.float32] is first
    assert "_grids" not in str(warp.state_dict().keys())


def test_flow_warp_refuses_a_flow_of_another_shape() -> None:
    with pytest.raises(ValueError, match=r"flow must be \(N, 2, H, W\) with the image's H and W"):
        block("flow_warp")(torch.randn(1, 3, 4, 4), torch.zeros(1, 2, 4, 5))


# --- a spec composing them ---------------------------------------------------------------

SPEC = """
spec: 1
name: primitives
scale: 2
networks:
  G:
    inputs: {lr: 3}
    params: {nf: 8}
    nodes:
      centred: {block: sub, in: lr, value: [0.4488, 0.4371, 0.4040]}
      padded: {block: pad_to_multiple, in: centred, multiple: 4}
      head: {block: conv, in: padded, out: $nf, act: mish}
      normed: {block: norm, in: head, type: layer, eps: 1.0e-6}
      gate: {block: conv, in: normed, out: $nf, act: prelu, prelu_per_channel: true}
      down: {block: pool, in: gate, type: avg, kernel: 4}
      context: {block: upsample, in: [down, gate], scale: null, mode: bilinear}
      weights: {block: softmax, in: context, dim: 1}
      mixed: {block: multiply, in: [gate, weights]}
      flow: {block: conv, in: mixed, out: 2, act: tanh}
      warped: {block: flow_warp, in: [mixed, flow], padding_mode: border}
      up: {block: conv, in: warped, out: 12, act: gelu_tanh}
      shuffled: {block: pixel_shuffle, in: up, scale: 2}
      cropped: {block: crop_to, in: [shuffled, lr], factor: 2}
      out: {block: add, in: cropped, value: [0.4488, 0.4371, 0.4040]}
    outputs: {sr: out}
graph:
  fake: {call: G, in: data.lr}
  pix: {loss: l1, in: [fake.sr, data.hr]}
optimizers:
  G: {type: adam, params: G, lr: 1.0e-4}
train:
  iterations: 10
  phases:
    - {name: main, steps: [{optimizer: G, minimize: {pix: 1.0}}]}
data:
  train: {type: sr, hr: "builtin:photos", crop_size: 32, batch_size: 2}
"""


def write_spec(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "primitives.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_a_spec_of_primitives_validates_builds_and_takes_any_size(tmp_path: Path) -> None:
    path = write_spec(tmp_path, SPEC)
    engine.load_spec(path)  # raises SpecError listing every problem
    g = engine.build(path)["G"]
    assert g.gate.act.weight.shape == (8,)  # prelu per channel of the conv's output
    for h, w in [(16, 16), (13, 10)]:  # 13×10 is padded to 16×12, the output cropped
        lr = torch.rand(1, 3, h, w, requires_grad=True)
        sr = g(lr)
        assert sr.shape == (1, 3, 2 * h, 2 * w)
        sr.mean().backward()
        assert lr.grad is not None and lr.grad.isfinite().all()
    # Stateless primitives are written into the forward as the torch calls they make.
    assert "torch.nn.functional.pad" in g.code and "torch.softmax" in g.code


def test_a_misspelled_primitive_parameter_is_named(tmp_path: Path) -> None:
    bad = SPEC.replace("padding_mode: border", "padding: border")
    with pytest.raises(SpecError, match="did you mean 'padding_mode'"):
        engine.load_spec(write_spec(tmp_path, bad))

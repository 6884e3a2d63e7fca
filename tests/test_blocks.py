"""Built-in blocks: every registered block is built, run, differentiated and schema-checked
from a tiny example; then behaviour a user would notice, block by block."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import pytest
import torch
import torch.nn.functional as F

import blocks.builtin  # noqa: F401  (registers the blocks)
from blocks.builtin.vgg import IMAGENET_FILE, VGG19Features
from blocks.registry import REGISTRY, BlockInfo
from blocks.schema import block_schema
from engine.compile.network import constructor_kwargs
from engine.compile.probe import Probe


@dataclass
class Example:
    """Params as a spec would give them, one input shape per input, expected outputs."""

    params: dict[str, Any]
    inputs: list[tuple[int, ...]]
    outputs: list[tuple[int, ...]] = field(default_factory=list)  # () for a loss
    detached: tuple[int, ...] = ()  # inputs the block detaches on purpose: no gradient
    # Builds the block's arguments from the leaf inputs, when they must be related.
    prepare: Any = None


IMG = (2, 4, 6, 6)
PAIR = [(2, 3, 8, 8), (2, 3, 8, 8)]

EXAMPLES: dict[str, Example] = {
    "act": Example({"type": "prelu", "num_parameters": 4}, [IMG], [IMG]),
    "adaptive_pool": Example({"type": "max", "size": [2, 3]}, [IMG], [(2, 4, 2, 3)]),
    "add": Example({}, [IMG, IMG, (2, 1, 6, 6)], [IMG]),
    "channel_attention": Example({"reduction": 2}, [IMG], [IMG]),
    "charbonnier": Example({"eps": 1e-3}, PAIR, [()]),
    "clamp": Example({"min": -0.5, "max": 0.5}, [IMG], [IMG]),
    "color_shift": Example({"mode": "uniform", "r_range": [0.2, 0.4]}, PAIR, [(2, 1, 8, 8)] * 2),
    "color": Example({"sigma": 1.0}, PAIR, [()]),
    "concat": Example({"dim": 1}, [(2, 3, 5, 5), (2, 2, 5, 5)], [(2, 5, 5, 5)]),
    # Two inputs on conv's single port: the compiler concatenates them, in_ch = 3 + 1.
    "conv": Example(
        {
            "out": 6,
            "pad_mode": "reflect",
            "norm": "group",
            "norm_groups": 2,
            "act": "lrelu",
            "spectral_norm": True,
        },
        [(2, 3, 8, 8), (2, 1, 8, 8)],
        [(2, 6, 8, 8)],
    ),
    "contextual": Example(
        {
            "layers": {"conv1_2": 1.0, "relu2_1": 0.5},
            "band_width": 0.2,
            "max_patches": 32,
            "weights": "random",
        },
        [(1, 3, 16, 16), (1, 3, 16, 16)],
        [()],
    ),
    # One class per sample from probability maps (SFTGAN's ACD): the maps get no gradient.
    "cross_entropy": Example(
        {"labels": "probabilities", "ignore_index": 0}, [(2, 8), (2, 8, 6, 6)], [()], detached=(1,)
    ),
    "deconv": Example({"out": 3, "norm": "batch", "act": "relu"}, [IMG], [(2, 3, 12, 12)]),
    "detach": Example({}, [IMG], [IMG]),
    "dropout": Example({"p": 0.2, "channelwise": True}, [IMG], [IMG]),
    # Fake features, then the real ones in the same order; the real ones are detached.
    "feature_matching": Example(
        {}, [(2, 4, 6, 6), (2, 1, 3, 3), (2, 4, 6, 6), (2, 1, 3, 3)], [()], detached=(2, 3)
    ),
    "fft": Example({"mode": "amplitude"}, PAIR, [()]),
    "gan": Example(
        {"target": "discriminator", "type": "vanilla", "relativistic": True},
        [(4, 1, 3, 3), (4, 1, 3, 3)],
        [()],
    ),
    "guided_filter": Example(
        {"radius": 2, "eps": 0.05}, [(2, 3, 8, 8), (2, 1, 8, 8)], [(2, 3, 8, 8)]
    ),
    "identity": Example({}, [IMG], [IMG]),
    "image_pool": Example({"size": 3}, [IMG], [IMG]),
    "l1": Example({}, PAIR, [()]),
    "linear": Example({"out": 5}, [(2, 4, 3, 3)], [(2, 5, 3, 3)]),
    "luma": Example({}, PAIR, [()]),
    "ms_ssim": Example({}, [(1, 3, 24, 24), (1, 3, 24, 24)], [()]),  # two scales
    "mse": Example({}, PAIR, [()]),
    "multiscale_l1": Example({"scales": 3, "weights": [1.0, 0.5, 0.25]}, PAIR, [()]),
    "multiply": Example({}, [IMG, (2, 1, 6, 6)], [IMG]),
    "norm": Example({"type": "layer"}, [IMG], [IMG]),
    "pad": Example({"amount": [1, 2, 3, 4], "mode": "reflect"}, [IMG], [(2, 4, 13, 9)]),
    "perceptual": Example(
        {"layers": {"conv2_2": 1.0, "relu3_1": 0.5}, "criterion": "l1", "weights": "random"},
        [(1, 3, 16, 16), (1, 3, 16, 16)],
        [()],
    ),
    "pixel_shuffle": Example({"scale": 2}, [(1, 8, 3, 3)], [(1, 2, 6, 6)]),
    "pixel_unshuffle": Example({"scale": 2}, [(1, 2, 6, 6)], [(1, 8, 3, 3)]),
    "pool": Example({"type": "avg", "kernel": 3, "stride": 2, "padding": 1}, [IMG], [(2, 4, 3, 3)]),
    "rearrange": Example(
        {"pattern": "b (t c) h w -> b t c h w", "axes": {"t": 2}}, [IMG], [(2, 2, 2, 6, 6)]
    ),
    "residual": Example({"scale": 0.2}, [IMG, IMG], [IMG]),
    "scale": Example({"factor": -0.5}, [IMG], [IMG]),
    "self_attention": Example({"heads": 2, "reduction": 2}, [(2, 8, 4, 4)], [(2, 8, 4, 4)]),
    "split": Example({"sizes": [1, 3]}, [IMG], [(2, 1, 6, 6), (2, 3, 6, 6)]),
    "ssim": Example({}, [(2, 3, 12, 12), (2, 3, 12, 12)], [()]),
    "style": Example(
        {"layers": {"conv1_2": 1.0, "relu2_1": 0.5}, "criterion": "l2", "weights": "random"},
        [(1, 3, 16, 16), (1, 3, 16, 16)],
        [()],
    ),
    "superpixel": Example(
        {"method": "felzenszwalb", "min_size": 4, "coloring": "adaptive"},
        [(2, 3, 6, 6)],
        [(2, 3, 6, 6)],
    ),
    "tv": Example({"power": 1}, [IMG], [()]),
    "laplacian_l1": Example({"levels": 2}, PAIR, [()]),
    # Only the student's flow learns: the teacher's flow and the images pick the pixels.
    "distill_flow": Example(
        {"margin": 0.0},
        [(2, 4, 8, 8), (2, 3, 8, 8), (2, 4, 8, 8), (2, 3, 8, 8), (2, 3, 8, 8)],
        [()],
        detached=(1, 2, 3, 4),
    ),
    "ofr": Example({"reg_weight": 0.1}, [(2, 3, 3, 8, 8), (2, 2, 2, 4, 4)], [()]),
    "interpolate": Example({}, PAIR, [PAIR[0]]),
    "gradient_penalty": Example(
        {"target": 1.0}, [PAIR[0]], [()], prepare=lambda xs: [(xs[0] ** 2).sum((1, 2, 3)), xs[0]]
    ),
    "upsample": Example(
        {"scale": 2, "mode": "bicubic", "align_corners": True}, [IMG], [(2, 4, 12, 12)]
    ),
    # Math, axes, run-time sizes and warping (behaviour in tests/test_primitives.py).
    "abs": Example({}, [IMG], [IMG]),
    "crop_to": Example(
        {"factor": 2, "anchor": "center"},
        [(2, 4, 12, 13), (2, 1, 5, 6)],
        [(2, 4, 10, 12)],
        detached=(1,),  # the second input gives only its size
    ),
    "div": Example({}, [IMG, (2, 1, 6, 6)], [IMG], prepare=lambda xs: [xs[0], xs[1].abs() + 1]),
    "einsum": Example({"equation": "nchw,ndhw->ncd"}, [IMG, (2, 3, 6, 6)], [(2, 4, 3)]),
    "exp": Example({}, [IMG], [IMG]),
    "flatten": Example({}, [IMG], [(2, 144)]),
    "flow_warp": Example({"padding_mode": "border"}, [IMG, (2, 2, 6, 6)], [IMG]),
    # Flow steps also return their log-determinant per sample, after their ports.
    "actnorm": Example({}, [IMG], [IMG, (2,)]),
    "invconv": Example({"lu": True}, [IMG], [IMG, (2,)]),
    "affine_coupling": Example({"hidden": 8, "features": True}, [IMG, (2, 3, 6, 6)], [IMG, (2,)]),
    "feature_affine": Example({"hidden": 8}, [IMG, (2, 3, 6, 6)], [IMG, (2,)]),
    "squeeze": Example({}, [IMG], [(2, 16, 3, 3), (2,)]),
    "flow_split": Example({}, [IMG], [(2, 2, 6, 6), (2, 2, 6, 6), (2,)]),
    "dequantize": Example({"levels": 255}, [IMG], [IMG]),
    "nll": Example({"convention": "glow"}, [(2, 4, 3, 3), (2,), (2, 3, 6, 6)], [()], detached=(2,)),
    "conv3d": Example(
        {"out": 5, "kernel": [3, 1, 1], "padding": [0, 0, 0], "act": "lrelu"},
        [(2, 4, 3, 6, 6)],
        [(2, 5, 1, 6, 6)],
    ),
    "gather": Example(
        {"dim": 1},
        [IMG, (2, 2, 6, 6)],
        [(2, 2, 6, 6)],
        detached=(1,),  # indices carry no gradient
        prepare=lambda xs: [xs[0], xs[1].detach().abs().mul(2).floor().clamp(max=3)],
    ),
    "grid_sample": Example({"align_corners": True}, [IMG, (2, 2, 3, 5)], [(2, 4, 3, 5)]),
    "index_select": Example({"dim": 1, "index": [3, 0, 0]}, [IMG], [(2, 3, 6, 6)]),
    "log": Example({}, [IMG], [IMG], prepare=lambda xs: [xs[0].abs() + 0.5]),
    "matmul": Example({}, [(2, 3, 4), (2, 4, 5)], [(2, 3, 5)]),
    "mean": Example({"dims": [2, 3], "keepdim": True}, [IMG], [(2, 4, 1, 1)]),
    "pad_to_multiple": Example({"multiple": [4, 8]}, [IMG], [(2, 4, 8, 8)]),
    "permute": Example({"dims": [0, 2, 3, 1]}, [(2, 4, 5, 6)], [(2, 5, 6, 4)]),
    "pow": Example({"exponent": 1.5}, [IMG], [IMG], prepare=lambda xs: [xs[0].abs() + 0.5]),
    "mean_shift": Example(
        {"sign": "add", "mean": [0.1, 0.2, 0.3, 0.4], "std": [1.0, 2.0, 0.5, 1.0]},
        [IMG],
        [IMG],
    ),
    "repeat_interleave": Example({"repeats": 2}, [IMG], [(2, 8, 6, 6)]),
    "roll": Example({"shifts": [1, -2]}, [IMG], [IMG]),
    "parameter": Example({"shape": [1, 4, 1, 1]}, [], [(1, 4, 1, 1)]),
    "drop_path": Example({"p": 0.5}, [IMG], [IMG]),
    "relative_position_index": Example({"window": 2}, [], [(4, 4)]),
    "window_mask_buffer": Example({"window": 2, "shift": 1, "size": 4}, [], [(4, 4, 4)]),
    "window_mask": Example({"window": 2, "shift": 1}, [(1, 3, 4, 6)], [(6, 4, 4)]),
    "lookup": Example(
        {},
        [(9, 3), (4, 4)],
        [(4, 4, 3)],
        detached=(1,),  # indices carry no gradient
        prepare=lambda xs: [xs[0], xs[1].abs().long() % 9],
    ),
    "buffer": Example({"shape": [2, 3], "value": 0.5}, [], [(2, 3)]),
    "constant": Example({"value": [0.4, 0.5, 0.6], "shape": [1, 3, 1, 1]}, [], [(1, 3, 1, 1)]),
    "softmax": Example({"dim": 1}, [IMG], [IMG]),
    "sqrt": Example({}, [IMG], [IMG], prepare=lambda xs: [xs[0].abs() + 0.5]),
    "sub": Example({"value": [0.1, 0.2, 0.3, 0.4]}, [IMG], [IMG]),
    "sum": Example({"dims": 1}, [IMG], [(2, 6, 6)]),
    "transpose": Example({"dim0": 1, "dim1": 2}, [(2, 4, 5, 6)], [(2, 5, 4, 6)]),
    "unflatten": Example({"dim": 1, "sizes": [2, -1]}, [IMG], [(2, 2, 2, 6, 6)]),
}

BLOCKS = [info.name for info in REGISTRY]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def example_for(name: str) -> Example:
    assert name in EXAMPLES, f"block {name!r} has no example: add one to EXAMPLES in this file"
    return EXAMPLES[name]


def build(info: BlockInfo, params: dict[str, Any], inputs: list[torch.Tensor]) -> Any:
    """Construct a block as the compiler does, filling in_ch / in_chs from the inputs."""
    kwargs = dict(params)
    names = info.signature.parameters
    if "in_ch" in names:
        assert len(info.inputs) == 1 and not info.variadic, "in_ch needs a single port"
        kwargs["in_ch"] = sum(x.shape[1] for x in inputs)
    if "in_chs" in names:
        kwargs["in_chs"] = [x.shape[1] for x in inputs]
    return info.factory(**kwargs)


def call(info: BlockInfo, block: Any, inputs: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Run a block as the compiler does: a list on a single fixed port is concatenated."""
    if len(info.inputs) == 1 and not info.variadic and len(inputs) > 1:
        inputs = [torch.cat(inputs, dim=1)]
    out = block(*inputs)
    return out if isinstance(out, tuple) else (out,)


def run_example(name: str, device: str = "cpu") -> tuple[Any, list[torch.Tensor], tuple]:
    info, example = REGISTRY.get(name), example_for(name)
    inputs = [torch.randn(s, device=device, requires_grad=True) for s in example.inputs]
    args = example.prepare(inputs) if example.prepare else inputs
    block = build(info, example.params, args).to(device)
    block.train()
    return block, inputs, call(info, block, args)


def test_every_example_names_a_registered_block() -> None:
    assert sorted(set(EXAMPLES) - set(BLOCKS)) == []


@pytest.mark.filterwarnings("ignore:VGG19 weights are RANDOM")
@pytest.mark.parametrize("name", BLOCKS)
def test_block_runs_and_differentiates(name: str) -> None:
    info = REGISTRY.get(name)
    block, inputs, outputs = run_example(name)

    assert [tuple(o.shape) for o in outputs] == example_for(name).outputs
    assert len(outputs) == len(info.outputs) + info.invertible  # a flow step's logdet
    trainable = [n for n, p in block.named_parameters() if p.requires_grad]
    # trainable=False promises no parameters; a trainable block's example should have some.
    assert bool(trainable) == info.trainable, trainable
    if not info.grad:
        assert not any(o.grad_fn is not None for o in outputs)  # nothing flows back
        return

    sum((o * torch.randn_like(o)).sum() for o in outputs).backward()
    for i, x in enumerate(inputs):
        if i in example_for(name).detached:
            assert x.grad is None, f"input {i} should be detached by the block"
            continue
        assert x.grad is not None and x.grad.isfinite().all(), f"input {i} gets no gradient"
    for pname, p in block.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.isfinite().all(), f"{pname} gets no gradient"


@pytest.mark.filterwarnings("ignore:VGG19 weights are RANDOM")
@pytest.mark.parametrize("name", BLOCKS)
def test_block_runs_on_meta_device(name: str) -> None:
    """Shape inference runs every block on the meta device before any data is read."""
    _, _, outputs = run_example(name, device="meta")
    assert [tuple(o.shape) for o in outputs] == example_for(name).outputs


@pytest.mark.parametrize("name", [n for n in BLOCKS if REGISTRY.get(n).kind != "loss"])
def test_cpu_shape_probe_gives_the_shapes_of_a_real_run(name: str) -> None:
    """Compiling infers shapes with CPU kernels, stateful blocks on an empty batch."""
    info, example = REGISTRY.get(name), example_for(name)
    probe = Probe("cpu", batch=example.inputs[0][0] if example.inputs else 1)
    tensors = [probe.tensor(s) for s in example.inputs]
    if len(info.inputs) == 1 and not info.variadic and len(tensors) > 1:
        tensors = [probe.cat(tensors)]
    kwargs = constructor_kwargs(name, example.params, tensors)
    assert probe.run(name, kwargs, tensors).out_shapes == example.outputs


@pytest.mark.parametrize("name", BLOCKS)
def test_block_schema_accepts_example_and_documents_every_param(name: str) -> None:
    info = REGISTRY.get(name)
    schema = block_schema(info)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    errors = [e.message for e in validator.iter_errors({"block": name, **example_for(name).params})]
    assert errors == []
    assert "in_ch" not in schema["properties"] and "in_chs" not in schema["properties"]
    assert schema["description"], f"{name} has no summary"
    for param in info.param_names():
        prop = schema["properties"][param]
        described = prop.get("description") or prop.get("anyOf", [{}])[0].get("description")
        assert described, f"{name}.{param} has no line in the docstring's Args"


def test_schema_rejects_a_misspelled_param() -> None:
    validator = jsonschema.Draft202012Validator(block_schema(REGISTRY.get("conv")))
    assert not validator.is_valid({"block": "conv", "out": 8, "kernal": 3})
    assert not validator.is_valid({"block": "conv", "out": 8, "act": "leaky"})


# --- conv, deconv, linear, norm ----------------------------------------------------------


def conv(**params: Any) -> Any:
    return REGISTRY.get("conv").factory(**params)


@pytest.mark.parametrize("kernel", [1, 3, 5, 7])
@pytest.mark.parametrize("dilation", [1, 2])
@pytest.mark.parametrize("pad_mode", ["zeros", "reflect", "replicate"])
def test_conv_same_padding_keeps_size(kernel: int, dilation: int, pad_mode: str) -> None:
    block = conv(in_ch=2, out=3, kernel=kernel, dilation=dilation, pad_mode=pad_mode)
    assert block(torch.randn(1, 2, 9, 11)).shape == (1, 3, 9, 11)


def test_conv_kernel4_stride2_halves_size_like_patchgan() -> None:
    assert conv(in_ch=3, out=4, kernel=4, stride=2)(torch.randn(1, 3, 16, 16)).shape == (1, 4, 8, 8)


@pytest.mark.parametrize(
    ("pad_mode", "flat"), [("zeros", False), ("reflect", True), ("replicate", True)]
)
def test_conv_pad_mode_decides_the_border(pad_mode: str, flat: bool) -> None:
    block = conv(in_ch=1, out=1, bias=False, pad_mode=pad_mode)
    torch.nn.init.ones_(block.weight)
    out = block(torch.ones(1, 1, 5, 5))
    assert out[0, 0, 2, 2] == 9  # the interior sees nine ones either way
    assert bool((out == 9).all()) is flat  # zero padding darkens the border


@pytest.mark.parametrize(("order", "sign"), [("cna", 1), ("nac", -1)])
def test_conv_order_puts_activation_after_or_before(order: str, sign: int) -> None:
    # A 1×1 conv that negates: cna gives relu(−x) ≥ 0, nac gives −relu(x) ≤ 0.
    block = conv(in_ch=1, out=1, kernel=1, bias=False, act="relu", order=order)
    torch.nn.init.constant_(block.weight, -1.0)
    x = torch.randn(1, 1, 4, 4)
    expected = F.relu(-x) if order == "cna" else -F.relu(x)
    torch.testing.assert_close(block(x), expected)
    assert (sign * block(x) >= 0).all()


def test_conv_nac_normalizes_the_input_channels() -> None:
    assert conv(in_ch=4, out=6, norm="batch", order="nac").norm.num_features == 4
    assert conv(in_ch=4, out=6, norm="batch", order="cna").norm.num_features == 6


def test_conv_spectral_norm_bounds_the_weight() -> None:
    block = conv(in_ch=3, out=4, spectral_norm=True)
    block.parametrizations.weight.original.data.mul_(10)
    for _ in range(30):  # one power iteration per training forward
        block(torch.randn(1, 3, 5, 5))
    sigma = torch.linalg.matrix_norm(block.weight.detach().flatten(1), ord=2)
    assert sigma == pytest.approx(1.0, abs=0.02)
    plain = conv(in_ch=3, out=4)
    plain.weight.data.mul_(10)
    assert torch.linalg.matrix_norm(plain.weight.detach().flatten(1), ord=2) > 2


def test_learned_layers_keep_community_state_dict_keys() -> None:
    """ESRGAN's conv_first.weight / SRGAN's bn0_1.running_mean load into same-named nodes."""
    assert set(conv(in_ch=3, out=8, act="lrelu").state_dict()) == {"weight", "bias"}
    bn = REGISTRY.get("norm").factory(in_ch=8, type="batch")
    assert set(bn.state_dict()) == {
        "weight",
        "bias",
        "running_mean",
        "running_var",
        "num_batches_tracked",
    }
    linear = REGISTRY.get("linear").factory(in_ch=8, out=1)
    assert set(linear.state_dict()) == {"weight", "bias"}


@pytest.mark.parametrize(("kernel", "stride"), [(4, 2), (3, 2), (2, 2), (3, 1), (1, 2), (6, 4)])
def test_deconv_default_padding_gives_exactly_stride_times(kernel: int, stride: int) -> None:
    block = REGISTRY.get("deconv").factory(in_ch=2, out=3, kernel=kernel, stride=stride)
    assert block(torch.randn(1, 2, 5, 7)).shape == (1, 3, 5 * stride, 7 * stride)


def test_deconv_impossible_exact_size_asks_for_padding() -> None:
    with pytest.raises(ValueError, match="set padding"):
        REGISTRY.get("deconv").factory(in_ch=2, out=3, kernel=4, stride=1)


def test_linear_on_images_maps_each_pixel_like_on_vectors() -> None:
    linear = REGISTRY.get("linear").factory(in_ch=4, out=3)
    x = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(linear(x)[:, :, 1, 2], linear(x[:, :, 1, 2]))


def test_layer_norm_normalizes_each_pixel_over_channels() -> None:
    norm = REGISTRY.get("norm").factory(in_ch=6, type="layer")
    y = norm(torch.randn(2, 6, 3, 3) * 5 + 2)
    torch.testing.assert_close(y.mean(dim=1), torch.zeros(2, 3, 3), atol=1e-5, rtol=0)


def test_instance_norm_follows_cyclegan_without_affine() -> None:
    assert list(REGISTRY.get("norm").factory(in_ch=4, type="instance").parameters()) == []
    with pytest.raises(ValueError, match="do not split into 32 groups"):
        REGISTRY.get("norm").factory(in_ch=12, type="group")


def test_prelu_slopes_must_be_shared_or_per_channel() -> None:
    with pytest.raises(ValueError, match="must be 1 or the input's channel count 4"):
        REGISTRY.get("act").factory(in_ch=4, type="prelu", num_parameters=3)


# --- shape and arithmetic ----------------------------------------------------------------


def test_pixel_shuffle_and_unshuffle_round_trip() -> None:
    x = torch.randn(2, 3, 8, 12)
    down = REGISTRY.get("pixel_unshuffle").factory(scale=4)
    up = REGISTRY.get("pixel_shuffle").factory(scale=4)
    assert down(x).shape == (2, 48, 2, 3)
    torch.testing.assert_close(up(down(x)), x, rtol=0, atol=0)


def test_residual_scales_the_branch_not_the_shortcut() -> None:
    x, y = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(REGISTRY.get("residual").factory(scale=0.2)(x, y), x + 0.2 * y)
    torch.testing.assert_close(REGISTRY.get("residual").factory()(x, y), x + y)


def test_split_then_concat_round_trip() -> None:
    x = torch.randn(2, 5, 3, 3)
    a, b = REGISTRY.get("split").factory(in_ch=5, sizes=(2, 3))(x)
    torch.testing.assert_close(a, x[:, :2])
    torch.testing.assert_close(REGISTRY.get("concat").factory()(a, b), x, rtol=0, atol=0)
    halves = REGISTRY.get("split").factory(in_ch=4)(torch.randn(1, 4, 2, 2))
    assert [h.shape[1] for h in halves] == [2, 2]


def test_split_sizes_must_match_the_channels() -> None:
    with pytest.raises(ValueError, match=r"sizes \[2, 2\] sum to 4, but the input has 5"):
        REGISTRY.get("split").factory(in_ch=5, sizes=(2, 2))


def test_detach_stops_gradients_and_clamp_needs_a_bound() -> None:
    x = torch.randn(3, requires_grad=True)
    assert not REGISTRY.get("detach").factory()(x).requires_grad
    with pytest.raises(ValueError, match="give min, max or both"):
        REGISTRY.get("clamp").factory()


def test_rearrange_rejects_a_bad_pattern_at_build_time() -> None:
    with pytest.raises(Exception, match="b c h w -> b c q"):
        REGISTRY.get("rearrange").factory(pattern="b c h w -> b c q")


def test_self_attention_starts_as_identity() -> None:
    block = REGISTRY.get("self_attention").factory(in_ch=8, heads=2, reduction=2)
    x = torch.randn(1, 8, 4, 4)
    torch.testing.assert_close(block(x), x)


# --- losses ------------------------------------------------------------------------------


REAL = torch.tensor([2.0, 0.0])
FAKE = torch.tensor([-1.0, 0.0])
# Relativistic: r − mean(f) = [2.5, 0.5], f − mean(r) = [−2, −1].
RR, RF = torch.tensor([2.5, 0.5]), torch.tensor([-2.0, -1.0])


def softplus(values: list[float]) -> float:
    return sum(math.log1p(math.exp(v)) for v in values) / len(values)


GAN_CASES = [
    # type, relativistic, target, expected
    ("lsgan", False, "discriminator", 0.5 * ((1 + 1) / 2 + (1 + 0) / 2)),
    ("lsgan", False, "generator", (4 + 1) / 2),
    ("vanilla", False, "discriminator", 0.5 * (softplus([-2, 0]) + softplus([-1, 0]))),
    ("vanilla", False, "generator", softplus([1, 0])),
    ("hinge", False, "discriminator", 0.5 * ((0 + 1) / 2 + (0 + 1) / 2)),
    ("hinge", False, "generator", 0.5),
    ("wgan", False, "discriminator", 0.5 * (-1 + -0.5)),
    ("wgan", False, "generator", 0.5),
    ("vanilla", True, "discriminator", 0.5 * (softplus([-2.5, -0.5]) + softplus([-2, -1]))),
    ("vanilla", True, "generator", 0.5 * (softplus([2.5, 0.5]) + softplus([2, 1]))),
    ("lsgan", True, "discriminator", 0.5 * ((2.25 + 0.25) / 2 + (4 + 1) / 2)),
    ("lsgan", True, "generator", 0.5 * ((6.25 + 0.25) / 2 + (9 + 4) / 2)),
    ("hinge", True, "discriminator", 0.5 * ((0 + 0.5) / 2 + (0 + 0) / 2)),
    ("hinge", True, "generator", 0.5 * ((3.5 + 1.5) / 2 + (3 + 2) / 2)),
]


@pytest.mark.parametrize(("type_", "relativistic", "target", "expected"), GAN_CASES)
def test_gan_loss_values(type_: str, relativistic: bool, target: str, expected: float) -> None:
    loss = REGISTRY.get("gan").factory(type=type_, relativistic=relativistic, target=target)
    assert loss(FAKE, REAL).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("type_", ["vanilla", "lsgan", "hinge", "wgan"])
def test_gan_losses_point_each_side_the_right_way(type_: str) -> None:
    d = REGISTRY.get("gan").factory(type=type_, target="discriminator")
    g = REGISTRY.get("gan").factory(type=type_, target="generator")
    high, low = torch.ones(4), -torch.ones(4)
    assert d(low, high) < d(high, low)  # D wants fake low and real high
    assert g(high) < g(low)  # G wants fake high


def test_gan_real_input_is_optional_only_for_standard_generator() -> None:
    fake = torch.randn(4)
    assert REGISTRY.get("gan").factory(target="generator")(fake).ndim == 0
    with pytest.raises(ValueError, match="needs both inputs"):
        REGISTRY.get("gan").factory(target="discriminator")(fake)
    with pytest.raises(ValueError, match="needs both inputs"):
        REGISTRY.get("gan").factory(target="generator", relativistic=True)(fake)


def test_pixel_losses() -> None:
    pred, target = torch.zeros(1, 1, 2, 2), torch.tensor([[[[1.0, -1.0], [3.0, 0.0]]]])
    assert REGISTRY.get("l1").factory()(pred, target).item() == pytest.approx(5 / 4)
    assert REGISTRY.get("mse").factory()(pred, target).item() == pytest.approx(11 / 4)
    charbonnier = REGISTRY.get("charbonnier").factory(eps=1e-3)
    assert charbonnier(pred, target).item() == pytest.approx(5 / 4, abs=1e-3)
    assert charbonnier(pred, pred).item() == pytest.approx(1e-3)
    with pytest.raises(
        ValueError, match=r"pred has shape \(1, 1, 2, 2\) but target \(1, 3, 2, 2\)"
    ):
        REGISTRY.get("l1").factory()(pred, torch.zeros(1, 3, 2, 2))


def test_tv_loss_measures_neighbour_differences() -> None:
    x = torch.tensor([[[[0.0, 1.0], [2.0, 4.0]]]])
    # vertical differences 2 and 3, horizontal 1 and 2
    assert REGISTRY.get("tv").factory(power=1)(x).item() == pytest.approx(2.5 + 1.5)
    assert REGISTRY.get("tv").factory(power=2)(x).item() == pytest.approx(6.5 + 2.5)
    assert REGISTRY.get("tv").factory()(torch.ones(1, 3, 4, 4)).item() == 0


def test_gradient_penalty_of_a_linear_critic() -> None:
    torch.manual_seed(0)
    real, fake = torch.rand(4, 3, 5, 5), torch.rand(4, 3, 5, 5)
    x = REGISTRY.get("interpolate").factory()(real, fake)
    assert x.requires_grad and x.grad_fn is None
    lo, hi = torch.minimum(real, fake), torch.maximum(real, fake)
    assert ((x >= lo - 1e-6) & (x <= hi + 1e-6)).all()  # between the two
    w = torch.randn(3, 5, 5, requires_grad=True)
    out = (x * w).sum((1, 2, 3))  # D(x) = <w, x>: its gradient is w everywhere
    penalty = REGISTRY.get("gradient_penalty").factory()(out, x)
    assert penalty.item() == pytest.approx((w.norm().item() - 1) ** 2, rel=1e-5)
    penalty.backward()
    assert w.grad is not None  # the penalty trains the critic
    with pytest.raises(ValueError, match="does not record gradients"):
        REGISTRY.get("gradient_penalty").factory()(out.detach(), x.detach())


def perceptual(**params: Any) -> Any:
    return REGISTRY.get("perceptual").factory(**params)


@pytest.fixture
def vgg_file(tmp_path):
    """Random VGG19 weights up to pool3, in torchvision's layout, plus classifier keys."""
    state = VGG19Features(["pool3"]).state_dict()
    state["classifier.0.weight"] = torch.zeros(2, 2)  # torchvision files carry the head too
    path = tmp_path / "vgg19.pth"
    torch.save(state, path)
    return path, state


def test_perceptual_loads_a_torchvision_file(vgg_file) -> None:
    path, state = vgg_file
    loss = perceptual(layers={"conv2_2": 1.0, "conv3_1": 0.5}, weights=str(path))
    torch.testing.assert_close(loss.vgg.features[10].weight, state["features.10.weight"])
    assert len(loss.vgg.features) == 11  # truncated after conv3_1 (index 10)
    x = torch.rand(1, 3, 16, 16)
    assert loss(x, x.clone()).item() == 0
    assert loss(x, torch.rand(1, 3, 16, 16)).item() > 0


def test_perceptual_gradient_reaches_pred_not_vgg(vgg_file) -> None:
    loss = perceptual(layers={"conv2_2": 1.0}, criterion="cosine", weights=str(vgg_file[0]))
    pred = torch.rand(1, 3, 16, 16, requires_grad=True)
    loss(pred, torch.rand(1, 3, 16, 16)).backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in loss.parameters())
    loss.train()
    assert not loss.vgg.training


def test_perceptual_before_act_selects_conv_or_relu_output(vgg_file) -> None:
    path = str(vgg_file[0])
    pred, target = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    after = perceptual(layers={"conv2_2": 1.0}, before_act=False, weights=path)(pred, target)
    relu = perceptual(layers={"relu2_2": 1.0}, weights=path)(pred, target)
    before = perceptual(layers={"conv2_2": 1.0}, before_act=True, weights=path)(pred, target)
    torch.testing.assert_close(after, relu)
    assert before != after


def test_perceptual_missing_files_name_the_fix(tmp_path, monkeypatch) -> None:
    missing = tmp_path / "nowhere.pth"
    with pytest.raises(FileNotFoundError, match="weights: random") as err:
        perceptual(layers={"conv1_1": 1.0}, weights=str(missing))
    assert str(missing) in str(err.value)

    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    with pytest.raises(FileNotFoundError) as err:
        perceptual(layers={"conv1_1": 1.0})
    assert str(hub / "checkpoints" / IMAGENET_FILE) in str(err.value)
    assert "never downloads" in str(err.value)


def test_perceptual_imagenet_is_read_from_torch_hub_cache(tmp_path, monkeypatch, vgg_file) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    vgg_file[0].rename(tmp_path / "hub" / "checkpoints" / IMAGENET_FILE)
    loss = perceptual(layers={"conv1_1": 1.0})
    torch.testing.assert_close(loss.vgg.features[0].weight, vgg_file[1]["features.0.weight"])


def test_perceptual_rejects_short_files_and_unknown_layers(vgg_file) -> None:
    with pytest.raises(ValueError, match="not a torchvision VGG19 state dict"):
        perceptual(layers={"conv5_4": 1.0}, weights=str(vgg_file[0]))
    with pytest.raises(ValueError, match="did you mean 'conv5_4'"):
        perceptual(layers={"conv5_5": 1.0}, weights="random")


def test_perceptual_random_weights_warn_loudly() -> None:
    with pytest.warns(UserWarning, match="RANDOM"):
        perceptual(layers={"conv1_2": 1.0}, weights="random")


def test_average_pool_can_leave_padding_out_of_the_mean() -> None:
    ones = torch.ones(1, 1, 4, 4)
    counted = REGISTRY.get("pool").factory(type="avg", kernel=3, stride=2, padding=1)(ones)
    left_out = REGISTRY.get("pool").factory(
        type="avg", kernel=3, stride=2, padding=1, count_include_pad=False
    )(ones)
    assert counted[0, 0, 0, 0].item() == pytest.approx(4 / 9)  # a corner: 4 pixels, 5 zeros
    assert torch.equal(left_out, torch.ones(1, 1, 2, 2))

"""Loss blocks beyond l1/mse/gan/perceptual: values on hand-computed or independently
computed cases, the invariances each loss promises, and gradients that reach pred."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.signal import correlate

import blocks.builtin  # noqa: F401  (registers the blocks)
from blocks.builtin.losses_extra import MS_SSIM_WEIGHTS, ms_ssim_scales
from blocks.builtin.vgg import VGG19Features
from blocks.registry import REGISTRY
from engine.metrics import ssim as ssim_metric


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def loss(name: str, **params: Any) -> Any:
    return REGISTRY.get(name).factory(**params)


def smooth_image(size: int, seed: int = 0) -> torch.Tensor:
    """An RGB image in [0, 1] with structure at several scales (1, 3, size, size)."""
    g = torch.Generator().manual_seed(seed)
    coarse = F.interpolate(torch.rand(1, 3, 6, 6, generator=g), size=size, mode="bicubic")
    return (0.8 * coarse + 0.2 * torch.rand(1, 3, size, size, generator=g)).clamp(0, 1)


PAIR_LOSSES = ["ssim", "ms_ssim", "multiscale_l1", "color", "luma", "fft"]


@pytest.mark.parametrize("name", PAIR_LOSSES)
def test_identical_images_cost_nothing_and_shapes_must_match(name: str) -> None:
    x = smooth_image(32)
    assert loss(name)(x, x.clone()).item() == pytest.approx(0, abs=1e-6)
    with pytest.raises(ValueError, match=rf"{name}: pred has shape \(1, 3, 32, 32\) but target"):
        loss(name)(x, x[:, :, :, :31])


@pytest.mark.parametrize("name", PAIR_LOSSES)
def test_a_gradient_step_on_pred_lowers_the_loss(name: str) -> None:
    target = smooth_image(32)
    pred = (target + 0.2 * torch.randn_like(target)).clamp(0, 1).requires_grad_()
    block = loss(name)
    before = block(pred, target)
    before.backward()
    assert pred.grad is not None and pred.grad.isfinite().all() and pred.grad.abs().sum() > 0
    with torch.no_grad():
        stepped = pred - 1e-3 * pred.grad / pred.grad.abs().max()
    assert block(stepped, target) < before


# --- ssim and ms_ssim --------------------------------------------------------------------


def test_ssim_is_one_minus_the_validation_metric() -> None:
    target = torch.cat([smooth_image(24, seed) for seed in range(2)])
    for noise in (0.02, 0.2):
        pred = (target + noise * torch.randn_like(target)).clamp(0, 1)
        expected = 1 - ssim_metric(pred, target)
        assert loss("ssim")(pred, target).item() == pytest.approx(expected, abs=1e-5)


def test_ssim_needs_a_window_sized_input() -> None:
    with pytest.raises(ValueError, match=r"ssim: needs a height and width of at least 11"):
        loss("ssim")(torch.rand(1, 3, 10, 16), torch.rand(1, 3, 10, 16))
    with pytest.raises(ValueError, match=r"ms_ssim: needs a height and width of at least 11"):
        loss("ms_ssim")(torch.rand(1, 3, 16, 8), torch.rand(1, 3, 16, 8))


@pytest.mark.parametrize(
    ("side", "scales"), [(11, 1), (21, 1), (22, 2), (64, 3), (128, 4), (175, 4), (176, 5)]
)
def test_ms_ssim_uses_the_scales_that_hold_a_window(side: int, scales: int) -> None:
    assert ms_ssim_scales(side, 400) == scales


def reference_ms_ssim(pred: torch.Tensor, target: torch.Tensor) -> float:
    """MS-SSIM of one image written out in float64 numpy: 2-D window, explicit pooling."""
    x, y = pred[0].double().numpy(), target[0].double().numpy()
    scales = ms_ssim_scales(*x.shape[-2:])
    weights = np.array(MS_SSIM_WEIGHTS[:scales])
    if scales < 5:
        weights = weights / weights.sum()
    t = np.arange(11) - 5.0
    g = np.exp(-(t**2) / 4.5)
    window = np.outer(g, g) / np.outer(g, g).sum()
    per_channel = []
    for xc, yc in zip(x, y, strict=True):
        value = 1.0
        for j in range(scales):
            if j:
                h, w = xc.shape[0] // 2, xc.shape[1] // 2
                xc = xc[: 2 * h, : 2 * w].reshape(h, 2, w, 2).mean(axis=(1, 3))
                yc = yc[: 2 * h, : 2 * w].reshape(h, 2, w, 2).mean(axis=(1, 3))
            mx, my = correlate(xc, window, "valid"), correlate(yc, window, "valid")
            vx = correlate(xc * xc, window, "valid") - mx**2
            vy = correlate(yc * yc, window, "valid") - my**2
            cov = correlate(xc * yc, window, "valid") - mx * my
            cs = (2 * cov + 0.03**2) / (vx + vy + 0.03**2)
            lum = (2 * mx * my + 0.01**2) / (mx**2 + my**2 + 0.01**2)
            term = (lum * cs).mean() if j == scales - 1 else cs.mean()
            value *= term ** weights[j]
        per_channel.append(value)
    return float(np.mean(per_channel))


@pytest.mark.parametrize("side", [176, 128, 40])
def test_ms_ssim_matches_an_independent_computation(side: int) -> None:
    target = smooth_image(side)
    pred = (target + 0.1 * torch.randn_like(target)).clamp(0, 1)
    expected = 1 - reference_ms_ssim(pred, target)
    assert loss("ms_ssim")(pred, target).item() == pytest.approx(expected, abs=1e-5)


def test_ms_ssim_with_one_scale_is_ssim() -> None:
    target = smooth_image(16)
    pred = (target + 0.1 * torch.randn_like(target)).clamp(0, 1)
    torch.testing.assert_close(loss("ms_ssim")(pred, target), loss("ssim")(pred, target))


def test_ms_ssim_of_anticorrelated_images_stays_finite() -> None:
    target = smooth_image(48).requires_grad_()
    value = loss("ms_ssim")(1 - target, target)
    value.backward()
    assert 0.9 < value.item() <= 1 and target.grad.isfinite().all()


# --- multiscale_l1 -----------------------------------------------------------------------


def test_multiscale_l1_hand_computed() -> None:
    pred, target = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]]), torch.zeros(1, 1, 2, 2)
    # full resolution: mean |x| = 2.5; pooled once: the mean pixel, 2.5
    block = loss("multiscale_l1", scales=2, weights=[1.0, 0.5])
    assert block(pred, target).item() == pytest.approx(2.5 + 0.5 * 2.5)
    # pred − target = [[1, −1], [−1, 1]] averages out at the coarse scale
    checker = torch.tensor([[[[1.0, -1.0], [-1.0, 1.0]]]])
    assert block(checker, target).item() == pytest.approx(1.0)


def test_multiscale_l1_of_a_constant_shift_is_the_shift_times_the_weights() -> None:
    target = torch.rand(2, 3, 16, 12)
    assert loss("multiscale_l1")(target + 0.1, target).item() == pytest.approx(0.1 * 1.75)
    block = loss("multiscale_l1", scales=4, weights=[1, 1, 1, 1])
    assert block(target - 0.2, target).item() == pytest.approx(0.8, rel=1e-5)


def test_multiscale_l1_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="weights has 2 entries but scales is 3"):
        loss("multiscale_l1", scales=3, weights=[1.0, 0.5])
    with pytest.raises(ValueError, match=r"4 scales need a height and width of at least 8"):
        loss("multiscale_l1", scales=4)(torch.rand(1, 3, 8, 6), torch.rand(1, 3, 8, 6))


# --- color and luma ----------------------------------------------------------------------


# A change of colour that keeps BT.601 luma: 0.299·0.1 + 0.587·(−0.1) + 0.114·0.257… = 0.
HUE_SHIFT = torch.tensor([0.1, -0.1, (0.587 - 0.299) * 0.1 / 0.114]).view(1, 3, 1, 1)


def test_a_brightness_shift_is_luma_not_color() -> None:
    target = torch.rand(2, 3, 16, 16) * 0.5
    assert loss("luma")(target + 0.2, target).item() == pytest.approx(0.2, rel=1e-5)
    assert loss("color")(target + 0.2, target).item() == pytest.approx(0, abs=1e-6)


@pytest.mark.parametrize("sigma", [0.0, 3.0])
def test_a_colour_shift_is_color_not_luma(sigma: float) -> None:
    target = torch.rand(2, 3, 16, 16) * 0.5
    dr, dg, db = HUE_SHIFT.flatten().tolist()
    # Chroma differences of a uniform shift, unchanged by a blur with replicated borders.
    d_cb = -0.168736 * dr - 0.331264 * dg + 0.5 * db
    d_cr = 0.5 * dr - 0.418688 * dg - 0.081312 * db
    expected = (abs(d_cb) + abs(d_cr)) / 2
    assert loss("color", sigma=sigma)(target + HUE_SHIFT, target).item() == pytest.approx(
        expected, rel=1e-5
    )
    assert loss("luma")(target + HUE_SHIFT, target).item() == pytest.approx(0, abs=1e-6)


def test_color_blur_ignores_fine_texture() -> None:
    target = torch.full((1, 3, 32, 32), 0.5)
    # a chroma checkerboard: strong per pixel, flat once blurred
    checker = (torch.arange(32).view(1, 32) + torch.arange(32).view(32, 1)) % 2 * 2 - 1
    pred = target + 0.1 * checker * HUE_SHIFT.sign()
    sharp, blurred = loss("color", sigma=0)(pred, target), loss("color", sigma=3)(pred, target)
    assert blurred < 0.05 * sharp


def test_color_and_luma_need_rgb() -> None:
    gray = torch.rand(1, 1, 8, 8)
    for name in ("color", "luma"):
        with pytest.raises(ValueError, match=rf"{name}: needs RGB images"):
            loss(name)(gray, gray)


# --- fft ---------------------------------------------------------------------------------


def test_fft_of_an_impulse_is_flat() -> None:
    # The orthonormal FFT of a·δ on an H×W image is a / sqrt(H·W) at every frequency.
    pred, target = torch.zeros(1, 1, 8, 6), torch.zeros(1, 1, 8, 6)
    pred[0, 0, 0, 0] = 3.0
    flat = 3.0 / math.sqrt(48)
    assert loss("fft", mode="amplitude")(pred, target).item() == pytest.approx(flat)
    # complex: the mean over real and imaginary parts, and the imaginary parts are 0
    assert loss("fft", mode="complex")(pred, target).item() == pytest.approx(flat / 2)


def test_fft_complex_sees_a_shift_amplitude_does_not() -> None:
    target = torch.rand(2, 3, 16, 16)
    shifted = torch.roll(target, shifts=(3, 5), dims=(-2, -1))
    assert loss("fft", mode="complex")(shifted, target).item() > 0.05
    assert loss("fft", mode="amplitude")(shifted, target).item() == pytest.approx(0, abs=1e-6)
    assert loss("fft", mode="amplitude")(target.flip(-1) * 0.5, target).item() > 0.05


# --- feature_matching --------------------------------------------------------------------


def test_feature_matching_is_the_mean_l1_of_each_pair_and_spares_the_real_side() -> None:
    fakes = [torch.randn(2, 4, 8, 8, requires_grad=True), torch.randn(2, 8, 4, 4)]
    reals = [torch.randn(2, 4, 8, 8, requires_grad=True), torch.randn(2, 8, 4, 4)]
    fakes[1].requires_grad_()
    value = loss("feature_matching")(*fakes, *reals)
    expected = sum((f - r).abs().mean() for f, r in zip(fakes, reals, strict=True)) / 2
    torch.testing.assert_close(value, expected)
    value.backward()
    assert fakes[0].grad is not None and fakes[1].grad is not None
    assert reals[0].grad is None


def test_feature_matching_input_errors_say_the_order() -> None:
    a, b = torch.randn(1, 2, 4, 4), torch.randn(1, 3, 4, 4)
    with pytest.raises(ValueError, match=r"fake features, then the real.*got 3"):
        loss("feature_matching")(a, a, a)
    with pytest.raises(ValueError, match=r"input 1 \(fake\) has shape \(1, 3, 4, 4\) but input 3"):
        loss("feature_matching")(a, b, a, a)


# --- VGG losses: style and contextual ----------------------------------------------------


def vgg_file(tmp_path, edit: Callable[[str, torch.Tensor], torch.Tensor]) -> str:
    """A VGG19 checkpoint up to pool3 in torchvision's layout, each tensor edited."""
    state = {k: edit(k, v) for k, v in VGG19Features(["pool3"]).state_dict().items()}
    path = tmp_path / "vgg19.pth"
    torch.save(state, path)
    return str(path)


def rgb_passthrough(key: str, value: torch.Tensor) -> torch.Tensor:
    """conv1_1 copies R, G, B into its first three channels; its other 61 are 0."""
    if key == "features.0.weight":
        value = torch.zeros_like(value)
        for c in range(3):
            value[c, c, 1, 1] = 1.0
    elif key == "features.0.bias":
        value = torch.zeros_like(value)
    return value


def mirror_symmetric(key: str, value: torch.Tensor) -> torch.Tensor:
    """Kernels equal to their left-right mirror: the trunk then commutes with a flip."""
    return (value + value.flip(-1)) / 2 if value.ndim == 4 else value


def test_style_gram_is_normalised_by_channels_and_positions(tmp_path) -> None:
    path = vgg_file(tmp_path, rgb_passthrough)
    block = loss("style", layers={"conv1_1": 2.0}, normalize=False, weights=path)
    pred, target = torch.full((1, 3, 4, 4), 0.5), torch.zeros(1, 3, 4, 4)
    # Gram of pred: 0.25 · 16 positions / (64 channels · 16) in its 3×3 RGB block, else 0;
    # l1 averages over all 64 × 64 entries.
    expected = 2.0 * 9 * (0.25 / 64) / 64**2
    assert block(pred, target).item() == pytest.approx(expected, rel=1e-5)


def test_style_ignores_where_texture_is_but_not_which(tmp_path) -> None:
    path = vgg_file(tmp_path, mirror_symmetric)
    layers = {"relu1_1": 1.0, "relu2_1": 1.0, "relu3_1": 1.0}
    block = loss("style", layers=layers, criterion="l2", weights=path)
    x = smooth_image(32)
    other = torch.rand(1, 3, 32, 32)  # white noise: another texture
    mirrored = block(x.flip(-1), x).item()
    different = block(other, x).item()
    assert different > 0
    assert mirrored < 1e-6 * different


def test_style_gradient_reaches_pred_not_vgg(tmp_path) -> None:
    block = loss("style", layers={"relu2_1": 1.0}, weights=vgg_file(tmp_path, mirror_symmetric))
    pred = torch.rand(1, 3, 16, 16, requires_grad=True)
    block(pred, torch.rand(1, 3, 16, 16)).backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in block.parameters())


def reference_contextual(x: np.ndarray, y: np.ndarray, h: float) -> float:
    """Mechrez et al.'s formula on (positions, channels) arrays, loop by loop."""
    centre = y.mean(axis=0)
    x = [(v - centre) / np.linalg.norm(v - centre) for v in x]
    y = [(v - centre) / np.linalg.norm(v - centre) for v in y]
    d = np.array([[max(1 - xi @ yj, 0.0) for yj in y] for xi in x])
    d_rel = d / (d.min(axis=1, keepdims=True) + 1e-5)
    w = np.exp((1 - d_rel) / h)
    cx = w / w.sum(axis=1, keepdims=True)
    return float(-np.log(cx.max(axis=0).mean()))


def contextual_on_pixels(tmp_path, **params: Any) -> Any:
    """A contextual loss whose features are the pixels' RGB values (conv1_1 passthrough)."""
    path = vgg_file(tmp_path, rgb_passthrough)
    return loss("contextual", layers={"conv1_1": 1.0}, normalize=False, weights=path, **params)


def test_contextual_matches_the_formula(tmp_path) -> None:
    block = contextual_on_pixels(tmp_path, band_width=0.5)
    pred, target = torch.rand(2, 3, 2, 3), torch.rand(2, 3, 2, 3)
    expected = np.mean(
        [
            reference_contextual(
                pred[n].flatten(1).T.double().numpy(), target[n].flatten(1).T.double().numpy(), 0.5
            )
            for n in range(2)
        ]
    )
    assert block(pred, target).item() == pytest.approx(expected, rel=1e-4)


def test_contextual_ignores_positions_and_grows_with_difference(tmp_path) -> None:
    block = contextual_on_pixels(tmp_path)
    x = torch.rand(1, 3, 8, 8)
    shuffled = x.flatten(2)[..., torch.randperm(64)].view(1, 3, 8, 8)
    assert block(x, x.clone()).item() == pytest.approx(0, abs=1e-4)
    assert block(shuffled, x).item() == pytest.approx(0, abs=1e-4)
    values = [block((x + s * torch.randn_like(x)).clamp(0, 1), x).item() for s in (0.05, 0.3)]
    values.append(block(torch.rand(1, 3, 8, 8), x).item())
    assert 0.01 < values[0] < values[1] and values[0] < values[2]


def test_contextual_subsamples_positions_to_bound_memory(tmp_path) -> None:
    block = contextual_on_pixels(tmp_path, max_patches=16)
    x = torch.rand(1, 3, 16, 16, requires_grad=True)
    assert block(x, x.detach().clone()).item() == pytest.approx(0, abs=1e-4)
    value = block(x, torch.rand(1, 3, 16, 16))
    value.backward()
    assert value.item() > 0 and x.grad is not None and x.grad.isfinite().all()
    assert (x.grad != 0).flatten(2).any(1).sum() <= 16  # only the sampled positions


def test_vgg_losses_share_the_perceptual_weight_rules(tmp_path) -> None:
    for name in ("style", "contextual"):
        with pytest.raises(ValueError, match=f"{name}: layers is empty"):
            loss(name, layers={}, weights="random")
        with pytest.raises(FileNotFoundError, match="weights: random"):
            loss(name, weights=str(tmp_path / "missing.pth"))


# --- VGG feature sharing inside a step ---------------------------------------------------


def count_layer_runs(module: VGG19Features) -> list[int]:
    """A counter of how many times each layer of the trunk runs."""
    runs = [0] * len(module.features)
    for i, layer in enumerate(module.features):
        layer.register_forward_hook(lambda *_, i=i: runs.__setitem__(i, runs[i] + 1))
    return runs


@pytest.mark.filterwarnings("ignore:VGG19 weights are RANDOM")
def test_vgg_losses_in_one_step_share_features_of_the_same_tensor() -> None:
    from blocks.memo import step_memo

    structure = loss("perceptual", layers={"conv2_2": 1.0}, weights="random")
    content = loss("perceptual", layers={"conv2_2": 1.0}, weights="random")
    deeper = loss("style", layers={"relu3_1": 1.0}, weights="random")
    trunks = {"s": structure.vgg, "c": content.vgg, "d": deeper.vgg}
    runs = {n: count_layer_runs(trunk) for n, trunk in trunks.items()}
    out = smooth_image(16, seed=1).requires_grad_()
    simple, photo = smooth_image(16, seed=2), smooth_image(16, seed=3)

    def total() -> torch.Tensor:
        return structure(out, simple) + content(out, photo) + deeper(out, photo)

    alone = total()
    (grad_alone,) = torch.autograd.grad(alone, out)
    runs_alone = {n: list(r) for n, r in runs.items()}
    with step_memo():
        shared = total()
    (grad_shared,) = torch.autograd.grad(shared, out)
    torch.testing.assert_close(shared, alone)
    torch.testing.assert_close(grad_shared, grad_alone)
    new = {n: [b - a for a, b in zip(runs_alone[n], r, strict=True)] for n, r in runs.items()}
    assert new["s"][0] == 2  # the output and the superpixel target
    assert new["c"][0] == 1  # only the photo: the output's features were shared
    # The style trunk needs relu3_1: it goes on from conv2_2 for the output and for the
    # photo, which the perceptual trunks already ran that far.
    assert new["d"][0] == 0 and new["d"][8] == 2 and new["d"][11] == 2


@pytest.mark.filterwarnings("ignore:VGG19 weights are RANDOM")
def test_vgg_sharing_stops_at_the_step_and_at_a_changed_tensor() -> None:
    from blocks.memo import step_memo

    a = loss("perceptual", layers={"conv1_2": 1.0}, weights="random")
    b = loss("perceptual", layers={"conv1_2": 1.0}, weights="random")
    runs = count_layer_runs(b.vgg)
    x, y = smooth_image(8, seed=1), smooth_image(8, seed=2)
    with step_memo():
        a(x, y)
        x.mul_(0.5)  # changed in place: its version moves on, so nothing is reused
        b(x, y)
    assert runs[0] == 1  # x again (y was shared)
    with step_memo():
        a(x, y)
    with step_memo():
        b(x, y)  # another step: computed afresh
    assert runs[0] == 3
    with torch.no_grad(), step_memo():
        a(x, y)
        b(x, y)  # with gradients and without are different computations
    assert runs[0] == 3


def test_vgg_random_weights_are_fixed_and_of_a_useful_scale() -> None:
    with pytest.warns(UserWarning, match="RANDOM"):
        first = loss("perceptual", layers={"conv4_4": 1.0}, weights="random")
    with pytest.warns(UserWarning, match="RANDOM"):
        second = loss("perceptual", layers={"conv2_2": 1.0}, weights="random")
    for key, value in second.vgg.state_dict().items():
        torch.testing.assert_close(value, first.vgg.state_dict()[key])  # a fixed draw
    features = first.vgg(smooth_image(32))["conv4_4"]
    # He initialization keeps activations near unit scale through 12 convolutions
    # (PyTorch's default init shrinks them to about 1e-5).
    assert 0.05 < features.std().item() < 20

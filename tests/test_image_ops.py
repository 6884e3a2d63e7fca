"""Behaviour of the image operations: guided_filter, color_shift, superpixel, image_pool."""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data, transform

import blocks.builtin  # noqa: F401  (registers the blocks)
from blocks.builtin.image_ops import segment_colors
from blocks.registry import REGISTRY


def block(name: str, **params):
    return REGISTRY.get(name).factory(**params)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def astronaut() -> torch.Tensor:
    """A real photo, 64×64, as a (1, 3, H, W) float tensor in [0, 1]."""
    image = transform.resize(data.astronaut(), (64, 64), anti_aliasing=True)
    return torch.from_numpy(image).permute(2, 0, 1)[None].float().contiguous()


# --- guided_filter -----------------------------------------------------------------------


def naive_guided_filter(x: np.ndarray, guide: np.ndarray, r: int, eps: float) -> np.ndarray:
    """He et al. on one (C, H, W) image, window by window, with explicit covariances."""
    _, h, w = x.shape
    guide = np.broadcast_to(guide, x.shape)

    def window(i: int, j: int) -> tuple[slice, slice]:
        return slice(max(i - r, 0), min(i + r, h - 1) + 1), slice(
            max(j - r, 0), min(j + r, w - 1) + 1
        )

    a, b = np.zeros_like(x), np.zeros_like(x)
    for i in range(h):
        for j in range(w):
            rows, cols = window(i, j)
            g, p = guide[:, rows, cols], x[:, rows, cols]
            mg, mp = g.mean(axis=(1, 2)), p.mean(axis=(1, 2))
            cov = ((g - mg[:, None, None]) * (p - mp[:, None, None])).mean(axis=(1, 2))
            var = ((g - mg[:, None, None]) ** 2).mean(axis=(1, 2))
            a[:, i, j] = cov / (var + eps)
            b[:, i, j] = mp - a[:, i, j] * mg
    out = np.zeros_like(x)
    for i in range(h):
        for j in range(w):
            rows, cols = window(i, j)
            out[:, i, j] = a[:, rows, cols].mean(axis=(1, 2)) * guide[:, i, j]
            out[:, i, j] += b[:, rows, cols].mean(axis=(1, 2))
    return out


@pytest.mark.parametrize("guide_channels", [None, 1, 3])
@pytest.mark.parametrize("radius", [1, 2, 6])
def test_guided_filter_equals_naive_windows(guide_channels: int | None, radius: int) -> None:
    x = torch.rand(2, 3, 7, 9, dtype=torch.float64)
    guide = None if guide_channels is None else torch.rand(2, guide_channels, 7, 9).double()
    out = block("guided_filter", radius=radius, eps=0.01)(x, guide)
    g = x if guide is None else guide
    for n in range(2):
        expected = naive_guided_filter(x[n].numpy(), g[n].numpy(), radius, 0.01)
        np.testing.assert_allclose(out[n].numpy(), expected, atol=1e-5, rtol=0)


def test_guided_filter_float32_matches_float64() -> None:
    x = torch.rand(1, 3, 16, 16, dtype=torch.float64)
    gf = block("guided_filter", radius=3, eps=0.05)
    torch.testing.assert_close(gf(x.float()).double(), gf(x), atol=1e-5, rtol=0)


def test_guided_filter_smooths_noise_but_keeps_a_step_edge() -> None:
    step = torch.zeros(1, 1, 32, 32)
    step[..., 16:] = 1.0
    noisy = step + 0.05 * torch.randn_like(step)
    radius = 2
    guided = block("guided_filter", radius=radius, eps=0.01)(noisy)
    box = F.avg_pool2d(noisy, 2 * radius + 1, stride=1, padding=radius, count_include_pad=False)

    flat = (slice(None), slice(None), slice(None), slice(2, 10))  # far from the edge
    assert guided[flat].std() < 0.6 * noisy[flat].std()
    guided_jump = (guided[..., 16] - guided[..., 15]).mean()
    box_jump = (box[..., 16] - box[..., 15]).mean()
    assert guided_jump > 0.8
    assert guided_jump > 3 * box_jump


def test_guided_filter_rejects_a_mismatched_guide() -> None:
    gf = block("guided_filter")
    with pytest.raises(ValueError, match=r"with 1 or 3 channels"):
        gf(torch.rand(1, 3, 8, 8), torch.rand(1, 2, 8, 8))
    with pytest.raises(ValueError, match=r"guide \(1, 1, 4, 4\) must match x \(1, 3, 8, 8\)"):
        gf(torch.rand(1, 3, 8, 8), torch.rand(1, 1, 4, 4))


# --- color_shift -------------------------------------------------------------------------


def one_hot_pixels(batch: int) -> torch.Tensor:
    """(batch, 3, 1, 3): pixel j is pure channel j, so the gray output reads the weights."""
    return torch.eye(3).reshape(1, 3, 1, 3).expand(batch, 3, 1, 3).contiguous()


def test_color_shift_fixed_is_the_luma_sum() -> None:
    x = torch.rand(2, 3, 4, 5)
    (gray,) = block("color_shift", mode="fixed")(x)
    expected = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    torch.testing.assert_close(gray, expected[:, None])


def test_color_shift_uniform_weights_stay_in_their_ranges() -> None:
    (w,) = block("color_shift")(one_hot_pixels(2000))
    w = w[:, 0, 0]  # (N, 3) normalised weights
    torch.testing.assert_close(w.sum(dim=1), torch.ones(2000))
    ranges = torch.tensor([[0.199, 0.399], [0.487, 0.687], [0.014, 0.214]])
    for c in range(3):
        others = [o for o in range(3) if o != c]
        # A normalised weight is smallest when the others are at their highs, and so on.
        lowest = ranges[c, 0] / (ranges[c, 0] + ranges[others, 1].sum())
        highest = ranges[c, 1] / (ranges[c, 1] + ranges[others, 0].sum())
        assert lowest <= w[:, c].min() and w[:, c].max() <= highest
    assert w[:, 0].min() < 0.22 and w[:, 0].max() > 0.37  # spread over the red range


def test_color_shift_gives_both_inputs_the_same_weights() -> None:
    x = torch.rand(8, 3, 6, 6)
    gx, gy = block("color_shift")(x, x.clone())
    torch.testing.assert_close(gx, gy, rtol=0, atol=0)
    gx, gw = block("color_shift")(x, one_hot_pixels(8))
    w = gw[:, 0, 0]  # the weights each sample got
    torch.testing.assert_close(gx, torch.einsum("nc,nchw->nhw", w, x)[:, None])
    assert (w[:, 0].max() - w[:, 0].min()) > 0.01  # a draw per sample


def test_color_shift_reproduces_under_a_seed() -> None:
    shift, x = block("color_shift"), torch.rand(4, 3, 5, 5)
    torch.manual_seed(3)
    first = shift(x)[0]
    torch.manual_seed(3)
    torch.testing.assert_close(shift(x)[0], first, rtol=0, atol=0)
    assert not torch.equal(shift(x)[0], first)


def test_color_shift_needs_rgb_and_matching_batches() -> None:
    with pytest.raises(ValueError, match=r"x must be \(N, 3, H, W\)"):
        block("color_shift")(torch.rand(1, 4, 3, 3))
    with pytest.raises(ValueError, match="same batch size"):
        block("color_shift")(torch.rand(2, 3, 3, 3), torch.rand(3, 3, 3, 3))


# --- superpixel --------------------------------------------------------------------------

METHODS = [{"method": "slic"}, {"method": "felzenszwalb", "min_size": 20}]


@pytest.mark.parametrize("params", METHODS, ids=lambda p: p["method"])
def test_superpixel_paints_each_segment_its_mean(astronaut: torch.Tensor, params) -> None:
    sp = block("superpixel", **params)
    out = sp(astronaut)
    labels = sp.segment(astronaut[0].permute(1, 2, 0).numpy())
    n_segments = labels.max() + 1
    colours = out[0].flatten(1).T.unique(dim=0)
    assert len(colours) <= n_segments < 64 * 64 / 10
    for label in range(n_segments):
        mask = torch.from_numpy(labels == label)
        inside = out[0][:, mask]
        torch.testing.assert_close(inside, inside[:, :1].expand_as(inside), rtol=0, atol=0)
        torch.testing.assert_close(inside[:, 0], astronaut[0][:, mask].mean(dim=1))


def test_superpixel_output_is_detached_and_keeps_dtype(astronaut: torch.Tensor) -> None:
    x = astronaut.double().requires_grad_()
    out = block("superpixel", segments=50)(x)
    assert not out.requires_grad
    assert out.dtype == torch.float64 and out.shape == x.shape


def test_superpixel_threads_give_the_in_process_result(astronaut: torch.Tensor) -> None:
    batch = torch.cat([astronaut, astronaut.flip(-1), astronaut.flip(-2)])
    for params in METHODS:
        threaded = block("superpixel", workers=2, coloring="adaptive", **params)
        expected = block("superpixel", workers=0, coloring="adaptive", **params)(batch)
        torch.testing.assert_close(threaded(batch), expected, rtol=0, atol=0)
        torch.testing.assert_close(threaded(batch), expected, rtol=0, atol=0)  # pool reused
    twin = copy.deepcopy(threaded)  # EMA copies deep-copy the graph
    torch.testing.assert_close(twin(batch), expected, rtol=0, atol=0)


def test_adaptive_colouring_picks_mean_or_median_by_std() -> None:
    # Three segments of 1 channel: calm (std 0.01), middling (std ≈ 0.12), wild (std ≈ 0.3).
    calm = np.array([0.50, 0.52, 0.51, 0.49, 0.50])
    middling = np.array([0.3, 0.3, 0.3, 0.3, 0.6])
    wild = np.array([0.1, 0.1, 0.1, 0.8, 0.8])
    image = np.concatenate([calm, middling, wild])[:, None, None]  # (H=15, W=1, C=1)
    labels = np.repeat([0, 1, 2], 5)[:, None]
    chosen = np.array([calm.mean(), (middling.mean() + 0.3) / 2, 0.1])
    for power in (1.0, 1.2):
        expected = chosen**power / (chosen**power).max()
        colours = segment_colors(image, labels, "adaptive", power)
        np.testing.assert_allclose(colours[:, 0], expected, rtol=1e-12)
    np.testing.assert_allclose(
        segment_colors(image, labels, "mean", 1.2)[:, 0], [0.504, 0.36, 0.38]
    )


def test_superpixel_adaptive_brightest_segment_is_one(astronaut: torch.Tensor) -> None:
    out = block("superpixel", coloring="adaptive")(astronaut * 0.8)
    assert out.max().item() == pytest.approx(1.0)
    assert out.min() >= 0


# --- image_pool --------------------------------------------------------------------------


def numbered(start: int, count: int) -> torch.Tensor:
    """`count` images, each filled with its own number, from `start`."""
    ids = torch.arange(start, start + count, dtype=torch.float32)
    return ids.reshape(-1, 1, 1, 1).expand(count, 2, 3, 3).contiguous()


def ids_of(images: torch.Tensor) -> list[int]:
    return [int(i) for i in images[:, 0, 0, 0]]


def test_image_pool_size_zero_passes_through() -> None:
    x = torch.randn(3, 2, 4, 4, requires_grad=True)
    out = block("image_pool", size=0)(x)
    torch.testing.assert_close(out, x.detach(), rtol=0, atol=0)
    assert not out.requires_grad


def test_image_pool_fills_then_mixes_old_and_new() -> None:
    pool = block("image_pool", size=4)
    assert ids_of(pool(numbered(0, 2))) == [0, 1]
    assert ids_of(pool(numbered(2, 2))) == [2, 3]  # full now
    stored = set(range(4))
    old_count = 0
    for step in range(100):
        new = [4 + 2 * step, 5 + 2 * step]
        x = numbered(new[0], 2).requires_grad_()
        out = pool(x)
        assert not out.requires_grad
        for got, fresh in zip(ids_of(out), new, strict=True):
            if got != fresh:  # an old image came back, the fresh one took its place
                assert got in stored
                stored = (stored - {got}) | {fresh}
                old_count += 1
        assert set(ids_of(pool.images)) == stored
    assert 60 < old_count < 140  # about half of 200


def test_image_pool_passes_through_in_eval_mode() -> None:
    pool = block("image_pool", size=2)
    pool(numbered(0, 2))
    pool.eval()
    assert ids_of(pool(numbered(10, 2))) == [10, 11]
    assert ids_of(pool.images) == [0, 1]


def test_image_pool_rejects_a_new_image_size() -> None:
    pool = block("image_pool", size=2)
    pool(torch.rand(1, 3, 4, 4))
    with pytest.raises(ValueError, match=r"shape \(3, 4, 4\), got a batch of \(3, 5, 5\)"):
        pool(torch.rand(1, 3, 5, 5))


@pytest.mark.parametrize("batches", [0, 1, 4])
def test_image_pool_checkpoint_round_trip(batches: int) -> None:
    pool = block("image_pool", size=5)
    for b in range(batches):
        pool(numbered(2 * b, 2))
    buffer = io.BytesIO()
    torch.save(pool.state_dict(), buffer)
    buffer.seek(0)
    restored = block("image_pool", size=5)
    restored.load_state_dict(torch.load(buffer))
    torch.testing.assert_close(restored.images, pool.images, rtol=0, atol=0)
    assert int(restored.count) == int(pool.count) == min(2 * batches, 5)
    for step in range(5):
        x = numbered(100 + 2 * step, 2)
        torch.manual_seed(step)
        expected = pool(x)
        torch.manual_seed(step)
        torch.testing.assert_close(restored(x), expected, rtol=0, atol=0)


def test_image_pool_checkpoint_of_another_size_names_the_fix() -> None:
    pool = block("image_pool", size=3)
    pool(numbered(0, 3))
    with pytest.raises(RuntimeError, match="holds 3 images but size is 5; set size: 3"):
        block("image_pool", size=5).load_state_dict(pool.state_dict())

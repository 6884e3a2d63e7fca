"""Image quality metrics for validation: PSNR and SSIM (RGB or Y, border crop), and
LPIPS (:mod:`engine.metrics.lpips`; lower is better, see ``LOWER_IS_BETTER``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.metrics import lpips as _lpips


def to_y(img: torch.Tensor) -> torch.Tensor:
    """ITU-R BT.601 luma of RGB in [0, 1], in [16/255, 235/255] as MATLAB's rgb2ycbcr."""
    r, g, b = img[:, 0:1], img[:, 1:2], img[:, 2:3]
    return (16.0 + 65.481 * r + 128.553 * g + 24.966 * b) / 255.0


def _prepare(
    pred: torch.Tensor, target: torch.Tensor, crop: int, y_channel: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    pred, target = pred.double().clamp(0, 1), target.double().clamp(0, 1)
    if y_channel and pred.shape[1] == 3:
        pred, target = to_y(pred), to_y(target)
    if crop:
        pred, target = pred[..., crop:-crop, crop:-crop], target[..., crop:-crop, crop:-crop]
    return pred, target


def psnr(
    pred: torch.Tensor, target: torch.Tensor, *, crop: int = 0, y_channel: bool = False
) -> float:
    """Peak signal-to-noise ratio in dB of images in [0, 1] (mean over the batch)."""
    pred, target = _prepare(pred, target, crop, y_channel)
    mse = ((pred - target) ** 2).flatten(1).mean(1)
    return float((10 * torch.log10(1.0 / mse.clamp_min(1e-12))).mean())


def _gaussian(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """The 1-D Gaussian; the 2-D window is its outer product with itself."""
    x = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(
    pred: torch.Tensor, target: torch.Tensor, *, crop: int = 0, y_channel: bool = False
) -> float:
    """Structural similarity (Wang et al. 2004: 11×11 Gaussian σ 1.5, K1 0.01, K2 0.03),
    averaged over channels and the batch; the window is applied without padding."""
    pred, target = _prepare(pred, target, crop, y_channel)
    c1, c2 = 0.01**2, 0.03**2
    channels = pred.shape[1]
    g = _gaussian().to(pred.device, pred.dtype)
    rows = g.view(1, 1, 11, 1).expand(channels, 1, 11, 1)
    cols = g.view(1, 1, 1, 11).expand(channels, 1, 1, 11)

    def blur(x: torch.Tensor) -> torch.Tensor:
        # The separable window in two passes: 22 multiplies a pixel instead of 121.
        return F.conv2d(F.conv2d(x, rows, groups=channels), cols, groups=channels)

    mu_x, mu_y = blur(pred), blur(target)
    var_x = blur(pred * pred) - mu_x**2
    var_y = blur(target * target) - mu_y**2
    cov = blur(pred * target) - mu_x * mu_y
    value = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    )
    return float(value.mean())


METRICS = {"psnr": psnr, "ssim": ssim, "lpips": _lpips.lpips}

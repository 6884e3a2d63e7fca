"""Antialiased image resizing with the usual kernels, as two matrix products.

Every output pixel is a weighted sum of input pixels along each axis; the weights
come from the kernel, stretched by the downscaling factor so that shrinking averages
instead of aliasing (as Pillow and MATLAB's ``imresize`` do). Weights near the border
are renormalized over the pixels that exist. The kernels: ``nearest``; ``area`` (box,
exact pixel averaging for integer factors); ``bilinear`` (triangle); ``bicubic``
(Keys, a = -0.5); ``lanczos`` (3 lobes). Their names are :data:`engine.data.kinds.KERNELS`.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from engine.data.kinds import KERNELS


def _box(x: torch.Tensor) -> torch.Tensor:
    return ((x > -0.5) & (x <= 0.5)).to(x.dtype)


def _triangle(x: torch.Tensor) -> torch.Tensor:
    return (1 - x.abs()).clamp(min=0)


def _cubic(x: torch.Tensor, a: float = -0.5) -> torch.Tensor:
    x = x.abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return torch.where(x < 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def _lanczos(x: torch.Tensor, lobes: int = 3) -> torch.Tensor:
    inside = x.abs() < lobes
    return torch.where(inside, torch.sinc(x) * torch.sinc(x / lobes), torch.zeros_like(x))


_FILTERS = {"area": _box, "bilinear": _triangle, "bicubic": _cubic, "lanczos": _lanczos}


@lru_cache(maxsize=256)
def weights(in_size: int, out_size: int, kernel: str) -> torch.Tensor:
    """The out_size x in_size matrix that resamples one axis."""
    scale = in_size / out_size
    centers = (torch.arange(out_size, dtype=torch.float64) + 0.5) * scale
    positions = torch.arange(in_size, dtype=torch.float64) + 0.5
    if kernel == "nearest":
        # the input pixel that contains the output pixel's center (as Pillow does)
        nearest = torch.clamp(torch.floor(centers).long(), 0, in_size - 1)
        return torch.nn.functional.one_hot(nearest, in_size).float()
    fn = _FILTERS[kernel]
    stretch = max(scale, 1.0)
    w = fn((positions[None, :] - centers[:, None]) / stretch)
    total = w.sum(dim=1, keepdim=True)
    return (w / torch.where(total == 0, torch.ones_like(total), total)).float()


def resize(image: torch.Tensor, size: tuple[int, int], kernel: str = "bicubic") -> torch.Tensor:
    """Resize ``image`` (..., H, W) to ``size`` = (height, width); float, clamped to [0, 1]."""
    if kernel not in KERNELS:
        raise ValueError(f"unknown resize kernel '{kernel}'; use {', '.join(KERNELS)}")
    height, width = image.shape[-2:]
    out_h, out_w = size
    if (out_h, out_w) == (height, width):
        return image
    rows = weights(height, out_h, kernel)
    cols = weights(width, out_w, kernel)
    out = torch.matmul(torch.matmul(rows, image), cols.T)
    return out.clamp_(0, 1) if kernel in ("bicubic", "lanczos") else out


def scaled_size(height: int, width: int, factor: float) -> tuple[int, int]:
    """The size of an image of ``height`` x ``width`` scaled by ``factor`` (at least 1x1)."""
    return max(1, math.floor(height * factor + 0.5)), max(1, math.floor(width * factor + 0.5))

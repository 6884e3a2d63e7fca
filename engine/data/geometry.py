"""Preprocess geometry: resize, crop, flips and rotations, planned once per sample.

A sample's planes (HR and LR, A and B, frames) share one :class:`Plan`, made in the
coordinates of the target (HR) side. LR planes are 1/``align`` of it: every crop
corner is a multiple of ``align`` (the scale), so the LR crop is exactly the HR crop
divided by the scale, at the matching place. Flips and 90° rotations (transposes) are
drawn once and applied to every plane alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine.data.imageio import to_tensor
from engine.data.options import DataOptions
from engine.data.resize import resize

Size = tuple[int, int]  # (height, width)


@dataclass(frozen=True)
class Plan:
    region: Size  # the aligned part of the source image used (top-left), target side
    resize_to: Size | None  # the region's size after the resize step, target side
    box: tuple[int, int, int, int]  # top, left, height, width after resizing, target side
    hflip: bool = False
    vflip: bool = False
    transpose: bool = False


def floor_to(value: int, unit: int) -> int:
    return value // unit * unit


def resized(region: Size, opts: DataOptions, align: int) -> Size:
    """The region's size after the preprocess resize step (unchanged without one)."""
    height, width = region
    load, crop = opts.load_size or 0, opts.crop_size or 0
    mode = opts.preprocess.resize
    if mode is None:
        return region
    if mode == "resize":
        height, width = load, load
    elif mode == "scale_width":
        height, width = max(round(height * load / width), crop), load
    else:  # scale_shortside
        factor = load / min(height, width)
        height, width = max(round(height * factor), crop), max(round(width * factor), crop)
    return max(floor_to(height, align), align), max(floor_to(width, align), align)


def too_small(region: Size, opts: DataOptions, align: int, multiple: int) -> str | None:
    """Why an image of ``region`` cannot make a sample, or None when it can."""
    height, width = resized(region, opts, align)
    if opts.preprocess.crop:
        crop = opts.crop_size or 0
        if height < crop or width < crop:
            return f"smaller than crop_size {crop} ({opts.where}.crop_size)"
        return None
    unit = align * multiple
    if height < unit or width < unit:
        return f"smaller than {unit} pixels, the size multiple the network needs at this scale"
    return None


def make_plan(
    region: Size,
    opts: DataOptions,
    *,
    align: int,
    multiple: int,
    train: bool,
    rng: np.random.Generator,
) -> Plan:
    """Where to crop and how to flip one sample whose target-side image is ``region``."""
    size = resized(region, opts, align)
    resize_to = size if opts.preprocess.resize else None
    height, width = size
    crop = opts.crop_size or 0
    draws = rng.random(5)  # drawn always, so later draws do not depend on the mode
    if opts.preprocess.crop == "crop":
        top = int(draws[0] * ((height - crop) // align + 1)) * align
        left = int(draws[1] * ((width - crop) // align + 1)) * align
        box = (top, left, crop, crop)
    elif opts.preprocess.crop == "center_crop":
        box = (
            floor_to((height - crop) // 2, align),
            floor_to((width - crop) // 2, align),
            crop,
            crop,
        )
    else:
        unit = align * multiple
        box = (0, 0, floor_to(height, unit), floor_to(width, unit))
    square = box[2] == box[3]
    return Plan(
        region=region,
        resize_to=resize_to,
        box=box,
        hflip=train and opts.flip and draws[2] < 0.5,
        vflip=train and opts.rotate and draws[3] < 0.5,
        transpose=train and opts.rotate and square and draws[4] < 0.5,
    )


def apply(pixels: np.ndarray, plan: Plan, div: int = 1, kernel: str = "bicubic") -> torch.Tensor:
    """One plane (HxWxC, at 1/``div`` of the target side) → float32 CxHxW, as planned.

    ``kernel`` is used by a resize step (probability maps use ``bilinear``, whose
    weights are never negative, so they stay probabilities).
    """
    top, left, height, width = (v // div for v in plan.box)
    region_h, region_w = (v // div for v in plan.region)
    pixels = pixels[:region_h, :region_w]
    if plan.resize_to is not None:
        size = (plan.resize_to[0] // div, plan.resize_to[1] // div)
        t = resize(to_tensor(pixels), size, kernel)
        t = t[:, top : top + height, left : left + width]
    else:
        t = to_tensor(pixels[top : top + height, left : left + width])
    return orient(t, plan)


def orient(t: torch.Tensor, plan: Plan) -> torch.Tensor:
    """The plan's flips and transpose on the last two dimensions of ``t``."""
    if plan.hflip:
        t = t.flip(-1)
    if plan.vflip:
        t = t.flip(-2)
    if plan.transpose:
        t = t.transpose(-1, -2)
    return t.contiguous()

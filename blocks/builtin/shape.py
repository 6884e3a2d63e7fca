"""Blocks that move, resize or regroup values without learning anything.

upsample, pixel_shuffle, pixel_unshuffle, pool, adaptive_pool, pad, pad_to_multiple,
crop_to, rearrange, concat and split. upsample, pad_to_multiple, crop_to and
adaptive_pool take their sizes from the input at run time.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import einops
import torch
import torch.nn.functional as F
from einops.layers.torch import Rearrange as EinopsRearrange
from torch import nn

from blocks.registry import Range, register

Positive = Annotated[int, Range(ge=1)]
NonNegative = Annotated[int, Range(ge=0)]


@register("upsample", inputs=("x", "like"), min_inputs=1, trainable=False)
class Upsample(nn.Module):
    """Resize by a scale factor, or to the H and W of a second input, with
    interpolation (ESRGAN upsamples by nearest ×2).

    With one input the output is scale × its size. With a second input ``like`` (and
    ``scale: null``) the output takes like's H and W, whatever they are at run time: a
    U-Net decoder resizing to its skip connection, a pyramid level back to the input.

    Args:
        scale: the factor applied to H and W (below 1 shrinks); null with a second
            input.
        mode: interpolation: nearest, bilinear, bicubic or area (the mean of the
            covered pixels, for shrinking).
        align_corners: align the corner pixels (bilinear and bicubic only).
        antialias: low-pass before shrinking (bilinear and bicubic only), as image
            libraries resize.
    """

    def __init__(
        self,
        *,
        scale: Annotated[float, Range(gt=0)] | None = 2.0,
        mode: Literal["nearest", "bilinear", "bicubic", "area"] = "nearest",
        align_corners: bool = False,
        antialias: bool = False,
    ) -> None:
        super().__init__()
        smooth = mode in ("bilinear", "bicubic")
        if align_corners and not smooth:
            raise ValueError(f"upsample: align_corners applies to bilinear and bicubic, not {mode}")
        if antialias and not smooth:
            raise ValueError(f"upsample: antialias applies to bilinear and bicubic, not {mode}")
        self.scale = None if scale is None else float(scale)
        self.mode = mode
        # F.interpolate rejects any align_corners value for nearest and area, even False.
        self.align_corners = align_corners if smooth else None
        self.antialias = antialias

    def forward(self, x: torch.Tensor, like: torch.Tensor | None = None) -> torch.Tensor:
        # Branches on which inputs the node has and on settings, never on values.
        if like is None:
            if self.scale is None:
                raise ValueError(
                    "upsample: scale is null, so it needs a second input to take H and W "
                    "from; give one, or a scale"
                )
            return F.interpolate(
                x,
                scale_factor=self.scale,
                mode=self.mode,
                align_corners=self.align_corners,
                antialias=self.antialias,
            )
        if self.scale is not None:
            raise ValueError("upsample: a second input sets the output's H and W; set scale: null")
        return F.interpolate(
            x,
            size=like.shape[-2:],
            mode=self.mode,
            align_corners=self.align_corners,
            antialias=self.antialias,
        )

    def extra_repr(self) -> str:
        return f"scale={self.scale}, mode={self.mode}"


@register("pixel_shuffle", trainable=False)
class PixelShuffle(nn.PixelShuffle):
    """Rearrange (N, C·s², H, W) into (N, C, H·s, W·s): sub-pixel upsampling.

    Args:
        scale: the upsampling factor s; the input channels must divide by s².
    """

    def __init__(self, *, scale: Positive = 2) -> None:
        super().__init__(scale)


@register("pixel_unshuffle", trainable=False)
class PixelUnshuffle(nn.PixelUnshuffle):
    """Rearrange (N, C, H·s, W·s) into (N, C·s², H, W), the inverse of pixel_shuffle.

    Args:
        scale: the downsampling factor s; H and W must divide by s.
    """

    def __init__(self, *, scale: Positive = 2) -> None:
        super().__init__(scale)


@register("pool", trainable=False)
class Pool(nn.Module):
    """Max or average pooling over square windows.

    Args:
        type: max or avg.
        kernel: window size.
        stride: step between windows; null means kernel (non-overlapping windows).
        padding: implicit padding on each side (at most half the kernel).
        count_include_pad: avg only: whether padded zeros count in a window's mean
            (false: border windows average only the pixels they cover, as
            pix2pixHD's multiscale discriminator pools).
    """

    def __init__(
        self,
        *,
        type: Literal["max", "avg"] = "max",
        kernel: Positive = 2,
        stride: Positive | None = None,
        padding: NonNegative = 0,
        count_include_pad: bool = True,
    ) -> None:
        super().__init__()
        if type == "max":
            self.pool: nn.Module = nn.MaxPool2d(kernel, stride=stride, padding=padding)
        else:
            self.pool = nn.AvgPool2d(
                kernel, stride=stride, padding=padding, count_include_pad=count_include_pad
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.pool(x)
        return out


@register("adaptive_pool", trainable=False)
class AdaptivePool(nn.Module):
    """Max or average pooling to a fixed output size, whatever the input size.

    Args:
        type: max or avg.
        size: output size, one number for a square or [height, width]; 1 gives global
            pooling; null for height or width keeps the input's (``[1, null]`` pools
            each column: coordinate attention, strip pooling).
    """

    def __init__(
        self,
        *,
        type: Literal["max", "avg"] = "avg",
        size: Positive | tuple[Positive | None, Positive | None] = 1,
    ) -> None:
        super().__init__()
        layer = nn.AdaptiveMaxPool2d if type == "max" else nn.AdaptiveAvgPool2d
        self.pool = layer(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.pool(x)
        return out


@register("pad", trainable=False)
class Pad(nn.Module):
    """Pad H and W (CycleGAN's ResNet pads by reflection before each unpadded conv).

    Args:
        amount: pixels on every side, or [left, right, top, bottom].
        mode: what the padding contains: zeros, a reflection or a replication of the
            border, or the opposite border (circular).
    """

    def __init__(
        self,
        *,
        amount: NonNegative | tuple[NonNegative, NonNegative, NonNegative, NonNegative],
        mode: Literal["zeros", "reflect", "replicate", "circular"] = "zeros",
    ) -> None:
        super().__init__()
        self.amount = (amount,) * 4 if isinstance(amount, int) else tuple(amount)
        self.mode = "constant" if mode == "zeros" else mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, self.amount, mode=self.mode)

    def extra_repr(self) -> str:
        return f"amount={self.amount}, mode={self.mode}"


@register("pad_to_multiple", trainable=False)
class PadToMultiple(nn.Module):
    """Pad H and W at the bottom and right up to the next multiple of a number.

    Window attention (SwinIR, Restormer's downsamplings, NAFNet's U-Net) needs sizes
    that divide by the window or by 2^levels; padding at run time lets the network take
    any size, and ``crop_to`` cuts the output back. Sizes that already divide are left
    as they are.

    Args:
        multiple: what H and W are padded to a multiple of: one number, or [height,
            width].
        mode: what the padding contains: zeros, a reflection (SwinIR) or a replication
            of the border. A reflection needs the padding to be smaller than the size.
    """

    def __init__(
        self,
        *,
        multiple: Positive | tuple[Positive, Positive],
        mode: Literal["zeros", "reflect", "replicate"] = "reflect",
    ) -> None:
        super().__init__()
        self.multiple = (multiple, multiple) if isinstance(multiple, int) else tuple(multiple)
        self.mode = "constant" if mode == "zeros" else mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        mh, mw = self.multiple
        # (−h) mod m is what h lacks to a multiple of m: 0 when it divides.
        return F.pad(x, (0, (-w) % mw, 0, (-h) % mh), mode=self.mode)

    def extra_repr(self) -> str:
        return f"multiple={list(self.multiple)}, mode={self.mode}"


@register("crop_to", inputs=("x", "like"), trainable=False)
class CropTo(nn.Module):
    """Crop x to factor × the H and W of a second input, at run time.

    After ``pad_to_multiple`` on the low-resolution input and a ×s network,
    ``{block: crop_to, in: [sr, lr], factor: s}`` cuts the padding's part of the output
    away; a U-Net without padding crops its skip connections with ``anchor: center``.

    Args:
        factor: the output is factor × like's H and W (a super-resolution scale; 1
            crops to like's size).
        anchor: keep the top-left corner (undoes pad_to_multiple, which pads bottom
            and right) or the center.
    """

    def __init__(
        self,
        *,
        factor: Positive = 1,
        anchor: Literal["top_left", "center"] = "top_left",
    ) -> None:
        super().__init__()
        self.factor = factor
        self.anchor = anchor

    def forward(self, x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        th, tw = like.shape[-2] * self.factor, like.shape[-1] * self.factor
        if th > h or tw > w:  # sizes, not values: a shape check
            raise ValueError(
                f"crop_to: cannot crop {h}×{w} to {th}×{tw} ({self.factor} × the second "
                "input's size); the second input must be smaller"
            )
        top, left = ((h - th) // 2, (w - tw) // 2) if self.anchor == "center" else (0, 0)
        return x[..., top : top + th, left : left + tw]

    def extra_repr(self) -> str:
        return f"factor={self.factor}, anchor={self.anchor}"


@register("rearrange", inputs=("x", "like"), min_inputs=1, trainable=False)
class Rearrange(nn.Module):
    """Reorder, merge or split axes with an einops pattern.

    Example: ``pattern: "b c h w -> b (c h w)"`` flattens for a linear head;
    ``pattern: "b (t c) h w -> b t c h w"`` with ``axes: {t: 3}`` splits frames.

    Lengths the pattern cannot infer come from ``axes``, or at run time from a second
    input ``like`` read with ``like_pattern``: window attention partitions an image into
    windows with ``"b c (h wh) (w ww) -> (b h w) (wh ww) c"`` and ``axes: {wh: 8, ww:
    8}``, and puts them back with ``"(b h w) (wh ww) c -> b c (h wh) (w ww)"``, ``in:
    {x: windows, like: image}`` and ``like_pattern: "b c (h wh) (w ww)"``: h and w are
    the image's H / 8 and W / 8, whatever its size.

    Args:
        pattern: the einops rearrange pattern.
        axes: lengths of axes the pattern cannot infer, by name.
        like_pattern: how the second input's shape splits into named axes (each
            parenthesized group is one dimension; at most one unknown name in a group,
            found by division); those lengths join ``axes``.
    """

    def __init__(
        self, *, pattern: str, axes: dict[str, int] | None = None, like_pattern: str | None = None
    ) -> None:
        super().__init__()
        self.pattern = pattern
        self.axes = dict(axes or {})
        self.like = _groups(like_pattern) if like_pattern is not None else None
        if self.like is None:  # parse now, so that a bad pattern fails at build time
            EinopsRearrange(pattern, **self.axes)
        # No einops layer kept as a submodule: the block stays stateless, so shape
        # inference runs it on a real batch. A pattern may merge the batch into another
        # axis (windows: "(b h w)"), which an empty batch would hide.

    def forward(self, x: torch.Tensor, like: torch.Tensor | None = None) -> torch.Tensor:
        if self.like is None:
            if like is not None:
                raise ValueError("rearrange: a second input 'like' needs 'like_pattern'")
            return einops.rearrange(x, self.pattern, **self.axes)
        if like is None:
            raise ValueError("rearrange: 'like_pattern' needs a second input 'like'")
        lengths = _lengths(self.like, like.shape, self.axes)
        return einops.rearrange(x, self.pattern, **lengths)


def _groups(pattern: str) -> list[list[str]]:
    """``"b c (h wh) w"`` → ``[["b"], ["c"], ["h", "wh"], ["w"]]``."""
    groups: list[list[str]] = []
    current: list[str] | None = None
    for token in pattern.replace("(", " ( ").replace(")", " ) ").split():
        if token == "(":
            if current is not None:
                raise ValueError(f"rearrange: nested parentheses in like_pattern '{pattern}'")
            current = []
        elif token == ")":
            if not current:
                raise ValueError(f"rearrange: an empty or unopened group in '{pattern}'")
            groups.append(current)
            current = None
        elif not token.isidentifier():
            raise ValueError(f"rearrange: '{token}' is not an axis name in '{pattern}'")
        elif current is not None:
            current.append(token)
        else:
            groups.append([token])
    if current is not None:
        raise ValueError(f"rearrange: an unclosed group in like_pattern '{pattern}'")
    return groups


def _lengths(groups: list[list[str]], shape: torch.Size, known: dict[str, int]) -> dict[str, int]:
    if len(groups) != len(shape):
        raise ValueError(
            f"rearrange: like_pattern names {len(groups)} dimensions, the input 'like' has "
            f"{len(shape)} ({tuple(shape)})"
        )
    lengths = dict(known)
    for group, size in zip(groups, shape, strict=True):
        unknown = [n for n in group if n not in lengths]
        if len(unknown) > 1:
            raise ValueError(
                f"rearrange: like_pattern group ({' '.join(group)}) has two unknown lengths; "
                "give all but one in 'axes'"
            )
        product = math.prod(lengths[n] for n in group if n in lengths)
        if unknown:
            if size % product:
                raise ValueError(
                    f"rearrange: a length of {size} in 'like' does not divide by "
                    f"{product} for ({' '.join(group)})"
                )
            lengths[unknown[0]] = size // product
        elif product != size:
            raise ValueError(
                f"rearrange: ({' '.join(group)}) is {product} long, the input 'like' has {size}"
            )
    return lengths


@register("concat", variadic=True, min_inputs=2, trainable=False)
class Concat(nn.Module):
    """Concatenate the inputs, in order, along one dimension.

    A node whose ``in:`` is a list already concatenates along channels; use this block
    for another dimension or to name the concatenation.

    Args:
        dim: the dimension to join along (1 is channels).
    """

    def __init__(self, *, dim: int = 1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, dim=self.dim)


@register("split", outputs=("a", "b"), trainable=False)
class Split(nn.Module):
    """Split the channels in two parts: output ``a`` takes the first, ``b`` the rest.

    SFT's scale and shift, a flow's coupling halves, RIFE's flow and mask are all
    two-way splits; for more parts, chain splits.

    Args:
        sizes: channels of a and of b, summing to the input's; null splits in equal
            halves.
    """

    def __init__(self, *, in_ch: int, sizes: tuple[Positive, Positive] | None = None) -> None:
        super().__init__()
        if sizes is None:
            if in_ch % 2:
                raise ValueError(
                    f"split: {in_ch} input channels do not split in equal halves; give sizes"
                )
            sizes = (in_ch // 2, in_ch // 2)
        if sum(sizes) != in_ch:
            raise ValueError(
                f"split: sizes {list(sizes)} sum to {sum(sizes)}, but the input has "
                f"{in_ch} channels"
            )
        self.sizes = tuple(sizes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = torch.split(x, list(self.sizes), dim=1)
        return a, b

    def extra_repr(self) -> str:
        return f"sizes={self.sizes}"

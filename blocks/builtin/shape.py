"""Blocks that move, resize or regroup values without learning anything.

upsample, pixel_shuffle, pixel_unshuffle, pool, adaptive_pool, pad, rearrange,
concat and split.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from einops.layers.torch import Rearrange as EinopsRearrange
from torch import nn

from blocks.registry import Range, register

Positive = Annotated[int, Range(ge=1)]
NonNegative = Annotated[int, Range(ge=0)]


@register("upsample", trainable=False)
class Upsample(nn.Module):
    """Resize by a scale factor with interpolation (ESRGAN upsamples by nearest ×2).

    Args:
        scale: the factor applied to H and W (below 1 shrinks).
        mode: interpolation: nearest, bilinear or bicubic.
        align_corners: align the corner pixels (bilinear and bicubic only).
    """

    def __init__(
        self,
        *,
        scale: Annotated[float, Range(gt=0)] = 2.0,
        mode: Literal["nearest", "bilinear", "bicubic"] = "nearest",
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        if mode == "nearest" and align_corners:
            raise ValueError("upsample: align_corners applies to bilinear and bicubic, not nearest")
        self.scale = float(scale)
        self.mode = mode
        # F.interpolate rejects any align_corners value for nearest, even False.
        self.align_corners = None if mode == "nearest" else align_corners

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(
            x, scale_factor=self.scale, mode=self.mode, align_corners=self.align_corners
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
            pooling.
    """

    def __init__(
        self,
        *,
        type: Literal["max", "avg"] = "avg",
        size: Positive | tuple[Positive, Positive] = 1,
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


@register("rearrange", trainable=False)
class Rearrange(nn.Module):
    """Reorder, merge or split axes with an einops pattern.

    Example: ``pattern: "b c h w -> b (c h w)"`` flattens for a linear head;
    ``pattern: "b (t c) h w -> b t c h w"`` with ``axes: {t: 3}`` splits frames.

    Args:
        pattern: the einops rearrange pattern.
        axes: lengths of axes the pattern cannot infer, by name.
    """

    def __init__(self, *, pattern: str, axes: dict[str, int] | None = None) -> None:
        super().__init__()
        # The einops layer parses the pattern now, so a bad pattern fails at build time.
        self.op = EinopsRearrange(pattern, **(axes or {}))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.op(x)
        return out


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

"""Small blocks that published SR architectures need and the general ones do not say.

mean_shift (the EDSR family's colour normalization, with its weight keys) and
repeat_interleave (PLKSR's and RealPLKSR's input skip over scale² channels).
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import nn

from blocks.registry import Range, register

#: DIV2K's RGB mean, the constant EDSR, RCAN, SAN, HAN and SPAN subtract.
DIV2K_MEAN = (0.4488, 0.4371, 0.4040)


@register("mean_shift", trainable=False)
class MeanShift(nn.Module):
    """Subtract (or add back) a per-channel mean and divide by a per-channel std, as a
    1×1 conv whose weight and bias are constants: EDSR's and RCAN's ``MeanShift``.

    The output is ``(x + sign · rgb_range · mean) / std`` with sign −1 for ``sub`` and +1 for
    ``add``. The weight (C, C, 1, 1), identity / std, and the bias (C,) are persistent
    buffers, so they are in the state dict under the node's name (``sub_mean.weight``,
    ``sub_mean.bias``: the keys community checkpoints carry, and what loading them
    restores) but are never trained. EDSR meant them constant; RCAN's code left them
    trainable by mistake, which is why reference implementations count them as
    parameters.

    Args:
        sign: sub subtracts the mean (before the network), add adds it back (after).
        mean: the mean of each channel, in the data's range before ``rgb_range`` scales it.
        std: the standard deviation of each channel; null divides by 1.
        rgb_range: the value range the network works in (RCAN: 255, the mean then scaled
            to match).
    """

    weight: torch.Tensor
    bias: torch.Tensor

    def __init__(
        self,
        *,
        in_ch: int,
        sign: Literal["sub", "add"] = "sub",
        mean: tuple[float, ...] = DIV2K_MEAN,
        std: tuple[float, ...] | None = None,
        rgb_range: Annotated[float, Range(gt=0)] = 1.0,
    ) -> None:
        super().__init__()
        std = std if std is not None else (1.0,) * len(mean)
        if len(mean) != in_ch or len(std) != in_ch:
            raise ValueError(
                f"mean_shift: {in_ch} input channels but {len(mean)} means and {len(std)} "
                "stds; give one value per channel"
            )
        if min(std) <= 0:
            raise ValueError(f"mean_shift: std {list(std)} must be positive")
        deviation = torch.tensor(std, dtype=torch.float32)
        weight = torch.eye(in_ch).view(in_ch, in_ch, 1, 1) / deviation.view(-1, 1, 1, 1)
        direction = -1.0 if sign == "sub" else 1.0
        bias = direction * rgb_range * torch.tensor(mean, dtype=torch.float32) / deviation
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)
        self.sign = sign

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight.to(x.dtype), self.bias.to(x.dtype))

    def extra_repr(self) -> str:
        return f"sign={self.sign}"


@register("repeat_interleave", trainable=False)
class RepeatInterleave(nn.Module):
    """Repeat every entry of one dimension ``repeats`` times, copies side by side
    (torch.repeat_interleave): channels ``[r, g, b]`` with 4 repeats become
    ``[r, r, r, r, g, …, b]``.

    Before a pixel shuffle by s, repeating the input's channels s² times makes each
    output pixel a copy of its low-resolution pixel: PLKSR and RealPLKSR add that
    nearest upscaling of the input to their output this way.

    Args:
        repeats: copies of each entry.
        dim: the dimension repeated (1 is channels).
    """

    def __init__(self, *, repeats: Annotated[int, Range(ge=1)], dim: int = 1) -> None:
        super().__init__()
        self.repeats, self.dim = repeats, dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.repeat_interleave(x, self.repeats, dim=self.dim)

    def extra_repr(self) -> str:
        return f"repeats={self.repeats}, dim={self.dim}"

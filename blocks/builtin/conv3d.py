"""3-D convolution over (N, C, T, H, W): layers that mix neighbouring frames.

Video models without explicit alignment (traiNNer's 3-D conv ESRGAN, DUF) convolve
over time as well as space, so motion is learned by the kernels. ``conv`` stays 2-D;
a window of frames reaches this block after a ``rearrange`` to channels-first
``b c t h w``, and a ``rearrange`` back to ``b (c t) h w`` hands it to 2-D layers.
"""

from __future__ import annotations

from typing import Annotated

import torch
from torch import nn

from blocks.builtin.layers import ActType, make_act
from blocks.registry import Range, register

Positive = Annotated[int, Range(ge=1)]
NonNegative = Annotated[int, Range(ge=0)]


def _triple(value: int | list[int], name: str) -> tuple[int, int, int]:
    """One number for a cube, or [time, height, width]."""
    if isinstance(value, int):
        return value, value, value
    if len(value) != 3:
        raise ValueError(f"conv3d: {name} is one number or [time, height, width], got {value}")
    return value[0], value[1], value[2]


@register("conv3d")
class Conv3d(nn.Conv3d):
    """3-D convolution over (N, C, T, H, W) with an optional activation.

    The time axis is convolved like height and width: a kernel of [3, 3, 3] mixes each
    frame with its two neighbours. The default padding keeps T, H and W ("same" for odd
    kernels), so T frames stay T frames until a layer with time kernel T and time
    padding 0 fuses them into one. ``weight`` and ``bias`` are at the node's top level,
    as ``nn.Conv3d`` keeps them.

    Args:
        out: output channels.
        kernel: kernel size, one number for a cube or [time, height, width].
        stride: stride, one number or [time, height, width].
        padding: padding, one number or [time, height, width]; null pads (k − 1) // 2
            on each axis, which keeps every size for odd kernels at stride 1.
        bias: learn an additive bias.
        act: activation after the conv.
        slope: negative slope of lrelu.
    """

    def __init__(
        self,
        *,
        in_ch: int,
        out: Positive,
        kernel: Positive | list[Positive] = 3,
        stride: Positive | list[Positive] = 1,
        padding: NonNegative | list[NonNegative] | None = None,
        bias: bool = True,
        act: ActType = "none",
        slope: float = 0.2,
    ) -> None:
        size = _triple(kernel, "kernel")
        same = ((size[0] - 1) // 2, (size[1] - 1) // 2, (size[2] - 1) // 2)
        pad = same if padding is None else _triple(padding, "padding")
        super().__init__(in_ch, out, size, stride=_triple(stride, "stride"), padding=pad, bias=bias)
        self.act = make_act(act, slope=slope)
        self._post = [] if isinstance(self.act, nn.Identity) else [self.act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5:
            raise ValueError(
                f"conv3d takes (N, C, T, H, W); got shape {tuple(x.shape)} (rearrange a "
                "window of frames with 'b t c h w -> b c t h w' first)"
            )
        x = self._conv_forward(x, self.weight, self.bias)
        for layer in self._post:
            x = layer(x)
        return x

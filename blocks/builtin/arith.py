"""Elementwise arithmetic and pass-through blocks, none with parameters.

add, multiply, scale, residual, clamp, dropout, identity and detach.
"""

from __future__ import annotations

from typing import Annotated

import torch
from torch import nn

from blocks.registry import Range, register


@register("add", variadic=True, min_inputs=2, trainable=False)
class Add(nn.Module):
    """Sum of the inputs (broadcasting, as torch does)."""

    def __init__(self) -> None:
        super().__init__()

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        total = xs[0]
        for x in xs[1:]:
            total = total + x
        return total


@register("multiply", variadic=True, min_inputs=2, trainable=False)
class Multiply(nn.Module):
    """Product of the inputs (broadcasting: a (N, 1, H, W) mask gates every channel)."""

    def __init__(self) -> None:
        super().__init__()

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        product = xs[0]
        for x in xs[1:]:
            product = product * x
        return product


@register("scale", trainable=False)
class Scale(nn.Module):
    """Multiply by a constant.

    Args:
        factor: the constant.
    """

    def __init__(self, *, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


@register("residual", inputs=("x", "y"), trainable=False)
class Residual(nn.Module):
    """Skip connection: ``x + scale · y``, with x the shortcut and y the branch.

    ESRGAN scales each dense block's and each RRDB's branch by 0.2.

    Args:
        scale: weight of the branch y.
    """

    def __init__(self, *, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # A settings branch, not a value branch: the compiler writes either as code.
        return x + y if self.scale == 1 else x + self.scale * y

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


@register("clamp", trainable=False)
class Clamp(nn.Module):
    """Limit values to [min, max]; no gradient flows where a value is clipped.

    Args:
        min: lower bound; null for none.
        max: upper bound; null for none.
    """

    def __init__(self, *, min: float | None = None, max: float | None = None) -> None:
        super().__init__()
        if min is None and max is None:
            raise ValueError("clamp: give min, max or both")
        if min is not None and max is not None and min > max:
            raise ValueError(f"clamp: min {min} is above max {max}")
        self.min = min
        self.max = max

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(self.min, self.max)

    def extra_repr(self) -> str:
        return f"min={self.min}, max={self.max}"


@register("dropout", trainable=False)
class Dropout(nn.Module):
    """Zero values at random while training, scaling the rest by 1 / (1 − p).

    Args:
        p: probability of zeroing.
        channelwise: zero whole channels (Dropout2d) instead of single values.
    """

    def __init__(
        self, *, p: Annotated[float, Range(ge=0, le=1)] = 0.5, channelwise: bool = False
    ) -> None:
        super().__init__()
        self.drop = nn.Dropout2d(p) if channelwise else nn.Dropout(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.drop(x)
        return out


@register("identity", trainable=False)
class Identity(nn.Module):
    """Pass the input through unchanged (a named tap or placeholder)."""

    def __init__(self) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@register("detach", kind="op", grad=False, trainable=False)
class Detach(nn.Module):
    """The input's value with no gradient path back (D's view of fake images)."""

    def __init__(self) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.detach()

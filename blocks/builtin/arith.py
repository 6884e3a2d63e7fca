"""Elementwise arithmetic and pass-through blocks, none with parameters.

add, multiply, sub, div, scale, residual, clamp, dropout, identity and detach. The
elementwise ones take a second input or a constant ``value`` (a number, or a list of
one value per channel).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Annotated, Any

import torch
from torch import nn

from blocks.registry import Range, register

#: A constant operand: one number, or one value per channel of (..., C, H, W) input.
Constant = float | list[float]


class _WithConstant(nn.Module):
    """A block with an optional constant operand, kept as ``constant``.

    A number stays a Python float, so the compiler writes it into the generated code
    (``x - 0.5``); a list becomes a non-persistent buffer of shape (C, 1, 1) that moves
    with the network and stays out of its state dict.
    """

    constant: float | torch.Tensor | None

    def keep_constant(self, value: Constant | None) -> None:
        if isinstance(value, list | tuple):
            if not value:
                raise ValueError("value: give a number or a non-empty list, one per channel")
            per_channel = torch.tensor([float(v) for v in value]).view(-1, 1, 1)
            self.register_buffer("constant", per_channel, persistent=False)
        else:
            self.constant = None if value is None else float(value)


def _apply_constant(
    op: Callable[[Any, Any], torch.Tensor],
    x: torch.Tensor,
    constant: float | torch.Tensor | None,
    reverse: bool = False,
) -> torch.Tensor:
    """``op(x, constant)`` (``op(constant, x)`` when reversed); a per-channel constant in
    x's dtype, so half-precision activations stay half."""
    if constant is None:
        return x
    c = constant.to(dtype=x.dtype) if isinstance(constant, torch.Tensor) else constant
    return op(c, x) if reverse else op(x, c)


def _check_operands(block: str, count: int, constant: object) -> None:
    if count < 2 and constant is None:
        raise ValueError(f"{block}: one input and no value; give a second input or value")


@register("add", variadic=True, min_inputs=1, trainable=False)
class Add(_WithConstant):
    """Sum of the inputs (broadcasting, as torch does), plus a constant if given.

    Args:
        value: a constant added to the sum, a number or one value per channel (a list,
            broadcast over (..., C, H, W)); with it one input is enough.
    """

    def __init__(self, *, value: Constant | None = None) -> None:
        super().__init__()
        self.keep_constant(value)

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        _check_operands("add", len(xs), self.constant)
        total = xs[0]
        for x in xs[1:]:
            total = total + x
        return _apply_constant(operator.add, total, self.constant)


@register("multiply", variadic=True, min_inputs=1, trainable=False)
class Multiply(_WithConstant):
    """Product of the inputs (broadcasting: a (N, 1, H, W) mask gates every channel),
    times a constant if given.

    Args:
        value: a constant factor, a number or one value per channel (a list, broadcast
            over (..., C, H, W): a per-channel std for normalization); with it one input
            is enough.
    """

    def __init__(self, *, value: Constant | None = None) -> None:
        super().__init__()
        self.keep_constant(value)

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        _check_operands("multiply", len(xs), self.constant)
        product = xs[0]
        for x in xs[1:]:
            product = product * x
        return _apply_constant(operator.mul, product, self.constant)


class _Binary(_WithConstant):
    """x ∘ y, or x ∘ value (value ∘ x when reversed): sub and div."""

    def __init__(
        self,
        name: str,
        op: Callable[[Any, Any], torch.Tensor],
        value: Constant | None,
        reverse: bool,
    ) -> None:
        super().__init__()
        if reverse and value is None:
            raise ValueError(f"{name}: reverse needs a value (it computes value {name} x)")
        self.name = name
        self.op = op
        self.reverse = reverse
        self.keep_constant(value)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if (y is None) == (self.constant is None):
            raise ValueError(f"{self.name}: give either a second input y or value, not both")
        if y is not None:
            return self.op(x, y)
        return _apply_constant(self.op, x, self.constant, self.reverse)

    def extra_repr(self) -> str:
        return f"reverse={self.reverse}" if self.reverse else ""


@register("sub", inputs=("x", "y"), min_inputs=1, trainable=False)
class Sub(_Binary):
    """Difference ``x − y`` of two inputs, or ``x − value`` with a constant.

    Mean subtraction before a restoration network (EDSR, RCAN, SwinIR) is
    ``{block: sub, in: lr, value: [0.4488, 0.4371, 0.4040]}``; ``1 − mask`` is
    ``{block: sub, in: mask, value: 1, reverse: true}``.

    Args:
        value: the constant subtracted, a number or one value per channel (a list,
            broadcast over (..., C, H, W)); instead of a second input.
        reverse: compute value − x instead.
    """

    def __init__(self, *, value: Constant | None = None, reverse: bool = False) -> None:
        super().__init__("sub", operator.sub, value, reverse)


@register("div", inputs=("x", "y"), min_inputs=1, trainable=False)
class Div(_Binary):
    """Quotient ``x / y`` of two inputs, or ``x / value`` with a constant.

    Args:
        value: the constant divisor, a number or one value per channel (a list,
            broadcast over (..., C, H, W)); instead of a second input.
        reverse: compute value / x instead (a reciprocal when value is 1).
    """

    def __init__(self, *, value: Constant | None = None, reverse: bool = False) -> None:
        super().__init__("div", operator.truediv, value, reverse)


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


@register("drop_path", trainable=False)
class DropPath(nn.Module):
    """Stochastic depth: while training, drop a residual branch for whole samples at
    random, scaling the kept ones by 1 / (1 − p); at evaluation, the identity. Put it on
    the branch before the residual add (Swin, SwinIR and ConvNeXt use it so).

    Args:
        p: probability that a sample's branch is dropped.
    """

    def __init__(self, *, p: Annotated[float, Range(ge=0, lt=1)] = 0.1) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = 1 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


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

"""Stateless math on tensors: elementwise functions, reductions, softmax, products.

exp, log, sqrt, pow, abs, mean, sum, softmax, matmul and einsum. None holds
parameters; the compiler writes each into the generated code as the torch call it
makes. Dimensions count from 0 (batch) as in torch; negative ones count from the end.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch
from torch import nn

from blocks.registry import register

#: One dimension or several.
Dims = int | tuple[int, ...]


def as_dims(dims: Dims) -> tuple[int, ...]:
    """``dims`` as a tuple, refusing an empty one (it would mean every dimension)."""
    out = (dims,) if isinstance(dims, int) else tuple(dims)
    if not out:
        raise ValueError("dims: give at least one dimension")
    if len(set(out)) < len(out):
        raise ValueError(f"dims: {list(out)} repeats a dimension")
    return out


class _Elementwise(nn.Module):
    """Applies one torch function to its input."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


@register("exp", trainable=False)
class Exp(_Elementwise):
    """Elementwise eˣ (a predicted log-variance back to a variance)."""

    def __init__(self) -> None:
        super().__init__(torch.exp)


@register("log", trainable=False)
class Log(_Elementwise):
    """Elementwise natural logarithm; −inf at 0 and NaN below (clamp first)."""

    def __init__(self) -> None:
        super().__init__(torch.log)


@register("sqrt", trainable=False)
class Sqrt(_Elementwise):
    """Elementwise square root; NaN below 0, and an infinite gradient at 0."""

    def __init__(self) -> None:
        super().__init__(torch.sqrt)


@register("abs", trainable=False)
class Abs(_Elementwise):
    """Elementwise absolute value."""

    def __init__(self) -> None:
        super().__init__(torch.abs)


@register("pow", trainable=False)
class Pow(nn.Module):
    """Elementwise power xᵖ (a fractional p gives NaN for negative x).

    Args:
        exponent: the power p.
    """

    def __init__(self, *, exponent: float) -> None:
        super().__init__()
        self.exponent = exponent

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.pow(x, self.exponent)

    def extra_repr(self) -> str:
        return f"exponent={self.exponent}"


class _Reduce(nn.Module):
    def __init__(self, fn: Callable[..., torch.Tensor], dims: Dims, keepdim: bool) -> None:
        super().__init__()
        self.fn = fn
        self.dims = as_dims(dims)
        self.keepdim = keepdim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x, dim=self.dims, keepdim=self.keepdim)

    def extra_repr(self) -> str:
        return f"dims={list(self.dims)}, keepdim={self.keepdim}"


@register("mean", trainable=False)
class Mean(_Reduce):
    """Mean over some dimensions (the default, H and W, is global average pooling).

    Args:
        dims: the dimension or dimensions averaged over.
        keepdim: keep them with size 1, so the result broadcasts against the input
            (NAFNet's simplified channel attention).
    """

    def __init__(self, *, dims: Dims = (-2, -1), keepdim: bool = False) -> None:
        super().__init__(torch.mean, dims, keepdim)


@register("sum", trainable=False)
class Sum(_Reduce):
    """Sum over some dimensions.

    Args:
        dims: the dimension or dimensions summed over.
        keepdim: keep them with size 1, so the result broadcasts against the input.
    """

    def __init__(self, *, dims: Dims = (-2, -1), keepdim: bool = False) -> None:
        super().__init__(torch.sum, dims, keepdim)


@register("softmax", trainable=False)
class Softmax(nn.Module):
    """Softmax along one dimension: values there become positive and sum to 1.

    Args:
        dim: the dimension normalized (1 is channels: per-pixel weights over C).
    """

    def __init__(self, *, dim: int = 1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x, dim=self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


@register("matmul", inputs=("x", "y"), trainable=False)
class Matmul(nn.Module):
    """Matrix product of the last two dimensions of x and y, batched over the others
    (torch.matmul: an attention map (N, heads, L, L) times values (N, heads, L, d))."""

    def __init__(self) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.matmul(x, y)


_TERM = re.compile(r"^[a-zA-Z]*(\.\.\.)?[a-zA-Z]*$")


def einsum_operands(equation: str) -> int:
    """The number of operands ``equation`` takes; ValueError if torch would refuse it."""
    lhs, _, rhs = equation.replace(" ", "").partition("->")
    terms = lhs.split(",")
    if not all(_TERM.match(t) for t in [*terms, rhs]):
        raise ValueError(
            f"einsum: {equation!r} is not an equation: give letters per operand, "
            "separated by commas, an optional '...' each, and '->' before the output "
            "(e.g. 'nchw,ndhw->ncd')"
        )
    # Size-1 operands: torch checks the rest (output letters, repeats) as it would later.
    # On the CPU even while the probe constructs blocks on the meta device.
    dummies = [torch.zeros((1,) * len(t.replace("...", "")), device="cpu") for t in terms]
    try:
        torch.einsum(equation, *dummies)
    except RuntimeError as err:
        raise ValueError(f"einsum: invalid equation {equation!r}: {err}") from None
    return len(terms)


@register("einsum", variadic=True, min_inputs=1, trainable=False)
class Einsum(nn.Module):
    """Sum of products named by an Einstein equation (torch.einsum), on the inputs in
    order: ``"nchw,ndhw->ncd"`` is a channel Gram matrix, ``"nhwc->nchw"`` a transpose.

    The equation is checked when the network is built; its operand count must match
    the inputs.

    Args:
        equation: the equation, one comma-separated term per input.
    """

    def __init__(self, *, equation: str) -> None:
        super().__init__()
        self.operands = einsum_operands(equation)
        self.equation = equation

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        if len(xs) != self.operands:
            raise ValueError(
                f"einsum: {self.equation!r} takes {self.operands} inputs, got {len(xs)}"
            )
        return torch.einsum(self.equation, *xs)

    def extra_repr(self) -> str:
        return f"equation={self.equation!r}"

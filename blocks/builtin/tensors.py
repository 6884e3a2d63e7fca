"""Tensors as nodes: learnable parameters, saved buffers and constants.

A node of these blocks takes no input and gives one tensor, which ops use like any
other value (``multiply: [y, beta]`` broadcasts). The compiler stores the tensor
itself under the node's name, so a ``parameter`` node ``encoders.0.0.beta`` is the
state_dict key ``encoders.0.0.beta``, as in the module a published checkpoint came
from; nothing is wrapped in a submodule. Starting values come from the node's
``init:`` (zeros by default) or, for buffers and constants, from a literal ``value``.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import torch
from torch import nn

from blocks.registry import Range, register

Positive = Annotated[int, Range(ge=1)]
#: The most numbers a literal ``value`` may hold: literals are for small tensors (a
#: mean to subtract, a colour matrix); larger ones belong in a weights file.
MAX_LITERAL = 10_000


class TensorNode(nn.Module):
    """A node that is one tensor: the compiler attaches ``value`` under the node's name
    (a parameter, or a buffer that is saved when ``persistent``)."""

    value: torch.Tensor
    persistent: bool = True

    def forward(self) -> torch.Tensor:
        return self.value


def literal(value: float | list[Any], shape: list[int] | None, block: str) -> torch.Tensor:
    """A tensor from a number or a nested list, reshaped to ``shape`` when given."""
    tensor = torch.tensor(value, dtype=torch.float32)
    if tensor.numel() > MAX_LITERAL:
        raise ValueError(
            f"{block}: a literal value holds at most {MAX_LITERAL} numbers, this one "
            f"{tensor.numel()}; load larger tensors from a weights file"
        )
    if shape is None:
        return tensor
    if tensor.numel() == 1:
        return tensor.reshape(()).expand(shape).clone()
    if tensor.numel() != math.prod(shape):
        raise ValueError(
            f"{block}: value has {tensor.numel()} numbers, which do not fill shape {shape}"
        )
    return tensor.reshape(shape)


def _empty(shape: list[int], block: str) -> torch.Tensor:
    if any(n < 1 for n in shape):
        raise ValueError(f"{block}: every length of shape must be at least 1, got {shape}")
    return torch.zeros(shape)


@register("parameter", inputs=(), trainable=True)
class Parameter(TensorNode):
    """A learnable tensor of a given shape (NAFNet's ``beta`` and ``gamma``, a scale
    of a flow step, a relative position bias table), saved under the node's name.

    It starts at zeros; the node's ``init:`` sets other starting values
    (``init: ones``, ``init: {type: trunc_normal, std: 0.02}``).

    Args:
        shape: the tensor's lengths, e.g. ``[1, $c, 1, 1]`` to scale channels.
    """

    def __init__(self, *, shape: list[Positive]) -> None:
        super().__init__()
        self.value = nn.Parameter(_empty(list(shape), "parameter"))


@register("buffer", inputs=(), trainable=False, grad=False)
class Buffer(TensorNode):
    """A tensor that is saved and moved with the network but not trained: running
    statistics, a mask, a table of indices that a published checkpoint carries.

    Its values come from ``value`` (a number or a nested list; with ``shape`` a number
    fills it and a flat list is reshaped) or else from the node's ``init:`` (zeros by
    default).

    Args:
        shape: the tensor's lengths (optional with a nested-list ``value``).
        value: the starting values.
        persistent: saved in the state_dict (false: moved with the network only).
        integer: hold whole numbers (int64), as indices for ``index_select`` or
            ``gather`` must be.
    """

    def __init__(
        self,
        *,
        shape: list[Positive] | None = None,
        value: float | list[Any] | None = None,
        persistent: bool = True,
        integer: bool = False,
    ) -> None:
        super().__init__()
        if value is None and shape is None:
            raise ValueError("buffer: give its shape, or its value")
        tensor = literal(value, shape, "buffer") if value is not None else None
        if tensor is None:
            assert shape is not None
            tensor = _empty(list(shape), "buffer")
        self.persistent = persistent
        self.register_buffer("value", tensor.long() if integer else tensor, persistent=persistent)


@register("constant", inputs=(), trainable=False, grad=False)
class Constant(TensorNode):
    """A fixed tensor written in the spec (a dataset mean to subtract, a colour
    matrix): moved with the network, never saved or trained.

    Args:
        value: a number or a nested list.
        shape: reshape the value (a number fills it), e.g. ``[1, 3, 1, 1]`` for a
            per-channel mean that broadcasts over images.
    """

    persistent = False

    def __init__(self, *, value: float | list[Any], shape: list[Positive] | None = None) -> None:
        super().__init__()
        self.register_buffer("value", literal(value, shape, "constant"), persistent=False)

"""Stateless blocks that reorder, shift, select or reshape dimensions.

permute, transpose, roll, flatten, unflatten, index_select and gather. Dimensions
count from 0 (batch) as in torch; negative ones count from the end. For reshapes a
pattern says best, ``rearrange`` (einops) is usually clearer than these.
"""

from __future__ import annotations

import torch
from torch import nn

from blocks.builtin.math_ops import Dims, as_dims
from blocks.registry import register


@register("permute", trainable=False)
class Permute(nn.Module):
    """Reorder all dimensions: output dimension i is input dimension dims[i].

    Args:
        dims: a permutation of 0 … ndim − 1 (``[0, 2, 3, 1]`` gives NHWC).
    """

    def __init__(self, *, dims: tuple[int, ...]) -> None:
        super().__init__()
        if sorted(dims) != list(range(len(dims))):
            raise ValueError(
                f"permute: dims {list(dims)} is not a permutation of 0 … {len(dims) - 1}; "
                "name every dimension once"
            )
        self.dims = tuple(dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(self.dims)

    def extra_repr(self) -> str:
        return f"dims={list(self.dims)}"


@register("transpose", trainable=False)
class Transpose(nn.Module):
    """Swap two dimensions.

    Args:
        dim0: one dimension.
        dim1: the other.
    """

    def __init__(self, *, dim0: int = -2, dim1: int = -1) -> None:
        super().__init__()
        self.dim0, self.dim1 = dim0, dim1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(self.dim0, self.dim1)

    def extra_repr(self) -> str:
        return f"dim0={self.dim0}, dim1={self.dim1}"


@register("roll", trainable=False)
class Roll(nn.Module):
    """Shift values cyclically along dimensions; what leaves one end enters at the
    other (Swin's shifted windows roll H and W by minus half a window).

    Args:
        shifts: the shift for each dimension in dims (positive moves toward higher
            indices).
        dims: the dimensions shifted, as many as shifts.
    """

    def __init__(self, *, shifts: Dims, dims: Dims = (-2, -1)) -> None:
        super().__init__()
        self.shifts = (shifts,) if isinstance(shifts, int) else tuple(shifts)
        self.dims = as_dims(dims)
        if len(self.shifts) != len(self.dims):
            raise ValueError(
                f"roll: {len(self.shifts)} shifts for {len(self.dims)} dims; give one "
                "shift per dimension"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.roll(x, self.shifts, self.dims)

    def extra_repr(self) -> str:
        return f"shifts={list(self.shifts)}, dims={list(self.dims)}"


@register("flatten", trainable=False)
class Flatten(nn.Module):
    """Merge the dimensions start_dim … end_dim into one (before a linear head).

    Args:
        start_dim: first dimension merged.
        end_dim: last dimension merged.
    """

    def __init__(self, *, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(x, self.start_dim, self.end_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


@register("unflatten", trainable=False)
class Unflatten(nn.Module):
    """Split one dimension into several, the inverse of flatten.

    Args:
        dim: the dimension split.
        sizes: the sizes it splits into, in order; one of them may be −1 (inferred).
    """

    def __init__(self, *, dim: int = 1, sizes: tuple[int, ...]) -> None:
        super().__init__()
        if not sizes or any(s == 0 or s < -1 for s in sizes) or list(sizes).count(-1) > 1:
            raise ValueError(
                f"unflatten: sizes {list(sizes)} must be positive, with at most one −1"
            )
        self.dim = dim
        self.sizes = tuple(sizes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.unflatten(x, self.dim, self.sizes)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, sizes={list(self.sizes)}"


@register("index_select", trainable=False)
class IndexSelect(nn.Module):
    """Pick entries of one dimension by index, in the order given (RGB → BGR is
    ``index: [2, 1, 0]`` on channels; an index may repeat).

    The indices are a non-persistent buffer, so they move with the network and stay
    out of its state dict.

    Args:
        dim: the dimension indexed (1 is channels).
        index: the indices picked.
    """

    index: torch.Tensor

    def __init__(self, *, dim: int = 1, index: tuple[int, ...]) -> None:
        super().__init__()
        if not index or min(index) < 0:
            raise ValueError(f"index_select: index {list(index)} must be non-empty and ≥ 0")
        self.dim = dim
        self.picked = tuple(index)  # for the repr: the buffer may be on the meta device
        self.register_buffer("index", torch.tensor(index, dtype=torch.long), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.index_select(x, self.dim, self.index)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, index={list(self.picked)}"


@register("gather", inputs=("x", "index"), trainable=False)
class Gather(nn.Module):
    """Values of x at positions given by a second input along one dimension
    (torch.gather: ``out[n][i][h][w] = x[n][index[n][i][h][w]][h][w]`` for dim 1).

    The index input holds whole numbers (it is cast to integers, so it carries no
    gradient); its shape is the output's, and no larger than x's outside dim.

    Args:
        dim: the dimension indexed.
    """

    def __init__(self, *, dim: int = 1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return torch.gather(x, self.dim, index.long())

    def extra_repr(self) -> str:
        return f"dim={self.dim}"

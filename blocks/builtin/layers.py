"""Shared layer factories: norm and activation names resolved to modules once.

Blocks take ``norm: NormType`` and ``act: ActType`` strings (what a spec says) and
call :func:`make_norm` / :func:`make_act` in their constructors, so ``forward`` never
looks at a string.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

NormType = Literal["none", "batch", "instance", "group", "layer"]
ActType = Literal["none", "relu", "lrelu", "prelu", "gelu", "silu", "tanh", "sigmoid"]
PadMode = Literal["zeros", "reflect", "replicate"]
Order = Literal["cna", "nac"]


class ChannelLayerNorm(nn.LayerNorm):
    """Layer norm over the channel dimension (dim 1) of each position.

    The restoration convention (NAFNet, Restormer, ConvNeXt's ``LayerNorm2d``): every
    pixel's channel vector is normalized on its own. Works for any ``(N, C, ...)``.
    """

    def __init__(self, ch: int, *, affine: bool = True) -> None:
        super().__init__(ch, elementwise_affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.movedim(1, -1), self.normalized_shape, self.weight, self.bias, self.eps)
        return y.movedim(-1, 1)


def make_norm(
    kind: NormType, ch: int, *, groups: int = 32, affine: bool | None = None
) -> nn.Module:
    """A normalization layer for ``ch`` channels of NCHW input.

    ``affine=None`` follows each kind's usual convention: learnable scale and shift,
    except instance norm, which pix2pix and CycleGAN use without (so their weights load).
    """
    if affine is None:
        affine = kind != "instance"
    if kind == "none":
        return nn.Identity()
    if kind == "batch":
        return nn.BatchNorm2d(ch, affine=affine)
    if kind == "instance":
        return nn.InstanceNorm2d(ch, affine=affine)
    if kind == "layer":
        return ChannelLayerNorm(ch, affine=affine)
    if kind == "group":
        if ch % groups:
            raise ValueError(
                f"group norm: {ch} channels do not split into {groups} groups; "
                f"choose a group count that divides {ch}"
            )
        return nn.GroupNorm(groups, ch, affine=affine)
    raise ValueError(f"unknown norm {kind!r}; choose one of {list(get_args(NormType))}")


_ACTIVATIONS: dict[str, Callable[[float, int], nn.Module]] = {
    "none": lambda slope, n: nn.Identity(),
    "relu": lambda slope, n: nn.ReLU(),
    "lrelu": lambda slope, n: nn.LeakyReLU(slope),
    "prelu": lambda slope, n: nn.PReLU(n),
    "gelu": lambda slope, n: nn.GELU(),
    "silu": lambda slope, n: nn.SiLU(),
    "tanh": lambda slope, n: nn.Tanh(),
    "sigmoid": lambda slope, n: nn.Sigmoid(),
}


def make_act(kind: ActType, *, slope: float = 0.2, num_parameters: int = 1) -> nn.Module:
    """An activation layer; ``slope`` is LeakyReLU's, ``num_parameters`` PReLU's.

    Never in-place: blocks feed the same tensor to several consumers (residuals, taps).
    """
    try:
        factory = _ACTIVATIONS[kind]
    except KeyError:
        raise ValueError(
            f"unknown activation {kind!r}; choose one of {list(_ACTIVATIONS)}"
        ) from None
    return factory(slope, num_parameters)


def same_padding(kernel: int, dilation: int = 1) -> int:
    """The symmetric padding that keeps H, W for an odd kernel at stride 1.

    For even kernels it is the usual ``(k - 1) // 2`` (kernel 4, stride 2 → 1, which
    halves H, W exactly, as in PatchGAN).
    """
    return dilation * (kernel - 1) // 2

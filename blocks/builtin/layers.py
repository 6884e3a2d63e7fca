"""Shared layer factories: norm and activation names resolved to modules once.

Blocks take ``norm: NormType`` and ``act: ActType`` strings (what a spec says) and
call :func:`make_norm` / :func:`make_act` in their constructors, so ``forward`` never
looks at a string.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

NormType = Literal["none", "batch", "instance", "group", "layer"]
ActType = Literal[
    "none",
    "relu",
    "relu6",
    "lrelu",
    "prelu",
    "elu",
    "selu",
    "gelu",
    "gelu_tanh",
    "silu",
    "mish",
    "softplus",
    "hardswish",
    "hardsigmoid",
    "sigmoid",
    "tanh",
]
PadMode = Literal["zeros", "reflect", "replicate"]
Order = Literal["cna", "nac"]


class ChannelLayerNorm(nn.LayerNorm):
    """Layer norm over the channel dimension (dim 1) of each position.

    The restoration convention (NAFNet, Restormer, ConvNeXt's ``LayerNorm2d``): every
    pixel's channel vector is normalized on its own. Works for any ``(N, C, ...)``.
    """

    def __init__(self, ch: int, *, affine: bool = True, eps: float = 1e-5) -> None:
        super().__init__(ch, eps=eps, elementwise_affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.movedim(1, -1), self.normalized_shape, self.weight, self.bias, self.eps)
        return y.movedim(-1, 1)


def make_norm(
    kind: NormType,
    ch: int,
    *,
    groups: int = 32,
    affine: bool | None = None,
    eps: float = 1e-5,
    momentum: float | None = 0.1,
    track_running_stats: bool | None = None,
) -> nn.Module:
    """A normalization layer for ``ch`` channels of NCHW input.

    ``affine=None`` follows each kind's usual convention: learnable scale and shift,
    except instance norm, which pix2pix and CycleGAN use without (so their weights load).
    ``eps`` applies to every kind; ``momentum`` and ``track_running_stats`` (None: torch's
    default, true for batch and false for instance) to batch and instance only. The
    defaults are torch's.
    """
    if affine is None:
        affine = kind != "instance"
    if kind == "none":
        return nn.Identity()
    if kind == "batch":
        track = True if track_running_stats is None else track_running_stats
        return nn.BatchNorm2d(
            ch, eps=eps, momentum=momentum, affine=affine, track_running_stats=track
        )
    if kind == "instance":
        track = False if track_running_stats is None else track_running_stats
        if momentum is None:
            raise ValueError(
                "instance norm: momentum null (a cumulative average) is batch norm's; "
                "give a number between 0 and 1"
            )
        return nn.InstanceNorm2d(
            ch, eps=eps, momentum=momentum, affine=affine, track_running_stats=track
        )
    if kind == "layer":
        return ChannelLayerNorm(ch, affine=affine, eps=eps)
    if kind == "group":
        if ch % groups:
            raise ValueError(
                f"group norm: {ch} channels do not split into {groups} groups; "
                f"choose a group count that divides {ch}"
            )
        return nn.GroupNorm(groups, ch, eps=eps, affine=affine)
    raise ValueError(f"unknown norm {kind!r}; choose one of {list(get_args(NormType))}")


@dataclass(frozen=True)
class ActArgs:
    """The settings an activation may need; each factory reads the ones it uses."""

    slope: float = 0.2  # negative slope of lrelu
    prelu_params: int = 1  # learned slopes of prelu: 1 (shared) or the channel count


#: The one table of activations: every ``act`` string in a spec is resolved here, once,
#: when the block is constructed. ``ActType`` lists the same names, in the same order.
_ACTIVATIONS: dict[str, Callable[[ActArgs], nn.Module]] = {
    "none": lambda a: nn.Identity(),
    "relu": lambda a: nn.ReLU(),
    "relu6": lambda a: nn.ReLU6(),
    "lrelu": lambda a: nn.LeakyReLU(a.slope),
    "prelu": lambda a: nn.PReLU(a.prelu_params),
    "elu": lambda a: nn.ELU(),
    "selu": lambda a: nn.SELU(),
    "gelu": lambda a: nn.GELU(),
    "gelu_tanh": lambda a: nn.GELU(approximate="tanh"),
    "silu": lambda a: nn.SiLU(),
    "mish": lambda a: nn.Mish(),
    "softplus": lambda a: nn.Softplus(),
    "hardswish": lambda a: nn.Hardswish(),
    "hardsigmoid": lambda a: nn.Hardsigmoid(),
    "sigmoid": lambda a: nn.Sigmoid(),
    "tanh": lambda a: nn.Tanh(),
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
    return factory(ActArgs(slope=slope, prelu_params=num_parameters))


def same_padding(kernel: int, dilation: int = 1) -> int:
    """The symmetric padding that keeps H, W for an odd kernel at stride 1.

    For even kernels it is the usual ``(k - 1) // 2`` (kernel 4, stride 2 → 1, which
    halves H, W exactly, as in PatchGAN).
    """
    return dilation * (kernel - 1) // 2

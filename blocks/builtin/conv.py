"""Learned layers: conv, deconv, linear, norm and act.

State-dict layout matters here: Loom names modules after spec nodes so that community
checkpoints load (ESRGAN's ``conv_first.weight``, the SRGAN discriminator's
``bn0_1.running_mean``). So ``conv``, ``deconv`` and ``linear`` subclass the torch layer
they are, keeping ``weight``/``bias`` at the node's top level (an optional norm and
activation sit beside them as ``norm`` and ``act``), and ``norm``/``act`` are factory
functions that return the plain torch layer.
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn

from blocks.builtin.layers import (
    ActType,
    NormType,
    Order,
    PadMode,
    make_act,
    make_norm,
    same_padding,
)
from blocks.registry import Range, register

Positive = Annotated[int, Range(ge=1)]
NonNegative = Annotated[int, Range(ge=0)]


@register("conv")
class Conv(nn.Conv2d):
    """2-D convolution with optional normalization, activation and spectral norm.

    ``order: cna`` computes conv → norm → act (ESRGAN, pix2pix); ``nac`` computes
    norm → act → conv (pre-activation ResNets), and the norm then sees the input
    channels. The node's own ``weight`` and ``bias`` are at the top of its state dict.

    Args:
        out: output channels.
        kernel: square kernel size.
        stride: stride.
        padding: padding on each side; null pads dilation × (kernel − 1) // 2, which
            keeps H and W for odd kernels at stride 1 ("same").
        dilation: dilation of the kernel.
        groups: groups of the convolution (in_ch and out must both divide by it).
        bias: learn an additive bias.
        pad_mode: what the padding contains: zeros, a reflection or a replication of
            the border.
        norm: normalization after the conv (cna) or before it (nac).
        norm_groups: number of groups when norm is group.
        act: activation after the norm.
        slope: negative slope of lrelu.
        prelu_per_channel: prelu learns one slope per channel (of the activation's
            input: out for cna, the input channels for nac) instead of one shared.
        order: cna (conv, norm, act) or nac (norm, act, conv).
        spectral_norm: constrain the weight's largest singular value to 1 (SN-GAN
            discriminators).
    """

    def __init__(
        self,
        *,
        in_ch: int,
        out: Positive,
        kernel: Positive = 3,
        stride: Positive = 1,
        padding: NonNegative | None = None,
        dilation: Positive = 1,
        groups: Positive = 1,
        bias: bool = True,
        pad_mode: PadMode = "zeros",
        norm: NormType = "none",
        norm_groups: Positive = 32,
        act: ActType = "none",
        slope: float = 0.2,
        prelu_per_channel: bool = False,
        order: Order = "cna",
        spectral_norm: bool = False,
    ) -> None:
        super().__init__(
            in_ch,
            out,
            kernel,
            stride=stride,
            padding=same_padding(kernel, dilation) if padding is None else padding,
            dilation=dilation,
            groups=groups,
            bias=bias,
            padding_mode=pad_mode,
        )
        self.conv_last = order == "nac"
        post_ch = in_ch if self.conv_last else out  # what the norm and act see
        self.norm = make_norm(norm, post_ch, groups=norm_groups)
        self.act = make_act(act, slope=slope, num_parameters=post_ch if prelu_per_channel else 1)
        # Skip the identity layers in forward: hundreds of convs make the calls add up.
        self._post = [m for m in (self.norm, self.act) if not isinstance(m, nn.Identity)]
        if spectral_norm:
            nn.utils.parametrizations.spectral_norm(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv_last:
            for layer in self._post:
                x = layer(x)
            # Assigned, not returned: torch leaves _conv_forward's result unannotated.
            x = self._conv_forward(x, self.weight, self.bias)
            return x
        x = self._conv_forward(x, self.weight, self.bias)
        for layer in self._post:
            x = layer(x)
        return x


def transposed_padding(kernel: int, stride: int) -> tuple[int, int]:
    """The (padding, output_padding) that make a transposed conv output exactly
    stride × the input size: (H − 1)·s − 2p + k + op = H·s."""
    padding = max(0, -(-(kernel - stride) // 2))
    output_padding = 2 * padding - (kernel - stride)
    if not 0 <= output_padding < stride:
        raise ValueError(
            f"deconv: kernel {kernel} with stride {stride} cannot give exactly {stride}× "
            "the input size; set padding (and output_padding) explicitly"
        )
    return padding, output_padding


@register("deconv")
class Deconv(nn.ConvTranspose2d):
    """2-D transposed convolution with optional normalization and activation.

    The defaults (kernel 4, stride 2, padding 1) are the ×2 upsampling layer of the
    pix2pix U-Net and DCGAN. Norm, act and order work as in conv.

    Args:
        out: output channels.
        kernel: square kernel size.
        stride: stride (the upsampling factor).
        padding: padding; null chooses it, with output_padding, so that the output is
            exactly stride × the input size.
        output_padding: extra rows and columns on one side of the output; null means 0
            with an explicit padding, otherwise the value matching padding.
        bias: learn an additive bias.
        norm: normalization after the deconv (cna) or before it (nac).
        norm_groups: number of groups when norm is group.
        act: activation after the norm.
        slope: negative slope of lrelu.
        prelu_per_channel: prelu learns one slope per channel (of the activation's
            input: out for cna, the input channels for nac) instead of one shared.
        order: cna (deconv, norm, act) or nac (norm, act, deconv).
    """

    def __init__(
        self,
        *,
        in_ch: int,
        out: Positive,
        kernel: Positive = 4,
        stride: Positive = 2,
        padding: NonNegative | None = None,
        output_padding: NonNegative | None = None,
        bias: bool = True,
        norm: NormType = "none",
        norm_groups: Positive = 32,
        act: ActType = "none",
        slope: float = 0.2,
        prelu_per_channel: bool = False,
        order: Order = "cna",
    ) -> None:
        if padding is None:
            padding, auto_output_padding = transposed_padding(kernel, stride)
            output_padding = auto_output_padding if output_padding is None else output_padding
        super().__init__(
            in_ch,
            out,
            kernel,
            stride=stride,
            padding=padding,
            output_padding=output_padding or 0,
            bias=bias,
        )
        self.conv_last = order == "nac"
        post_ch = in_ch if self.conv_last else out  # what the norm and act see
        self.norm = make_norm(norm, post_ch, groups=norm_groups)
        self.act = make_act(act, slope=slope, num_parameters=post_ch if prelu_per_channel else 1)

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        # output_size as in nn.ConvTranspose2d, whose forward this overrides; graphs
        # never pass it (the padding above already gives stride × the input size).
        if self.conv_last:
            return super().forward(self.act(self.norm(x)), output_size)
        out: torch.Tensor = self.act(self.norm(super().forward(x, output_size)))
        return out


@register("linear")
class Linear(nn.Linear):
    """Fully connected layer on the channel dimension (dim 1).

    On ``(N, C)`` input it is the usual linear layer (discriminator heads, after a
    ``rearrange`` that flattens); on ``(N, C, H, W)`` it maps every pixel's channel
    vector, like a 1×1 conv. Channels are dim 1 everywhere in Loom, so ``in_ch`` is
    always the size of that dimension.

    Args:
        out: output features.
        bias: learn an additive bias.
    """

    def __init__(self, *, in_ch: int, out: Positive, bias: bool = True) -> None:
        super().__init__(in_ch, out, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.movedim(1, -1), self.weight, self.bias).movedim(-1, 1)


@register("norm")
def norm(
    *,
    in_ch: int,
    type: NormType = "batch",
    groups: Positive = 32,
    affine: bool | None = None,
    eps: Annotated[float, Range(gt=0)] = 1e-5,
    momentum: Annotated[float, Range(ge=0, le=1)] | None = 0.1,
    track_running_stats: bool | None = None,
) -> nn.Module:
    """Normalization of NCHW features; the node is the torch layer itself.

    batch and instance are BatchNorm2d and InstanceNorm2d; group is GroupNorm; layer
    is the channels-first layer norm of NAFNet, Restormer and ConvNeXt's LayerNorm2d:
    each pixel's channel vector is normalized over C on its own (for the per-sample
    C×H×W form use group with groups 1); none passes the input through. Defaults are
    torch's.

    Args:
        type: the normalization.
        groups: number of channel groups for group norm (must divide the channels).
        affine: learn a per-channel scale and shift (torch's affine, or
            elementwise_affine for layer); null follows convention (true, except
            instance norm as in pix2pix and CycleGAN).
        eps: added to the variance before its square root (every kind).
        momentum: batch and instance: weight of the newest batch in the running
            statistics; null averages all batches equally.
        track_running_stats: batch and instance: keep running statistics and use them
            in evaluation; null follows torch (true for batch, false for instance).
    """
    return make_norm(
        type,
        in_ch,
        groups=groups,
        affine=affine,
        eps=eps,
        momentum=momentum,
        track_running_stats=track_running_stats,
    )


@register("act")
def act(
    *,
    in_ch: int,
    type: ActType = "relu",
    slope: float = 0.2,
    num_parameters: Positive = 1,
) -> nn.Module:
    """Elementwise activation; the node is the torch layer itself.

    gelu is the exact GELU, gelu_tanh its tanh approximation; silu is also called
    swish; softplus, elu and selu use torch's defaults. The same names are accepted by
    conv's and deconv's ``act``.

    Args:
        type: the activation.
        slope: negative slope of lrelu.
        num_parameters: learned slopes of prelu, 1 (shared) or the channel count.
    """
    if type == "prelu" and num_parameters not in (1, in_ch):
        raise ValueError(
            f"act: prelu num_parameters is {num_parameters}, but must be 1 or the "
            f"input's channel count {in_ch}"
        )
    return make_act(type, slope=slope, num_parameters=num_parameters)

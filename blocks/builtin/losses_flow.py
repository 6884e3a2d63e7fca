"""Training normalizing flows by likelihood: dequantization and the NLL in bits.

Images are discrete (256 levels); a flow models densities. Adding uniform noise of one
level's width (``dequantize``) and counting the volume of a level in the loss (the
dequantization term of ``nll``) makes the continuous likelihood a lower bound on the
discrete one (Theis et al., 2016), so the NLL is in bits that mean something.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
from torch import nn

from blocks.builtin.flow import gaussian_logp
from blocks.registry import Range, register

Convention = Literal["srflow", "glow"]


@register("dequantize", kind="op", trainable=False)
class Dequantize(nn.Module):
    """Uniform dequantization: x + u with u ~ U(−0.5, 0.5) / levels, for images in [0, 1]
    quantized to ``levels`` steps (SRFlow adds ``(rand − 0.5) / 255``). Gives the flow a
    density to learn instead of spikes at the levels; ``nll`` counts the levels' volume.

    Args:
        levels: the steps of the quantization the images came from (SRFlow's quant 255).
    """

    def __init__(self, *, levels: Annotated[int, Range(ge=2)] = 255) -> None:
        super().__init__()
        self.levels = levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "meta":  # the shape pass: meta's rand_like imports dynamo (4 s)
            return x
        return x + (torch.rand_like(x) - 0.5) / self.levels

    def extra_repr(self) -> str:
        return f"levels={self.levels}"


@register("nll", kind="loss", inputs=("z", "logdet", "x"))
class FlowNLL(nn.Module):
    """Negative log-likelihood of a normalizing flow, in bits, averaged over the batch.

    ``z`` is the flow's top latent (scored under N(0, I); split latents are scored by
    their priors inside ``logdet``), ``logdet`` its log-determinant per sample and ``x``
    the (dequantized) image it was computed from, whose size normalizes the result:

        nll = −(logdet + log N(z) − D · ln(levels)) / (ln 2 · P)

    ``convention: srflow`` (the default) is SRFlow's code: P = D = H · W, bits per pixel
    with the dequantization term counted once per pixel, so the figures match SRFlow's
    and traiNNer's logs. ``convention: glow`` is Glow's bits per dimension: P = D = C · H
    · W, the exact bound for uniform dequantization of every value.

    Args:
        levels: the quantization steps ``dequantize`` assumed (255 in SRFlow).
        convention: srflow (bits per pixel) or glow (bits per dimension).
    """

    def __init__(
        self, *, levels: Annotated[int, Range(ge=2)] = 255, convention: Convention = "srflow"
    ) -> None:
        super().__init__()
        self.levels = levels
        self.convention = convention

    def forward(self, z: torch.Tensor, logdet: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        count = x.shape[-2] * x.shape[-1] * (x.shape[1] if self.convention == "glow" else 1)
        objective = logdet + gaussian_logp(z) - count * math.log(self.levels)
        return (-objective / (math.log(2.0) * count)).mean()

    def extra_repr(self) -> str:
        return f"levels={self.levels}, convention={self.convention}"

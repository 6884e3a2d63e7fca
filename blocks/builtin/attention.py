"""Attention blocks: channel attention (squeeze-excitation) and spatial self-attention."""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from blocks.registry import Range, register

Positive = Annotated[int, Range(ge=1)]


@register("channel_attention")
class ChannelAttention(nn.Module):
    """Squeeze-excitation: rescale each channel by a gate computed from global context.

    Global average pool → 1×1 conv to in_ch / reduction → ReLU → 1×1 conv back →
    sigmoid → multiply the input (SENet; RCAN's channel attention). The convs are
    ``conv_du.0`` and ``conv_du.2`` of the node, RCAN's ``CALayer`` layout, so RCAN's
    checkpoints (and those of RCAN's descendants that keep it) load as they are.

    Args:
        reduction: channel reduction of the bottleneck.
    """

    def __init__(self, *, in_ch: int, reduction: Positive = 16) -> None:
        super().__init__()
        hidden = in_ch // reduction
        if hidden < 1:
            raise ValueError(
                f"channel_attention: reduction {reduction} leaves no channel of {in_ch}; "
                f"use a reduction of at most {in_ch}"
            )
        self.conv_du = nn.Sequential(
            nn.Conv2d(in_ch, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, in_ch, 1), nn.Sigmoid()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate: torch.Tensor = self.conv_du(x.mean(dim=(-2, -1), keepdim=True))
        return x * gate


@register("self_attention")
class SelfAttention(nn.Module):
    """Multi-head self-attention over spatial positions, added to the input.

    SAGAN's layer, with heads: 1×1 convs give queries and keys (in_ch / reduction
    channels) and values (in_ch channels); every position attends to all H·W positions
    (scaled dot product); a 1×1 conv projects the result, which is added to the input
    scaled by a learned ``gamma`` that starts at 0, so the block starts as the identity.
    Memory grows as (H·W)²: use it on low-resolution features.

    Args:
        heads: number of attention heads; in_ch and in_ch / reduction must divide by it.
        reduction: channel reduction of queries and keys (SAGAN uses 8).
    """

    def __init__(self, *, in_ch: int, heads: Positive = 1, reduction: Positive = 8) -> None:
        super().__init__()
        qk = in_ch // reduction
        if qk < heads or qk % heads or in_ch % heads:
            raise ValueError(
                f"self_attention: {in_ch} channels with reduction {reduction} give "
                f"{qk} query channels, which do not split into {heads} heads; lower "
                "reduction or heads"
            )
        self.heads = heads
        self.query = nn.Conv2d(in_ch, qk, 1)
        self.key = nn.Conv2d(in_ch, qk, 1)
        self.value = nn.Conv2d(in_ch, in_ch, 1)
        self.proj = nn.Conv2d(in_ch, in_ch, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.shape[-2]
        q, k, v = (
            rearrange(f(x), "b (n d) h w -> b n (h w) d", n=self.heads)
            for f in (self.query, self.key, self.value)
        )
        attended = F.scaled_dot_product_attention(q, k, v)
        attended = rearrange(attended, "b n (h w) d -> b (n d) h w", h=h)
        projected: torch.Tensor = self.proj(attended)
        return x + self.gamma * projected

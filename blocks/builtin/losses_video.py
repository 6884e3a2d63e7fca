"""Losses of video super-resolution: the optical-flow reconstruction (OFR) loss.

SOF-VSR (Wang et al., 2018) and traiNNer's video model train the flow network with
it beside the SR loss: each neighbour frame warped by its estimated flow should
match the centre frame, at every level the flow is estimated at (LR/2, LR, HR), and
the flow should be smooth.
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn

from blocks.builtin.warp import FlowWarp, SamplePadding
from blocks.registry import Range, register

NonNegativeFloat = Annotated[float, Range(ge=0)]


@register("ofr", kind="loss", inputs=("frames", "flow"))
class OFRLoss(nn.Module):
    """Optical-flow reconstruction: warp error of the neighbours plus flow smoothness.

    ``frames`` is a window (N, T, C, H, W), T odd, and ``flow`` (N, T − 1, 2, h, w) the
    flow from each neighbour, in time order without the centre, to the centre frame,
    in pixels of its own size (``flow_warp``'s convention). When h and w are H and W
    divided by a whole factor f, the frames are first average-pooled by f: the LR/2
    level of SOF-VSR is ``frames: data.lr`` with a half-size flow. For each neighbour i
    the loss is mean|centre − warp(frame_i, flow_i)| + reg_weight · R(flow_i), where R
    sums |∂y| + |∂x| of both flow channels over the (h − 1) × (w − 1) top-left pixels,
    divided by N (h − 1)(w − 1), as SOF-VSR's ``L1_regularization``; the result is the
    mean over the T − 1 neighbours. traiNNer weighs the levels HR 1, LR 0.2 and LR/2
    0.1 and the sum 0.01 (``ofr_weight: [0.1, 0.2, 0.1, 0.01]``, the third the
    reg_weight): write those as the step's loss weights.

    Args:
        reg_weight: weight of the flow smoothness term (SOF-VSR's and traiNNer's 0.1).
        padding_mode: what warped positions outside the frame read (SOF-VSR: zeros).
    """

    def __init__(
        self, *, reg_weight: NonNegativeFloat = 0.1, padding_mode: SamplePadding = "zeros"
    ) -> None:
        super().__init__()
        self.reg_weight = reg_weight
        self.warp = FlowWarp(padding_mode=padding_mode, align_corners=True)

    def forward(self, frames: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        n, t, h, w = _check(frames, flow)
        fh, fw = flow.shape[-2:]
        if (fh, fw) != (h, w):
            pooled = F.avg_pool2d(frames.flatten(0, 1), h // fh)
            frames = pooled.reshape(n, t, *pooled.shape[1:])
        centre = frames[:, t // 2]
        neighbours = [i for i in range(t) if i != t // 2]
        total = frames.new_zeros(())
        for k, i in enumerate(neighbours):
            f = flow[:, k]
            warped = self.warp(frames[:, i], f)
            total = total + (centre - warped).abs().mean() + self.reg_weight * _smoothness(f)
        return total / len(neighbours)


def _smoothness(flow: torch.Tensor) -> torch.Tensor:
    """SOF-VSR's L1 regularization: |∂y| + |∂x| over the (h − 1) × (w − 1) corner."""
    n, _, h, w = flow.shape
    corner = flow[..., :-1, :-1]
    dy = (corner - flow[..., 1:, :-1]).abs()
    dx = (corner - flow[..., :-1, 1:]).abs()
    return (dy + dx).sum() / (n * max(h - 1, 1) * max(w - 1, 1))


def _check(frames: torch.Tensor, flow: torch.Tensor) -> tuple[int, int, int, int]:
    """The window's N, T, H and W, or a ValueError that says which shape is wrong."""
    if frames.ndim != 5 or frames.shape[1] % 2 == 0 or frames.shape[1] < 3:
        raise ValueError(
            "ofr: frames must be a window (N, T, C, H, W) of an odd T ≥ 3; got "
            f"{tuple(frames.shape)}"
        )
    n, t, _, h, w = frames.shape
    if flow.ndim != 5 or tuple(flow.shape[:3]) != (n, t - 1, 2):
        raise ValueError(
            f"ofr: flow must be (N, T − 1, 2, h, w) = ({n}, {t - 1}, 2, h, w) for frames "
            f"{tuple(frames.shape)}; got {tuple(flow.shape)}"
        )
    fh, fw = flow.shape[-2:]
    if h % fh or w % fw or h // fh != w // fw:
        raise ValueError(
            f"ofr: the flow's size {fh}x{fw} must be the frames' {h}x{w} divided by one "
            "whole factor"
        )
    return n, t, h, w

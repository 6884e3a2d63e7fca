"""Warping: sampling an image at other positions, given a grid or an optical flow.

grid_sample samples at normalized coordinates; flow_warp moves an image by a flow in
pixels (video restoration's alignment: BasicVSR, EDVR, RIFE).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from blocks.registry import register

SampleMode = Literal["bilinear", "nearest", "bicubic"]
SamplePadding = Literal["zeros", "border", "reflection"]


@register("grid_sample", inputs=("x", "grid"), trainable=False)
class GridSample(nn.Module):
    """Sample x at the positions of a grid (torch's grid_sample).

    The grid is (N, 2, H_out, W_out), channels first like every Loom tensor, so a conv
    can predict it: channel 0 is x (−1 left, +1 right), channel 1 is y (−1 top, +1
    bottom). The output is (N, C, H_out, W_out).

    Args:
        mode: interpolation between pixels.
        padding_mode: what positions outside the image read: zeros, the nearest border
            pixel, or a reflection.
        align_corners: −1 and +1 are the centres of the corner pixels (true) or the
            outer edges of the image (false, torch's default).
    """

    def __init__(
        self,
        *,
        mode: SampleMode = "bilinear",
        padding_mode: SamplePadding = "zeros",
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        self.mode = mode
        self.padding_mode = padding_mode
        self.align_corners = align_corners

    def forward(self, x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        if x.device.type == "meta":
            return _meta_sample(x, grid.shape[-2:])
        return F.grid_sample(
            x,
            grid.movedim(1, -1),
            mode=self.mode,
            padding_mode=self.padding_mode,
            align_corners=self.align_corners,
        )

    def extra_repr(self) -> str:
        return f"mode={self.mode}, padding_mode={self.padding_mode}"


#: Sizes of base grids one flow_warp node keeps (one per size, device and dtype seen).
_GRIDS_KEPT = 8


@register("flow_warp", inputs=("x", "flow"), trainable=False)
class FlowWarp(nn.Module):
    """Backward warping: output pixel (i, j) reads x at (i + flow_y, j + flow_x).

    The flow is (N, 2, H, W) in pixels, channel 0 the horizontal (x) and channel 1 the
    vertical (y) displacement, the convention of optical-flow networks (SpyNet, RAFT)
    and of BasicVSR's and EDVR's ``flow_warp``; x is (N, C, H, W) of the same H and W.
    A zero flow returns x; an integer flow moves x by whole pixels. The base grid of
    pixel positions is built once per size, device and dtype and kept.

    Args:
        mode: interpolation between pixels (nearest gives no gradient to the flow).
        padding_mode: what positions outside the image read: zeros, the nearest border
            pixel, or a reflection.
        align_corners: where the image ends for padding: at the centres of the outer
            pixels (true, BasicVSR's choice) or half a pixel beyond them (false). The
            flow is in pixels either way, and inside the image both agree.
    """

    def __init__(
        self,
        *,
        mode: SampleMode = "bilinear",
        padding_mode: SamplePadding = "zeros",
        align_corners: bool = True,
    ) -> None:
        super().__init__()
        self.mode = mode
        self.padding_mode = padding_mode
        self.align_corners = align_corners
        self._grids: dict[tuple[int, int, torch.device, torch.dtype], torch.Tensor] = {}

    def forward(self, x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        if flow.shape[1] != 2 or flow.shape[-2:] != x.shape[-2:]:  # shapes, not values
            raise ValueError(
                f"flow_warp: the flow must be (N, 2, H, W) with the image's H and W; got "
                f"image {tuple(x.shape)} and flow {tuple(flow.shape)}"
            )
        if x.device.type == "meta":
            return _meta_sample(x, flow.shape[-2:])
        base, step = self._base(flow).unbind(0)
        grid = base + flow.movedim(1, -1) * step
        return F.grid_sample(
            x,
            grid,
            mode=self.mode,
            padding_mode=self.padding_mode,
            align_corners=self.align_corners,
        )

    def _base(self, flow: torch.Tensor) -> torch.Tensor:
        """(2, H, W, 2): the normalized positions of the pixel centres, then the step
        one pixel makes in normalized units, for x and y."""
        if not isinstance(flow, torch.Tensor):
            # A symbolic trace would inline the grid's construction into the network and
            # rebuild it every call: refusing keeps this module (and its cache) called.
            raise TypeError("flow_warp runs on tensors: it keeps its base grid")
        h, w = flow.shape[-2:]
        key = (h, w, flow.device, flow.dtype)
        if key not in self._grids:
            if len(self._grids) >= _GRIDS_KEPT:
                del self._grids[next(iter(self._grids))]
            self._grids[key] = _base_grid(h, w, flow.device, flow.dtype, self.align_corners)
        return self._grids[key]

    def extra_repr(self) -> str:
        return f"mode={self.mode}, padding_mode={self.padding_mode}"


def _meta_sample(x: torch.Tensor, size: torch.Size) -> torch.Tensor:
    """grid_sample's result on meta tensors (shape inference, ``inspect``): torch has no
    meta kernel for it, and its Python decomposition takes a tenth of a second a call —
    most of the time a flow network's size probe would take."""
    return x.new_empty(*x.shape[:2], *size)


def _base_grid(
    h: int, w: int, device: torch.device, dtype: torch.dtype, align_corners: bool
) -> torch.Tensor:
    """grid_sample's coordinate of pixel p along a size-n axis is 2p / (n − 1) − 1 with
    align_corners, (2p + 1) / n − 1 without: a pixel is 2 / (n − 1) or 2 / n."""

    def axis(n: int) -> tuple[torch.Tensor, float]:
        p = torch.arange(n, device=device, dtype=dtype)
        if align_corners:
            step = 2 / max(n - 1, 1)
            return p * step - 1, step
        return (2 * p + 1) / n - 1, 2 / n

    xs, step_x = axis(w)
    ys, step_y = axis(h)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    base = torch.stack((gx, gy), dim=-1)
    step = torch.tensor((step_x, step_y), device=device, dtype=dtype).expand(h, w, 2)
    return torch.stack((base, step))

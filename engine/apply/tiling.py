"""Tiled inference: a network on overlapping tiles of an image, stitched back.

Validation (:mod:`engine.train.validate`) and ``infer`` (:mod:`engine.apply.infer`) both
run big images this way, so one tiler serves both and they agree.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class Tiled(nn.Module):
    """Runs a network on overlapping tiles of its (single) image input and stitches.
    A window of frames (N×T×C×H×W) is cut at the same place in every frame.

    Large validation images otherwise run out of memory. Each tile is ``tile`` pixels
    plus ``overlap`` of context on every side; only the centre of each output tile is
    kept, so the seams do not show. Tiles take more of the image around them to reach
    a size the network accepts (a multiple of ``multiple``); only an image smaller than
    that is padded (replicating its border), and the output cropped back.
    Every image output of the network is stitched (a dict of outputs, too). An image
    that fits in one tile runs whole (padded the same way when it is not a multiple).

    With ``overlap`` at least the network's receptive radius (in input pixels), every
    kept output pixel sees exactly what it sees in the whole image, so tiled output
    equals whole-image output up to float rounding; a smaller overlap trades that for
    less work.
    """

    def __init__(self, net: nn.Module, tile: int, overlap: int = 16, multiple: int = 1) -> None:
        super().__init__()
        self.net, self.tile, self.overlap, self.multiple = net, tile, overlap, multiple
        self.output_ports = getattr(net, "output_ports", ("out",))  # the step program's names

    def forward(self, **inputs: torch.Tensor) -> Any:
        ((name, x),) = inputs.items()
        h, w = x.shape[-2:]
        if h <= self.tile and w <= self.tile:
            return self._run(name, x)
        out: dict[str, torch.Tensor] = {}
        single = True
        for top in range(0, h, self.tile):
            for left in range(0, w, self.tile):
                t0, t1 = self._span(top, h)
                l0, l1 = self._span(left, w)
                ys = self._run(name, x[..., t0:t1, l0:l1])
                single = not isinstance(ys, dict)
                for key, y in ({"": ys} if single else ys).items():
                    scale = y.shape[-1] // (l1 - l0)
                    if key not in out:
                        out[key] = y.new_zeros((*y.shape[:-2], h * scale, w * scale))
                    bottom, right = min(top + self.tile, h), min(left + self.tile, w)
                    out[key][..., top * scale : bottom * scale, left * scale : right * scale] = y[
                        ...,
                        (top - t0) * scale : (bottom - t0) * scale,
                        (left - l0) * scale : (right - l0) * scale,
                    ]
        return out[""] if single else out

    def _span(self, start: int, length: int) -> tuple[int, int]:
        """The rows (or columns) of the tile at ``start`` with its context, grown to a
        multiple of ``multiple`` with more of the image where the image allows."""
        lo, hi = max(start - self.overlap, 0), min(start + self.tile + self.overlap, length)
        size = -(-(hi - lo) // self.multiple) * self.multiple
        if size <= length:
            hi = min(lo + size, length)
            lo = hi - size
        return lo, hi

    def _run(self, name: str, patch: torch.Tensor) -> Any:
        """The network on ``patch``, padded to its size multiple (only when the whole
        image is smaller than one) and cropped back."""
        h, w = patch.shape[-2:]
        pad_h, pad_w = -h % self.multiple, -w % self.multiple
        if pad_h or pad_w:
            # Replicate padding of the last two axes; a window of frames (N×T×C×H×W,
            # video SR) needs the 3-axis form, with no padding in front.
            pad = (0, pad_w, 0, pad_h, *((0, 0) if patch.ndim == 5 else ()))
            patch = F.pad(patch, pad, mode="replicate")
        ys = self.net(**{name: patch})

        def crop(y: torch.Tensor) -> torch.Tensor:
            scale = y.shape[-1] // (w + pad_w)
            return y[..., : h * scale, : w * scale]

        return {k: crop(v) for k, v in ys.items()} if isinstance(ys, dict) else crop(ys)

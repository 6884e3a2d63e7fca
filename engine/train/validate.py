"""Validation: metrics on the validation set, with tiled inference and sample images."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.metrics import METRICS

#: What validation compares a model with: ``bicubic`` upscaling of its input (SR), or
#: the (degraded) ``input`` itself (restoration at 1x). Logged as ``val/psnr_bicubic``,
#: ``val/psnr_input`` and so on.
Baseline = Literal["bicubic", "input"]


class Tiled(nn.Module):
    """Runs a network on overlapping tiles of its (single) image input and stitches.

    Large validation images otherwise run out of memory. Each tile is ``tile`` pixels
    plus ``overlap`` of context on every side; only the centre of each output tile is
    kept, so the seams do not show. Tiles take more of the image around them to reach
    a size the network accepts (a multiple of ``multiple``); only an image smaller than
    that is padded (replicating its border), and the output cropped back.
    Every image output of the network is stitched (a dict of outputs, too).
    """

    def __init__(self, net: nn.Module, tile: int, overlap: int = 16, multiple: int = 1) -> None:
        super().__init__()
        self.net, self.tile, self.overlap, self.multiple = net, tile, overlap, multiple
        self.output_ports = getattr(net, "output_ports", ("out",))  # the step program's names

    def forward(self, **inputs: torch.Tensor) -> Any:
        ((name, x),) = inputs.items()
        h, w = x.shape[-2:]
        if h <= self.tile and w <= self.tile:
            return self.net(**inputs)
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
            patch = F.pad(patch, (0, pad_w, 0, pad_h), mode="replicate")
        ys = self.net(**{name: patch})

        def crop(y: torch.Tensor) -> torch.Tensor:
            scale = y.shape[-1] // (w + pad_w)
            return y[..., : h * scale, : w * scale]

        return {k: crop(v) for k, v in ys.items()} if isinstance(ys, dict) else crop(ys)


def _image(t: torch.Tensor) -> np.ndarray:
    t = t.detach().float().clamp(0, 1).cpu()
    if t.shape[0] == 1:
        t = t.expand(3, -1, -1)
    return (t[:3].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def save_sample(path: Path, parts: list[torch.Tensor]) -> None:
    """input | output | target, side by side, each resized to the target's size."""
    from PIL import Image

    height, width = parts[-1].shape[-2:]
    resized = [
        F.interpolate(p[None].float(), size=(height, width), mode="nearest")[0]
        if p.shape[-2:] != (height, width)
        else p
        for p in parts
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate([_image(p) for p in resized], axis=1)).save(path)


def evaluate(
    run_graph: Any,
    batches: Any,
    *,
    output: str,
    target: str | None,
    source: str | None,
    metrics: list[str],
    crop: int,
    y_channel: bool,
    samples: int,
    sample_dir: Path | None,
    iteration: int,
    baseline: Baseline | None = "bicubic",
) -> dict[str, float]:
    """Mean of each metric over the validation batches; writes the first samples.

    ``baseline`` adds ``<metric>_<baseline>`` for what the model must beat, computed
    from ``source``: ``bicubic`` (SR) scores the input upscaled by bicubic
    interpolation, ``input`` (restoration at 1x) scores the degraded input itself.
    """
    totals = {m: 0.0 for m in metrics}
    count = 0
    for i, batch in enumerate(batches):
        values = run_graph(
            batch,
            [
                output.split(".")[0],
                *(r.split(".")[0] for r in (target, source) if r and not r.startswith("data.")),
            ],
        )
        pred = _lookup(values, batch, output)
        ref = _lookup(values, batch, target) if target else None
        if ref is not None:
            for name in metrics:
                totals[name] += METRICS[name](pred, ref, crop=crop, y_channel=y_channel)
            low = _lookup(values, batch, source) if source else None
            base = _baseline(low, ref, baseline) if low is not None and baseline else None
            if base is not None:
                for name in metrics:
                    key = f"{name}_{baseline}"
                    totals[key] = totals.get(key, 0.0) + METRICS[name](
                        base, ref, crop=crop, y_channel=y_channel
                    )
            count += 1
        if sample_dir is not None and i < samples:
            parts = [
                p
                for p in (_lookup(values, batch, source) if source else None, pred, ref)
                if p is not None
            ]
            save_sample(sample_dir / f"iter_{iteration:08d}_{i}.png", [p[0] for p in parts])
    return {k: v / count for k, v in totals.items()} if count else {}


def _baseline(low: torch.Tensor, ref: torch.Tensor, kind: Baseline) -> torch.Tensor | None:
    """The baseline image for ``ref`` made from the network input ``low``; None when
    there is none: channels differ (image-to-image translation), or ``bicubic`` is asked
    of an input that is not smaller, or ``input`` of one that is not the target's size.
    A window of frames (B x T x C x H x W) is judged by its centre frame."""
    if low.ndim == ref.ndim + 1:
        low = low[:, low.shape[1] // 2]
    if low.ndim != ref.ndim or low.shape[1] != ref.shape[1]:
        return None
    if kind == "input":
        return low.float().clamp(0, 1) if low.shape[-2:] == ref.shape[-2:] else None
    if low.shape[-1] >= ref.shape[-1]:
        return None
    up = F.interpolate(low.float(), size=ref.shape[-2:], mode="bicubic", align_corners=False)
    return up.clamp(0, 1)


def _lookup(
    values: dict[str, dict[str, torch.Tensor]], batch: dict[str, torch.Tensor], ref: str
) -> torch.Tensor:
    if ref.startswith("data."):
        return batch[ref[5:]]
    node, _, port = ref.partition(".")
    outputs = values[node]
    return outputs[port] if port else outputs.get("out", next(iter(outputs.values())))

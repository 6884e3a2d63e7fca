"""Validation: metrics on the validation set, with tiled inference and sample images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.metrics import METRICS


class Tiled(nn.Module):
    """Runs a network on overlapping tiles of its (single) image input and stitches.

    Large validation images otherwise run out of memory. Each tile is ``tile`` pixels
    plus ``overlap`` of context on every side; only the centre of each output tile is
    kept, so the seams do not show.
    """

    def __init__(self, net: nn.Module, tile: int, overlap: int = 16) -> None:
        super().__init__()
        self.net, self.tile, self.overlap = net, tile, overlap

    def forward(self, **inputs: torch.Tensor) -> Any:
        ((name, x),) = inputs.items()
        h, w = x.shape[-2:]
        if h <= self.tile and w <= self.tile:
            return self.net(**inputs)
        out = None
        for top in range(0, h, self.tile):
            for left in range(0, w, self.tile):
                t0, l0 = max(top - self.overlap, 0), max(left - self.overlap, 0)
                t1, l1 = (
                    min(top + self.tile + self.overlap, h),
                    min(left + self.tile + self.overlap, w),
                )
                y = self.net(**{name: x[..., t0:t1, l0:l1]})
                scale = y.shape[-1] // (l1 - l0)
                if out is None:
                    out = y.new_zeros((*y.shape[:-2], h * scale, w * scale))
                bottom, right = min(top + self.tile, h), min(left + self.tile, w)
                out[..., top * scale : bottom * scale, left * scale : right * scale] = y[
                    ...,
                    (top - t0) * scale : (bottom - t0) * scale,
                    (left - l0) * scale : (right - l0) * scale,
                ]
        return out


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
) -> dict[str, float]:
    """Mean of each metric over the validation batches; writes the first samples."""
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
            if low is not None and low.shape[-1] < ref.shape[-1] and low.shape[1] == ref.shape[1]:
                # What plain bicubic upscaling scores: the baseline an SR model must beat.
                up = F.interpolate(
                    low.float(), size=ref.shape[-2:], mode="bicubic", align_corners=False
                )
                for name in metrics:
                    key = f"{name}_bicubic"
                    totals[key] = totals.get(key, 0.0) + METRICS[name](
                        up.clamp(0, 1), ref, crop=crop, y_channel=y_channel
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


def _lookup(
    values: dict[str, dict[str, torch.Tensor]], batch: dict[str, torch.Tensor], ref: str
) -> torch.Tensor:
    if ref.startswith("data."):
        return batch[ref[5:]]
    node, _, port = ref.partition(".")
    outputs = values[node]
    return outputs[port] if port else outputs.get("out", next(iter(outputs.values())))

"""Validation: metrics on the validation set, with tiled inference and sample images."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from engine.apply.tiling import Tiled
from engine.metrics import METRICS
from engine.train.heats import HeatScores, draw_seed, draws_at, save_grid, seeded

__all__ = ["Baseline", "Tiled", "evaluate", "save_sample"]

#: What validation compares a model with: ``bicubic`` upscaling of its input (SR), or
#: the (degraded) ``input`` itself (restoration at 1x), or the ``average`` of the two
#: input frames (frame interpolation). Logged as ``val/psnr_bicubic``,
#: ``val/psnr_input``, ``val/psnr_average`` and so on.
Baseline = Literal["bicubic", "input", "average"]


def _image(t: torch.Tensor) -> np.ndarray:
    t = t.detach().float().clamp(0, 1).cpu()
    if t.shape[0] == 1:
        t = t.expand(3, -1, -1)
    return (t[:3].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def save_sample(path: Path, parts: list[torch.Tensor]) -> None:
    """input | output | target, side by side, each resized to the target's size. A
    window of frames (T x C x H x W, video SR's ``data.lr``) shows its centre frame,
    the one the network predicts."""
    from PIL import Image

    parts = [p[p.shape[0] // 2] if p.ndim == 4 else p for p in parts]
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
    heats: tuple[float, ...] = (),
    n_sample: int = 1,
) -> dict[str, float]:
    """Mean of each metric over the validation batches; writes the first samples.

    ``baseline`` adds ``<metric>_<baseline>`` for what the model must beat, computed
    from ``source``: ``bicubic`` (SR) scores the input upscaled by bicubic
    interpolation, ``input`` (restoration at 1x) scores the degraded input itself.

    With ``heats`` (``output`` is a reverse call's), the metrics are taken at heat 0,
    and ``output`` is drawn ``n_sample`` times per image at each heat
    (:mod:`engine.train.heats`): ``run_graph(batch, targets, heat=h)`` runs it at h.
    """
    totals = {m: 0.0 for m in metrics}
    count = 0
    node = output.split(".")[0]
    scores = HeatScores(heats, n_sample, crop, y_channel) if heats else None
    for i, batch in enumerate(batches):
        targets = [
            node,
            *(r.split(".")[0] for r in (target, source) if r and not r.startswith("data.")),
        ]
        if scores is None:
            values = run_graph(batch, targets)
        else:
            device = next(iter(batch.values())).device
            with seeded(draw_seed(i, 0.0, -1), device):  # training's generators stay as they were
                values = run_graph(batch, targets, heat=0.0)
        pred = _lookup(values, batch, output)
        ref = _lookup(values, batch, target) if target else None
        if ref is not None:
            for name in metrics:
                totals[name] += METRICS[name](pred, ref, crop=crop, y_channel=y_channel)
            low = _lookup(values, batch, source) if source else None
            if baseline == "average":
                base = _frame_average(batch, ref)
            else:
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
        if scores is not None:
            grid = sample_dir / f"iter_{iteration:08d}_{i}_heats.png" if sample_dir else None
            low = _lookup(values, batch, source) if source else None

            def run(heat: float, batch: dict[str, torch.Tensor] = batch) -> torch.Tensor:
                return _lookup(run_graph(batch, [node], heat=heat), batch, output)

            rows = []
            for heat in heats:
                draws = draws_at(run, i, heat, n_sample, device)
                scores.add(heat, draws, ref)
                if grid is not None and i < samples:
                    rows.append([d[0].detach().cpu() for d in draws])
            if grid is not None and rows:
                save_grid(
                    grid,
                    rows,
                    low[0] if low is not None else None,
                    ref[0] if ref is not None else None,
                )
    found = {k: v / count for k, v in totals.items()} if count else {}
    if scores is not None:
        found.update(scores.values(scored=count > 0))
    return found


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


def _frame_average(batch: dict[str, torch.Tensor], ref: torch.Tensor) -> torch.Tensor | None:
    """(f0 + f1) / 2, the interpolation any frame-interpolation model must beat."""
    f0, f1 = batch.get("f0"), batch.get("f1")
    if f0 is None or f1 is None or f0.shape != ref.shape or f1.shape != ref.shape:
        return None
    return (f0.float() + f1.float()) / 2


def _lookup(
    values: dict[str, dict[str, torch.Tensor]], batch: dict[str, torch.Tensor], ref: str
) -> torch.Tensor:
    if ref.startswith("data."):
        return batch[ref[5:]]
    node, _, port = ref.partition(".")
    outputs = values[node]
    return outputs[port] if port else outputs.get("out", next(iter(outputs.values())))

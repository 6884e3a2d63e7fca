"""Validation of a sampled output: a reverse call (an invertible network run backwards
from z ~ N(0, heat²)) drawn ``n_sample`` times per image at each of ``validation.heats``.

Per heat h (spelled as :func:`~engine.settings.run.heat_label` prints it: ``heat0.5``,
``heat1``):

* ``psnr_heat{h}``: the mean PSNR of the draws against the target, over every draw of
  every image;
* ``diversity_heat{h}`` (with ``n_sample`` ≥ 2): per image, the standard deviation
  across its draws of each pixel value (clamped to [0, 1], population formula), averaged
  over the pixels and channels and × 255, so in grey levels; then averaged over the
  images. At heat 0 every draw is the same image and it is 0.

``nonfinite_samples`` counts the draws with any NaN or inf; they are left out of both
means, and a heat with no finite draw logs nan. Each draw is seeded from (image, heat,
sample), so two validations of the same weights give the same numbers, and the global
generators are put back afterwards: training draws what it would have drawn without
validation.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engine.metrics import METRICS
from engine.settings.run import heat_label

#: Runs the sampled output at a heat: heat → the image (1 × C × H × W).
Draw = Callable[[float], torch.Tensor]


def draw_seed(image: int, heat: float, sample: int) -> int:
    """The seed of one draw: the same for the same (image, heat, sample) in every
    validation, whatever else the heats list holds."""
    return zlib.crc32(f"{image}/{heat_label(heat)}/{sample}".encode())


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """The CPU's generator and ``device``'s seeded with ``seed`` inside, both put back
    on leaving (only the device in use: other GPUs are not touched)."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.default_generator.manual_seed(seed)
        if devices:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        yield


def draws_at(
    run: Draw, image: int, heat: float, n_sample: int, device: torch.device
) -> list[torch.Tensor]:
    """``n_sample`` draws of image ``image`` at ``heat``, each seeded by its own
    (image, heat, sample)."""
    out = []
    for sample in range(n_sample):
        with seeded(draw_seed(image, heat, sample), device):
            out.append(run(heat))
    return out


def diversity(draws: list[torch.Tensor]) -> float:
    """The mean over pixels of the standard deviation across ``draws`` (values clamped
    to [0, 1]), in grey levels (× 255)."""
    stack = torch.stack([d.detach().double().clamp(0, 1) for d in draws])
    return float(stack.std(0, correction=0).mean() * 255)


def is_finite(image: torch.Tensor) -> bool:
    return bool(torch.isfinite(image).all())


@dataclass
class HeatScores:
    """The running sums of a validation's draws, per heat."""

    heats: tuple[float, ...]
    n_sample: int
    crop: int
    y_channel: bool
    psnr: dict[float, list[float]] = field(default_factory=dict)
    spread: dict[float, list[float]] = field(default_factory=dict)
    nonfinite: int = 0
    total: int = 0

    def add(self, heat: float, draws: list[torch.Tensor], ref: torch.Tensor | None) -> None:
        """One image's draws at ``heat`` (with its target, where there is one)."""
        kept = [d for d in draws if is_finite(d)]
        self.total += len(draws)
        self.nonfinite += len(draws) - len(kept)
        if ref is not None:
            psnr = METRICS["psnr"]
            scores = [psnr(d, ref, crop=self.crop, y_channel=self.y_channel) for d in kept]
            self.psnr.setdefault(heat, []).extend(scores)
        if self.n_sample >= 2 and len(kept) >= 2:
            self.spread.setdefault(heat, []).append(diversity(kept))

    def values(self, *, scored: bool) -> dict[str, float]:
        """``psnr_heat{h}`` (when there were targets: ``scored``), ``diversity_heat{h}``
        (with 2 draws or more) and ``nonfinite_samples``."""
        out: dict[str, float] = {}
        for heat in self.heats:
            label = heat_label(heat)
            if scored:
                out[f"psnr_{label}"] = _mean(self.psnr.get(heat, []))
            if self.n_sample >= 2:
                out[f"diversity_{label}"] = _mean(self.spread.get(heat, []))
        out["nonfinite_samples"] = float(self.nonfinite)
        return out


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def save_grid(
    path: Path,
    rows: list[list[torch.Tensor]],
    low: torch.Tensor | None,
    ref: torch.Tensor | None,
) -> None:
    """One row per heat, one column per draw, after two columns that the first row
    fills with the input (bicubic-resized to the output's size) and the target (black
    below them, and where there is no input or target). Images are C × H × W; NaN and
    inf pixels are drawn as 0."""
    from PIL import Image

    height, width = rows[0][0].shape[-2:]
    blank = torch.zeros(3, height, width)
    lead = [_fit(low, height, width, "bicubic"), _fit(ref, height, width, "nearest")]
    lines = []
    for r, draws in enumerate(rows):
        first = lead if r == 0 else [blank, blank]
        lines.append(np.concatenate([_pixels(p) for p in (*first, *draws)], axis=1))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(lines, axis=0)).save(path)


def _fit(image: torch.Tensor | None, height: int, width: int, mode: str) -> torch.Tensor:
    """``image`` at height × width (a window of frames: its centre frame); black for none."""
    if image is None:
        return torch.zeros(3, height, width)
    image = image[image.shape[0] // 2] if image.ndim == 4 else image
    image = image.detach().float().cpu()
    if image.shape[-2:] != (height, width):
        options = {"align_corners": False} if mode == "bicubic" else {}
        image = F.interpolate(image[None], size=(height, width), mode=mode, **options)[0]
    return image


def _pixels(image: torch.Tensor) -> np.ndarray:
    t = torch.nan_to_num(image.detach().float().cpu(), nan=0.0, posinf=0.0, neginf=0.0)
    t = t.clamp(0, 1)
    if t.shape[0] == 1:
        t = t.expand(3, -1, -1)
    return (t[:3].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)

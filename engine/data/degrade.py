"""Degradations declared in the spec: an ordered list of steps, drawn per sample.

A step is one of::

    {kind: blur, prob: 0.8, type: {iso: 0.7, aniso: 0.3}, size: [7, 21], sigma: [0.2, 3]}
    {kinds: {blur: 2, noise: 1}, prob: 0.5, blur: {...}, noise: {...}}   # one kind, by weight
    {one_of: [{weight: 1, steps: [...]}, {weight: 1, steps: [...]}]}      # one sub-list

``prob`` (default 1) is the chance the step runs at all. A value given as ``[lo, hi]``
is drawn uniformly per sample; a choice given as ``{name: weight}`` is drawn by weight.
Every draw comes from the sample's own generator, so a seed, epoch and index give the
same degraded image on any worker. Kinds and their parameters are listed in
:data:`PARAMS`; docs/data.md has the Real-ESRGAN two-stage recipe written this way.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from engine.data.errors import DataError
from engine.data.kinds import KERNELS
from engine.data.resize import resize, scaled_size
from engine.spec.skeleton import BLUR_TYPES, NOISE_TYPES

Params = dict[str, Any]
Rng = np.random.Generator

#: Each kind's parameters and their defaults (a number, a [lo, hi] range or a choice).
PARAMS: dict[str, Params] = {
    "blur": {
        "type": "iso",
        "size": [7, 21],  # odd kernel sizes
        "sigma": [0.2, 3.0],  # pixels; aniso draws one per axis
        "angle": [-180.0, 180.0],  # degrees, anisotropic and motion kernels
        "beta": [0.5, 4.0],  # shape of generalized (and plateau) kernels
        "cutoff": [math.pi / 3, math.pi],  # sinc: cutoff frequency, radians per pixel
    },
    "noise": {
        "type": "gaussian",
        "sigma": [1.0, 30.0],  # gaussian, on the 0-255 scale
        "poisson_scale": [0.05, 3.0],
        "speckle": [0.02, 0.2],  # std of the multiplicative noise
        "amount": [0.001, 0.02],  # salt_pepper: fraction of pixels
        "gray_prob": 0.0,  # chance the noise is the same on every channel
    },
    "jpeg": {"quality": [30, 95]},
    "resize": {
        "scale": [0.5, 1.0],
        "updown": None,  # {up: w, down: w, keep: w}: split scale at 1, choose by weight
        "kernel": {"bilinear": 1, "bicubic": 1, "area": 1},
        "to": None,  # 'lr': to the final LR size
    },
    "sharpen": {"amount": [0.3, 0.8], "sigma": [1.0, 3.0], "threshold": 10.0},
}
KINDS: tuple[str, ...] = tuple(PARAMS)


def draw(value: Any, rng: Rng) -> float:
    """A number, or uniform in ``[lo, hi]``."""
    if isinstance(value, Sequence):
        lo, hi = value
        return float(rng.uniform(lo, hi))
    return float(value)


def choose(value: str | Mapping[str, float], rng: Rng) -> str:
    """A name, or one name of ``{name: weight}`` drawn by weight."""
    if isinstance(value, str):
        return value
    names = list(value)
    weights = np.asarray([value[n] for n in names], np.float64)
    return names[int(rng.choice(len(names), p=weights / weights.sum()))]


def _seeded(rng: Rng) -> torch.Generator:
    return torch.Generator().manual_seed(int(rng.integers(2**62)))


# -- blur kernels ------------------------------------------------------------------------------


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    r = np.arange(size) - (size - 1) / 2
    return np.meshgrid(r, r, indexing="ij")


def _quadratic(size: int, sx: float, sy: float, angle: float) -> np.ndarray:
    """xᵀ Σ⁻¹ x over a size x size grid for a rotated Gaussian with sigmas sx, sy."""
    y, x = _grid(size)
    c, s = math.cos(angle), math.sin(angle)
    u, v = c * x + s * y, -s * x + c * y
    return (u / sx) ** 2 + (v / sy) ** 2


def blur_kernel(p: Params, rng: Rng) -> np.ndarray:
    kind = choose(p["type"], rng)
    size = _odd(p["size"], rng)
    angle = math.radians(draw(p["angle"], rng))
    if kind in ("box", "motion", "sinc"):
        makers: dict[str, Callable[[], np.ndarray]] = {
            "box": lambda: np.ones((size, size)),
            "motion": lambda: _motion(size, angle),
            "sinc": lambda: _sinc(size, draw(p["cutoff"], rng)),
        }
        kernel = makers[kind]()
    else:
        sx = draw(p["sigma"], rng)
        sy = draw(p["sigma"], rng) if kind.endswith("aniso") else sx
        q = _quadratic(size, sx, sy, angle)
        if kind.startswith("generalized"):
            kernel = np.exp(-0.5 * q ** draw(p["beta"], rng))
        elif kind.startswith("plateau"):
            kernel = 1.0 / (1.0 + q ** draw(p["beta"], rng))
        else:
            kernel = np.exp(-0.5 * q)
    normalised: np.ndarray = kernel / kernel.sum()
    return normalised


def _odd(value: Any, rng: Rng) -> int:
    if isinstance(value, Sequence):
        lo, hi = int(value[0]), int(value[1])
        choices = [k for k in range(lo, hi + 1) if k % 2] or [lo | 1]
        return int(rng.choice(choices))
    return int(value) | 1


def _motion(size: int, angle: float) -> np.ndarray:
    """A straight streak through the centre: many samples along the line, bilinear."""
    kernel = np.zeros((size, size))
    centre = (size - 1) / 2
    for t in np.linspace(-centre, centre, 4 * size):
        y, x = centre + t * math.sin(angle), centre + t * math.cos(angle)
        y0, x0 = math.floor(y), math.floor(x)
        for dy in (0, 1):
            for dx in (0, 1):
                if 0 <= y0 + dy < size and 0 <= x0 + dx < size:
                    kernel[y0 + dy, x0 + dx] += (1 - abs(y - y0 - dy)) * (1 - abs(x - x0 - dx))
    return kernel


def _sinc(size: int, cutoff: float) -> np.ndarray:
    """An ideal circular low-pass filter (2-D sinc, ringing included), cut to size."""
    from scipy.special import j1

    y, x = _grid(size)
    r = np.hypot(x, y)
    safe = np.where(r == 0, 1.0, r)
    return np.where(
        r == 0, cutoff**2 / (4 * math.pi), cutoff * j1(cutoff * safe) / (2 * math.pi * safe)
    )


def convolve(image: torch.Tensor, kernel: np.ndarray) -> torch.Tensor:
    """Filter every channel of CxHxW ``image`` with ``kernel`` (reflected borders)."""
    channels = image.shape[0]
    k = torch.from_numpy(kernel).float()
    pad = kernel.shape[0] // 2
    mode = "reflect" if pad < min(image.shape[-2:]) else "replicate"
    x = F.pad(image[None], (pad, pad, pad, pad), mode=mode)
    return F.conv2d(x, k.expand(channels, 1, *k.shape), groups=channels)[0]


# -- the kinds ------------------------------------------------------------------------------


def blur(image: torch.Tensor, p: Params, rng: Rng, ctx: Context) -> torch.Tensor:
    return convolve(image, blur_kernel(p, rng)).clamp_(0, 1)


def noise(image: torch.Tensor, p: Params, rng: Rng, ctx: Context) -> torch.Tensor:
    kind = choose(p["type"], rng)
    gray = rng.random() < float(p["gray_prob"])
    gen = _seeded(rng)
    shape = (1, *image.shape[1:]) if gray else image.shape
    if kind == "gaussian":
        out = image + torch.randn(shape, generator=gen) * (draw(p["sigma"], rng) / 255.0)
    elif kind == "speckle":
        out = image * (1 + torch.randn(shape, generator=gen) * draw(p["speckle"], rng))
    elif kind == "poisson":
        scale = draw(p["poisson_scale"], rng)
        base = image.mean(0, keepdim=True) if gray else image
        shot = torch.poisson(base * 255.0, generator=gen) / 255.0 - base
        out = image + shot * scale
    else:  # salt_pepper
        amount = draw(p["amount"], rng)
        u = torch.rand(shape, generator=gen)
        out = image.clone()
        out = torch.where(u < amount / 2, torch.zeros_like(out), out)
        out = torch.where(u > 1 - amount / 2, torch.ones_like(out), out)
    return out.clamp_(0, 1)


def jpeg(image: torch.Tensor, p: Params, rng: Rng, ctx: Context) -> torch.Tensor:
    quality = round(draw(p["quality"], rng))
    color = image[:3] if image.shape[0] >= 3 else image[:1]
    pixels = (color.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels.squeeze(-1) if pixels.shape[2] == 1 else pixels).save(
        buffer, format="JPEG", quality=max(1, min(quality, 100))
    )
    decoded = np.asarray(Image.open(buffer))
    decoded = decoded[:, :, None] if decoded.ndim == 2 else decoded
    out = torch.from_numpy(decoded.transpose(2, 0, 1).copy()).float() / 255.0
    return torch.cat([out, image[3:]]) if image.shape[0] == 4 else out


def resize_step(image: torch.Tensor, p: Params, rng: Rng, ctx: Context) -> torch.Tensor:
    kernel = choose(p["kernel"], rng)
    if p["to"] == "lr":
        return resize(image, ctx.final_size, kernel)
    lo, hi = (p["scale"], p["scale"]) if not isinstance(p["scale"], Sequence) else p["scale"]
    if p["updown"]:
        way = choose(p["updown"], rng)
        lo, hi = {
            "up": (max(lo, 1.0), max(hi, 1.0)),
            "down": (min(lo, 1.0), min(hi, 1.0)),
            "keep": (1.0, 1.0),
        }[way]
    factor = float(rng.uniform(lo, hi))
    height, width = image.shape[-2:]
    return resize(image, scaled_size(height, width, factor), kernel)


def sharpen(image: torch.Tensor, p: Params, rng: Rng, ctx: Context) -> torch.Tensor:
    """Unsharp masking: add back the detail a Gaussian blur removes, above a threshold."""
    sigma = draw(p["sigma"], rng)
    size = 2 * math.ceil(3 * sigma) + 1
    q = _quadratic(size, sigma, sigma, 0.0)
    kernel = np.exp(-0.5 * q)
    detail = image - convolve(image, kernel / kernel.sum())
    mask = (detail.abs() * 255 > float(p["threshold"])).float()
    return (image + draw(p["amount"], rng) * detail * mask).clamp_(0, 1)


_APPLY: dict[str, Callable[[torch.Tensor, Params, Rng, Context], torch.Tensor]] = {
    "blur": blur,
    "noise": noise,
    "jpeg": jpeg,
    "resize": resize_step,
    "sharpen": sharpen,
}


@dataclass(frozen=True)
class Context:
    final_size: tuple[int, int]  # the LR size the pipeline must end at


# -- parsing ---------------------------------------------------------------------------------


#: One way a step may go, and its weight: (kind, params) applied in order.
Option = tuple[tuple[tuple[str, Params], ...], float]


@dataclass(frozen=True)
class Step:
    """One step: run with probability ``prob``; then one of ``options`` by weight.

    An option is a list of (kind, params) applied in order; a plain ``kind:`` step has
    one option of one kind.
    """

    prob: float
    options: tuple[Option, ...]

    def run(self, image: torch.Tensor, rng: Rng, ctx: Context) -> torch.Tensor:
        if rng.random() >= self.prob:
            return image
        weights = np.asarray([w for _, w in self.options])
        chosen = int(rng.choice(len(weights), p=weights / weights.sum()))
        for kind, params in self.options[chosen][0]:
            image = _APPLY[kind](image, params, rng, ctx)
        return image


@dataclass(frozen=True)
class Pipeline:
    steps: tuple[Step, ...] = field(default_factory=tuple)

    @classmethod
    def parse(cls, steps: Sequence[Mapping[str, Any]], *, where: str) -> Pipeline:
        return cls(
            tuple(_parse_step(s, f"{where}[{i}]", nested=False) for i, s in enumerate(steps))
        )

    def __bool__(self) -> bool:
        return bool(self.steps)

    def run(self, image: torch.Tensor, rng: Rng, *, final_size: tuple[int, int]) -> torch.Tensor:
        """Degrade CxHxW ``image``; the caller resizes to ``final_size`` if still needed."""
        ctx = Context(final_size)
        for step in self.steps:
            image = step.run(image, rng, ctx)
        return image


def _parse_step(step: Mapping[str, Any], where: str, *, nested: bool) -> Step:
    prob = float(step.get("prob", 1.0))
    if "kind" in step:
        params = {k: v for k, v in step.items() if k not in ("kind", "prob")}
        return Step(prob, (((_params(step["kind"], params, where),), 1.0),))
    if "kinds" in step:
        stray = [k for k in KINDS if k in step and k not in step["kinds"]]
        if stray:
            raise DataError(f"{where}: parameters for '{stray[0]}', which is not in kinds")
        options: list[Option] = []
        for kind, weight in step["kinds"].items():
            options.append(
                ((_params(kind, dict(step.get(kind) or {}), f"{where}.{kind}"),), weight)
            )
        return Step(prob, tuple(options))
    if "one_of" in step and not nested:
        options = []
        for j, option in enumerate(step["one_of"]):
            sub = [
                _parse_step(s, f"{where}.one_of[{j}].steps[{k}]", nested=True)
                for k, s in enumerate(option.get("steps", []))
            ]
            flat = tuple(item for s in sub for item in _single(s, f"{where}.one_of[{j}]"))
            options.append((flat, float(option.get("weight", 1.0))))
        return Step(prob, tuple(options))
    raise DataError(f"{where}: a degradation step needs 'kind', 'kinds' or 'one_of'")


def _single(step: Step, where: str) -> tuple[tuple[str, Params], ...]:
    """Steps inside one_of run in order; each keeps its own prob through a wrapper."""
    if step.prob >= 1.0 and len(step.options) == 1:
        return step.options[0][0]
    return (("_step", {"step": step}),)


def _nested(image: torch.Tensor, p: Params, rng: Rng, ctx: Context) -> torch.Tensor:
    step: Step = p["step"]
    return step.run(image, rng, ctx)


_APPLY["_step"] = _nested


def _params(kind: str, given: Params, where: str) -> tuple[str, Params]:
    if kind not in PARAMS:
        raise DataError(f"{where}: unknown degradation kind '{kind}'; use {', '.join(KINDS)}")
    unknown = [k for k in given if k not in PARAMS[kind]]
    if unknown:
        raise DataError(
            f"{where}: unknown parameter '{unknown[0]}' for {kind}; its parameters are "
            + ", ".join(PARAMS[kind])
        )
    params = {**PARAMS[kind], **given}
    names = {"blur": BLUR_TYPES, "noise": NOISE_TYPES}.get(kind)
    for key, allowed in (("type", names), ("kernel", KERNELS)):
        value = params.get(key)
        if allowed and value is not None:
            bad = [n for n in ([value] if isinstance(value, str) else value) if n not in allowed]
            if bad:
                raise DataError(
                    f"{where}.{key}: unknown {kind} {key} '{bad[0]}'; use {', '.join(allowed)}"
                )
    return kind, params

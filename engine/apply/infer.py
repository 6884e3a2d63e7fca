"""``infer``: images through a trained network, written to a folder.

Each image is read upright (EXIF) in its own precision, run through the network whole
or in tiles (:class:`~engine.apply.tiling.Tiled`, grown to the network's size multiple,
so tiled equals whole when the overlap covers the receptive field), and written with
the same relative path. Channels follow the input:

* **gray** in (a file whose colour channels are equal) → gray out: repeated to the
  network's RGB, the result's luma (BT.601) written.
* **alpha** (RGBA, gray+alpha) is processed apart from the colour, as chaiNNer does:
  ``alpha="network"`` (the default) runs it through the network as a gray image and
  keeps the mean of the result's channels; ``"resize"`` upscales it bicubically (much
  cheaper; exact at 1x); ``"drop"`` writes no alpha. A fully opaque alpha is dropped.
* a one-channel network gets the luma of colour inputs.

A network of frame windows (video SR) runs every frame of each folder with its window
(:mod:`engine.apply.video_sr`).

A file that cannot be read or run is reported by name and skipped; the rest go on.
On out-of-memory the tile is halved (down to 32 pixels) and the image retried.
Results are encoded and written on a thread while the network runs the next image.
"""

from __future__ import annotations

import copy
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from engine.apply.images import SIXTEEN_BIT, Item, output_path, write_image
from engine.apply.source import ApplyError, Model
from engine.apply.tiling import Tiled
from engine.data.errors import DataError
from engine.data.imageio import read_image, to_tensor
from engine.data.kinds import MAX_MEGAPIXELS

Precision = Literal["fp32", "fp16", "bf16"]
AlphaMode = Literal["network", "resize", "drop"]
Bits = Literal["auto", "8", "16"]
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
LUMA = (0.299, 0.587, 0.114)
SMALLEST_TILE = 32
#: Results waiting to be written, at most.
PENDING = 2
#: Context each tile takes on every side, in input pixels (see Tiled).
DEFAULT_OVERLAP = 16


@dataclass
class InferOptions:
    """How ``infer`` runs; the command line's options, one field each."""

    tile: int | None = None  # None: whole images (tiles only after out-of-memory)
    overlap: int = DEFAULT_OVERLAP
    precision: Precision = "fp32"
    device: str | None = None  # None: cuda when available, else cpu
    batch: int = 1
    channels_last: bool = False
    alpha: AlphaMode = "network"
    format: str = "png"  # a key of images.FORMATS, or "same"
    bits: Bits = "auto"  # auto: 16-bit out for 16-bit (or float) in, where the format allows
    quality: int = 95  # JPEG/WebP
    max_megapixels: float = MAX_MEGAPIXELS  # larger files are refused (decompression bombs)
    skip_existing: bool = False
    progress: bool | None = None  # None: a live bar on a terminal, plain lines otherwise


@dataclass
class InferResult:
    done: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    seconds: float = 0.0
    tile: int | None = None  # the tile size in use at the end (after out-of-memory retries)


class Runner:
    """The network on a device and in a precision, whole or tiled, halving the tile
    after an out-of-memory error. ``__call__`` takes and returns float32 B×C×H×W."""

    def __init__(self, model: Model, options: InferOptions, log: Callable[[str], None]) -> None:
        device = options.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.memory_format = torch.channels_last if options.channels_last else None
        module = model.module
        try:
            self.device = torch.device(device)
            first = next(module.parameters(), None)
            moved = first is not None and (
                first.device != self.device or first.dtype != DTYPES[options.precision]
            )
            if moved or self.memory_format is not None:
                # A copy: the caller's model stays as it was (fp32, on its device).
                module = copy.deepcopy(module).to(self.device, DTYPES[options.precision])
            if self.memory_format is not None:
                module = module.to(memory_format=self.memory_format)
        except (RuntimeError, ValueError, AssertionError) as exc:
            raise ApplyError(f"--device {device}: {_short(exc)}") from None
        self.module = module
        self.dtype = DTYPES[options.precision]
        self.model, self.tile, self.overlap, self.log = model, options.tile, options.overlap, log

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        while True:
            try:
                return self._forward(x, self.tile)
            except torch.OutOfMemoryError:
                smaller = self._smaller(x)
                if smaller is None:
                    raise
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                self.log(
                    f"out of memory at {'tile ' + str(self.tile) if self.tile else 'whole size'}; "
                    f"retrying with tile {smaller}"
                )
                self.tile = smaller

    def _smaller(self, x: torch.Tensor) -> int | None:
        current = self.tile or max(x.shape[-2:])
        m = self.model.multiple
        half = max(current // 2 // m * m, m)
        return half if SMALLEST_TILE <= half < current else None

    def _forward(self, x: torch.Tensor, tile: int | None) -> torch.Tensor:
        x = x.to(self.device, self.dtype)
        if self.memory_format is not None:
            x = x.contiguous(memory_format=self.memory_format)
        size = tile or max(x.shape[-2:])
        net = Tiled(self.module, size, overlap=self.overlap, multiple=self.model.multiple)
        with torch.inference_mode():
            y = net(**{self.model.input: x})
        if isinstance(y, dict):
            y = y[self.model.port]
        out: torch.Tensor = y.float().cpu()
        return out


@dataclass
class _Image:
    """One decoded image, split as the network needs it."""

    item: Item
    target: Path
    color: torch.Tensor  # the network's input channels, C×H×W in [0, 1]
    alpha: torch.Tensor | None  # H×W, or None (none, opaque, or dropped)
    gray: bool
    bits: int  # 8 or 16: the output's


def prepare(pixels: np.ndarray, channels: int, alpha: AlphaMode) -> tuple[Any, Any, bool]:
    """HxWx4 pixels (as read) → (network input C×H×W, alpha H×W or None, gray?)."""
    t = to_tensor(pixels)
    rgb, a = t[:3], t[3]
    gray = bool(torch.equal(rgb[0], rgb[1]) and torch.equal(rgb[1], rgb[2]))
    keep_alpha = alpha != "drop" and bool((a < 1).any()) and channels != 4
    if channels == 1:
        color = _luma(rgb)
    elif channels == 3:
        color = rgb
    else:  # 4: an RGBA network takes the alpha itself
        color = t
    return color, a if keep_alpha else None, gray


def _luma(rgb: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor(LUMA, dtype=rgb.dtype).view(3, 1, 1)
    return (rgb * weights).sum(0, keepdim=True)


def finish(y: torch.Tensor, alpha: torch.Tensor | None, gray: bool, bits: int) -> np.ndarray:
    """Network output C×H×W (+ processed alpha H×W) → HxWxC pixels of ``bits``."""
    y = y.clamp(0, 1)
    if y.shape[0] == 3 and gray:
        y = _luma(y)
    if alpha is not None and y.shape[0] in (1, 3):
        y = torch.cat([y, alpha.clamp(0, 1)[None]])
    top = 65535 if bits == 16 else 255
    values = (y.permute(1, 2, 0).numpy() * top).round()
    return values.astype(np.uint16 if bits == 16 else np.uint8)


def infer(
    model: Model,
    items: list[Item],
    out_dir: Path,
    options: InferOptions,
    *,
    log: Callable[[str], None] | None = None,
) -> InferResult:
    """Run ``model`` on every item; results under ``out_dir``. Never raises for one
    image: its failure is recorded (and logged) and the others go on."""
    if model.channels not in (1, 3, 4):
        raise ApplyError(
            f"network '{model.net}' takes {model.channels}-channel inputs; infer feeds gray, "
            "RGB or RGBA images"
        )
    if options.bits == "16" and options.format not in ("png", "tif", "same"):
        raise ApplyError(f"16-bit output needs --format png or tif, not {options.format}")
    if model.frames is not None:
        raise ApplyError(
            f"network '{model.net}' takes windows of frames; run it with "
            "engine.apply.video_sr.super_resolve_sequences"
        )
    say = log or (lambda text: print(text, file=sys.stderr, flush=True))
    runner = Runner(model, options, say)
    result = InferResult()
    started = time.perf_counter()
    with _Progress(len(items), options.progress, say) as progress:
        writer = _Writer(result, progress, options.quality)
        try:
            images = _decoded(items, out_dir, model, options, result, progress)
            for group in _groups(images, options):
                _run_group(group, runner, model, options, writer, result, progress)
        finally:
            writer.close()
    result.seconds = time.perf_counter() - started
    result.tile = runner.tile
    return result


def _decoded(
    items: list[Item],
    out_dir: Path,
    model: Model,
    options: InferOptions,
    result: InferResult,
    progress: _Progress,
) -> Iterator[_Image]:
    for item in items:
        target = output_path(out_dir, item, options.format)
        if options.skip_existing and target.exists():
            result.skipped.append(item.path)
            progress.step(item, "skipped (exists)")
            continue
        try:
            pixels = read_image(item.path, 4, max_megapixels=options.max_megapixels)
            color, alpha, gray = prepare(pixels, model.channels, options.alpha)
        except (DataError, OSError, ValueError) as exc:
            _failed(item, _read_failure(exc), result, progress)
            continue
        deep = pixels.dtype != np.uint8
        bits = 16 if options.bits == "16" or (options.bits == "auto" and deep) else 8
        if target.suffix.lower() not in SIXTEEN_BIT:
            bits = 8
        yield _Image(item, target, color, alpha, gray, bits)


def _read_failure(exc: BaseException) -> str:
    """The data side's message without its advice for training (``on_bad_image``, the
    data section's ``max_megapixels``), which infer replaces with its own."""
    text = str(exc)
    if "may be a decompression bomb" in text:
        return (
            text.split("; it may be")[0] + "; pass --max-megapixels N for a real image this large"
        )
    return text.split("; fix or remove the file")[0]


def _groups(images: Iterator[_Image], options: InferOptions) -> Iterator[list[_Image]]:
    """Consecutive images of one size, up to ``batch`` at a time."""
    group: list[_Image] = []
    for image in images:
        if group and (len(group) == options.batch or image.color.shape != group[0].color.shape):
            yield group
            group = []
        group.append(image)
    if group:
        yield group


def _run_group(
    group: list[_Image],
    runner: Runner,
    model: Model,
    options: InferOptions,
    writer: _Writer,
    result: InferResult,
    progress: _Progress,
) -> None:
    try:
        ys = runner(torch.stack([g.color for g in group]))
        alphas = _alphas(group, ys.shape[-2:], runner, model, options)
    except (RuntimeError, ValueError) as exc:
        if len(group) > 1:  # find the one that fails; the others still run
            for image in group:
                _run_group([image], runner, model, options, writer, result, progress)
            return
        _failed(group[0].item, _short(exc), result, progress)
        return
    for image, y, alpha in zip(group, ys, alphas, strict=True):
        writer.submit(image, y, alpha)


class _Writer:
    """Encodes and writes results on a thread while the network runs the next image
    (PNG compression of a large result takes as long as a fast GPU's forward); at most
    :data:`PENDING` results wait, so memory stays bounded. Results finish in order."""

    def __init__(self, result: InferResult, progress: _Progress, quality: int) -> None:
        self.result, self.progress, self.quality = result, progress, quality
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="loom-infer-write")
        self.pending: deque[tuple[_Image, Future[None]]] = deque()

    def submit(self, image: _Image, y: torch.Tensor, alpha: torch.Tensor | None) -> None:
        self.pending.append((image, self.pool.submit(self._write, image, y, alpha)))
        while len(self.pending) > PENDING:
            self._finish(*self.pending.popleft())
        while self.pending and self.pending[0][1].done():
            self._finish(*self.pending.popleft())

    def _write(self, image: _Image, y: torch.Tensor, alpha: torch.Tensor | None) -> None:
        write_image(image.target, finish(y, alpha, image.gray, image.bits), quality=self.quality)

    def _finish(self, image: _Image, future: Future[None]) -> None:
        try:
            future.result()
        except (OSError, ValueError) as exc:
            _failed(image.item, f"cannot write {image.target}: {exc}", self.result, self.progress)
            return
        self.result.done.append(image.target)
        self.progress.step(image.item, str(image.target))

    def close(self) -> None:
        while self.pending:
            self._finish(*self.pending.popleft())
        self.pool.shutdown()


def _alphas(
    group: list[_Image],
    size: torch.Size,
    runner: Runner,
    model: Model,
    options: InferOptions,
) -> list[torch.Tensor | None]:
    """Each image's alpha at the output size (None where it has none)."""
    out: list[torch.Tensor | None] = [None] * len(group)
    having = [i for i, g in enumerate(group) if g.alpha is not None]
    if not having:
        return out
    stacked = torch.stack([group[i].alpha for i in having])[:, None]  # type: ignore[misc]
    if options.alpha == "network":
        processed = runner(stacked.expand(-1, model.channels, -1, -1)).mean(1)
    elif stacked.shape[-2:] == size:
        processed = stacked[:, 0]
    else:
        resized = F.interpolate(stacked, size=tuple(size), mode="bicubic", align_corners=False)
        processed = resized[:, 0]
    for k, i in enumerate(having):
        out[i] = processed[k]
    return out


def _failed(item: Item, why: str, result: InferResult, progress: _Progress) -> None:
    result.failed.append((item.path, why))
    progress.step(item, f"FAILED: {why}", failed=True)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class _Progress:
    """A live bar (images/s, ETA) on a terminal; one plain line per image otherwise."""

    def __init__(self, total: int, live: bool | None, log: Callable[[str], None]) -> None:
        self.total, self.log, self.count = total, log, 0
        self.live = sys.stderr.isatty() if live is None else live
        self.started = time.perf_counter()
        self.bar: Any = None

    def __enter__(self) -> _Progress:
        if self.live:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn("[bold]infer"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
            )
            self.bar.start()
            self.task = self.bar.add_task("infer", total=self.total, rate="")
        return self

    def step(self, item: Item, what: str, *, failed: bool = False) -> None:
        self.count += 1
        rate = self.count / max(time.perf_counter() - self.started, 1e-9)
        if self.bar is not None:
            self.bar.update(self.task, advance=1, rate=f"{rate:.2f} images/s")
            if failed:
                self.bar.console.print(f"[red]{item.path}: {what}[/]")
        else:
            self.log(f"[{self.count}/{self.total}] {item.path} -> {what} ({rate:.2f} images/s)")

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

"""``infer`` for video super-resolution: every frame of a sequence with its window.

A network whose input is a window of T frames (N×T×C×H×W, trained on a ``frames``
dataset's ``data.lr``) predicts the window's centre frame. Each sub-folder of the
input is one sequence, its frames in natural name order (``f2`` before ``f10``).
Frame i runs with frames i − T//2 … i + T//2; past the ends the sequence is mirrored
without repeating its edge frame, as reflection padding does (frames −1, −2 are
frames 1, 2; frames n, n + 1 are n − 2, n − 3). Every input frame gives one output
frame with the same relative path (the suffix that of ``--format``).

Windows go through the same :class:`~engine.apply.infer.Runner` as images, so
``--tile`` (every frame of a window cut at the same place), ``--precision``,
``--device``, ``--batch`` (consecutive windows of a sequence) and the out-of-memory
retries work alike. Each frame is decoded once and dropped when no later window needs
it, so at most T + batch − 1 frames are held. Alpha is dropped; a gray frame is
written gray, as ``infer`` writes gray images.

A sequence shorter than the window, or whose frames differ in size, fails as a whole
(each of its frames listed as failed, with the reason); a frame that cannot be decoded
fails the frames of its sequence not yet written; the other sequences go on.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.apply.images import SIXTEEN_BIT, Item, output_path, sequences
from engine.apply.infer import (
    InferOptions,
    InferResult,
    Runner,
    _failed,
    _Image,
    _Progress,
    _read_failure,
    _short,
    _Writer,
    prepare,
)
from engine.apply.source import ApplyError, Model
from engine.data.errors import DataError
from engine.data.imageio import probe, read_image

__all__ = ["super_resolve_sequences", "window_of"]


def window_of(index: int, count: int, frames: int) -> list[int]:
    """The indices of the ``frames``-long window centred on frame ``index`` of a
    sequence of ``count`` (at least ``frames``) frames, reflected at the ends."""
    half = frames // 2
    return [_reflect(j, count) for j in range(index - half, index + half + 1)]


def _reflect(j: int, count: int) -> int:
    if j < 0:
        return -j
    if j >= count:
        return 2 * (count - 1) - j
    return j


@dataclass
class _Frame:
    color: torch.Tensor  # the network's input channels, C×H×W in [0, 1]
    gray: bool
    bits: int  # 8 or 16: the output's


@dataclass
class _Sequence:
    """One sequence being run: its frames, where each result goes, decoded frames."""

    items: list[Item]
    targets: list[Path]
    frames: int  # the window length
    cache: dict[int, _Frame]

    def window(self, index: int) -> list[int]:
        return window_of(index, len(self.items), self.frames)


def super_resolve_sequences(
    model: Model,
    items: list[Item],
    out_dir: Path,
    options: InferOptions,
    *,
    log: Callable[[str], None] | None = None,
) -> InferResult:
    """Run the window network ``model`` on every frame of every sequence of ``items``;
    results under ``out_dir``. Failures are recorded (and logged), never raised."""
    if model.frames is None:
        raise ApplyError(f"network '{model.net}' takes single images, not windows of frames")
    if options.channels_last:
        raise ApplyError(
            "--channels-last applies to networks of images; a network of frame windows "
            "(N×T×C×H×W inputs) runs in the default memory format"
        )
    say = log or (lambda text: print(text, file=sys.stderr, flush=True))
    runner = Runner(model, options, say)
    result = InferResult()
    started = time.perf_counter()
    with _Progress(len(items), options.progress, say) as progress:
        writer = _Writer(result, progress, options.quality)
        try:
            for seq in sequences(items):
                _run_sequence(
                    seq, model, model.frames, runner, out_dir, options, writer, result, progress
                )
        finally:
            writer.close()
    result.seconds = time.perf_counter() - started
    result.tile = runner.tile
    return result


def _run_sequence(
    items: list[Item],
    model: Model,
    frames: int,
    runner: Runner,
    out_dir: Path,
    options: InferOptions,
    writer: _Writer,
    result: InferResult,
    progress: _Progress,
) -> None:
    refused = _refusal(items, frames, options)
    if refused is not None:
        for item in items:
            _failed(item, refused, result, progress)
        return
    seq = _Sequence(items, [output_path(out_dir, i, options.format) for i in items], frames, {})
    todo = []
    for i, (item, target) in enumerate(zip(items, seq.targets, strict=True)):
        if options.skip_existing and target.exists():
            result.skipped.append(item.path)
            progress.step(item, "skipped (exists)")
        else:
            todo.append(i)
    for start in range(0, len(todo), options.batch):
        group = todo[start : start + options.batch]
        # Windows never reach further back than half a window: older frames are done.
        for j in [j for j in seq.cache if j < group[0] - frames // 2]:
            del seq.cache[j]
        try:
            for j in sorted({j for i in group for j in seq.window(i)} - seq.cache.keys()):
                seq.cache[j] = _decode(items[j], seq.targets[j], model, options)
        except (DataError, OSError, ValueError) as exc:
            why = _read_failure(exc)
            for i in todo[start:]:
                _failed(items[i], why, result, progress)
            return
        _run_group(seq, group, runner, writer, result, progress)


def _run_group(
    seq: _Sequence,
    group: list[int],
    runner: Runner,
    writer: _Writer,
    result: InferResult,
    progress: _Progress,
) -> None:
    """The windows of the frames in ``group`` together; when that fails, one by one, so
    that only the frames that fail are reported."""
    try:
        x = torch.stack([torch.stack([seq.cache[j].color for j in seq.window(i)]) for i in group])
        ys = runner(x)
    except (RuntimeError, ValueError) as exc:
        if len(group) > 1:
            for i in group:
                _run_group(seq, [i], runner, writer, result, progress)
            return
        _failed(seq.items[group[0]], _short(exc), result, progress)
        return
    for i, y in zip(group, ys, strict=True):
        frame = seq.cache[i]
        decoded = _Image(seq.items[i], seq.targets[i], frame.color, None, frame.gray, frame.bits)
        writer.submit(decoded, y, None)


def _refusal(items: list[Item], frames: int, options: InferOptions) -> str | None:
    """Why a sequence cannot run at all (too short, frames of several sizes, a header
    that cannot be read), or None. Only the headers are read."""
    folder = items[0].path.parent
    if len(items) < frames:
        return (
            f"{folder}: {len(items)} frame{'s' if len(items) != 1 else ''}, but the network "
            f"takes windows of {frames}; each folder of --input is one sequence and needs "
            f"at least {frames} frames"
        )
    first: tuple[Item, tuple[int, int]] | None = None
    for item in items:
        try:
            size = probe(item.path, max_megapixels=options.max_megapixels)
        except DataError as exc:
            return _read_failure(exc)
        if first is None:
            first = item, size
        elif size != first[1]:
            (w0, h0), (w, h) = first[1], size
            return (
                f"{item.path} is {w}×{h} pixels, but {first[0].path} is {w0}×{h0}: the frames "
                "of one sequence (folder) must have one size"
            )
    return None


def _decode(item: Item, target: Path, model: Model, options: InferOptions) -> _Frame:
    pixels = read_image(item.path, 4, max_megapixels=options.max_megapixels)
    color, _, gray = prepare(pixels, model.channels, "drop")
    deep = pixels.dtype != np.uint8
    bits = 16 if options.bits == "16" or (options.bits == "auto" and deep) else 8
    if target.suffix.lower() not in SIXTEEN_BIT:
        bits = 8
    return _Frame(color, gray, bits)

"""``infer`` for frame interpolation (RIFE): a folder of frames in, twice the frames out.

Not to be confused with ``interpolate`` (engine/apply/interpolate.py), which blends
the weights of two models. A network is a frame interpolator when the spec's training
graph calls it with ``data.f0`` and ``data.f1`` (an ``interp`` dataset): those inputs
take the earlier and the later frame. An input fed ``data.mid`` in training (RIFE's
privileged teacher) is given the mean of the two frames, which a student's output
never reads; a network with a ``teacher`` parameter is built without the teacher.

Each sub-folder of the input is one sequence, its frames in natural name order
(``f2`` before ``f10``; zero-padded names, as REDS and Vimeo-90K have, sort as the
data side reads clips). Every original frame is kept: sequence frame i is written as
frame 2i and the frame the network makes between i and i + 1 as 2i + 1, numbered
``00000000.png`` … so that a video encoder reads them in order. Frame sizes the
network cannot take are padded by replicating the border and cropped back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.apply.images import FORMATS, SIXTEEN_BIT, Item, sequences, write_image
from engine.apply.source import ApplyError, choose_network, is_run_folder, load_spec, newest_export
from engine.data.errors import DataError
from engine.data.imageio import read_image, to_tensor
from engine.load import Spec

__all__ = ["FrameInterpolator", "double_frame_rate", "frame_inputs", "open_interpolator"]


@dataclass
class FrameInterpolator:
    """A frame-interpolation network ready to run."""

    net: str
    module: nn.Module  # compiled, eval mode, weights loaded
    weights: Path | None
    earlier: str  # the input port of the first frame (data.f0 in training)
    later: str  # the input port of the second frame (data.f1)
    middle: str | None  # the input fed the true middle frame in training, if any
    port: str  # the output port written
    #: Frame sizes are padded to a multiple of this; None until a frame size is refused
    #: (probing every size costs seconds, and most videos fit as they are).
    multiple: int | None = None
    find_multiple: Callable[[], int] | None = None

    def pad_multiple(self) -> int:
        if self.multiple is None:
            self.multiple = self.find_multiple() if self.find_multiple else 1
        return self.multiple


def frame_inputs(spec: Spec, net: str) -> tuple[str, str, str | None] | None:
    """The inputs of ``net`` its training graph feeds ``data.f0``, ``data.f1`` and
    ``data.mid`` (None for one it does not), or None when no call feeds it both frames."""
    network = spec.networks.get(net)
    graph = spec.data.get("graph") or {}
    if network is None or not isinstance(graph, dict):
        return None
    ports = list(network.inputs)
    for node in graph.values():
        if not isinstance(node, dict) or node.get("call") != net:
            continue
        feeds = node.get("in")
        if isinstance(feeds, str):
            feeds = [feeds]
        if isinstance(feeds, list):
            feeds = dict(zip(ports, feeds, strict=False))
        if not isinstance(feeds, dict):
            continue
        by_data = {v: k for k, v in feeds.items() if isinstance(v, str)}
        if "data.f0" in by_data and "data.f1" in by_data:
            return by_data["data.f0"], by_data["data.f1"], by_data.get("data.mid")
    return None


def open_interpolator(
    source: str | Path,
    *,
    weights: str | Path | None = None,
    net: str | None = None,
    port: str | None = None,
    overrides: list[str] | None = None,
) -> FrameInterpolator | None:
    """The frame interpolator of ``source``, or None when its network is not one (then
    ``infer`` runs it on single images)."""
    from engine.compile.build import check_shapes, compile_network
    from engine.compile.sizes import size_rule
    from engine.compile.weights import WeightsError, load_weights
    from engine.spec.diagnostics import SpecError

    source = Path(source)
    overrides = list(overrides or [])
    spec = load_spec(source, overrides)
    name = choose_network(spec, net)
    roles = frame_inputs(spec, name)
    if roles is None:
        return None
    params = (spec.data.get("networks", {}).get(name) or {}).get("params") or {}
    if params.get("teacher") is True:  # RIFE's teacher needs the true frame: leave it out
        spec = load_spec(source, [*overrides, f"networks.{name}.params.teacher=false"])
    weights_path = Path(weights) if weights is not None else None
    if weights_path is None:
        if not is_run_folder(source):
            raise ApplyError(
                f"{source} is a spec: give the trained weights with --weights FILE, or a run "
                "folder instead of the spec"
            )
        weights_path = newest_export(source, name)
    try:
        shapes = check_shapes(spec, batch=1, probe="cpu")
    except SpecError as exc:
        raise ApplyError("\n".join(str(d) for d in exc.diagnostics.errors)) from None
    inference = shapes.networks[name]
    module = compile_network(inference)
    try:
        # The teacher's weights in a training export are not needed: only missing or
        # mis-shaped keys are refused.
        report = load_weights(module, weights_path, strict=False)
    except WeightsError as exc:
        raise ApplyError(str(exc)) from None
    if report.missing or report.mismatched:
        raise ApplyError(f"{report}\nThe weights do not fit network '{name}'.")
    module.eval()
    ports = list(module.output_ports)
    chosen = port or ports[0]
    if chosen not in ports:
        raise ApplyError(
            f"network '{name}' has no output port '{chosen}'; its outputs: {', '.join(ports)}"
        )
    earlier, later, middle = roles
    network = spec.networks[name]
    return FrameInterpolator(
        name,
        module,
        weights_path,
        earlier,
        later,
        middle,
        chosen,
        find_multiple=lambda: size_rule(network, inference).multiple or 1,
    )


@dataclass
class FrameRateResult:
    done: list[Path]
    failed: list[tuple[Path, str]]
    skipped: list[Path]
    seconds: float


def double_frame_rate(
    model: FrameInterpolator,
    items: list[Item],
    out_dir: Path,
    *,
    device: str | None = None,
    fmt: str = "png",
    quality: int = 95,
    log: Callable[[str], None] | None = None,
) -> FrameRateResult:
    """Write every sequence of ``items`` at twice its frame rate under ``out_dir``.

    A sequence whose frames cannot be read or differ in size fails as a whole (its
    frames are listed as failed); the other sequences go on.
    """
    if fmt not in FORMATS:
        raise ApplyError(f"frame interpolation writes {', '.join(FORMATS)}, not {fmt}")
    say = log or (lambda text: None)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    module = model.module.to(dev)
    result = FrameRateResult([], [], [], 0.0)
    started = time.perf_counter()
    for seq in sequences(items):
        folder = out_dir / seq[0].relative.parent
        try:
            frames = list(_read(seq))
        except (DataError, OSError, ValueError) as exc:
            result.failed.extend((i.path, str(exc).splitlines()[0]) for i in seq)
            say(f"{seq[0].path.parent}: FAILED: {exc}")
            continue
        bits = 16 if any(deep for _, deep in frames) and FORMATS[fmt] in SIXTEEN_BIT else 8
        for k, (frame, _) in enumerate(frames):
            result.done.append(_write(folder, 2 * k, frame, fmt, bits, quality))
            if k + 1 < len(frames):
                middle = _middle(model, module, frame, frames[k + 1][0], dev)
                result.done.append(_write(folder, 2 * k + 1, middle, fmt, bits, quality))
        say(f"{seq[0].path.parent}: {len(frames)} frames -> {2 * len(frames) - 1} in {folder}")
    result.seconds = time.perf_counter() - started
    return result


def _read(seq: list[Item]) -> Iterator[tuple[torch.Tensor, bool]]:
    size: tuple[int, ...] | None = None
    for item in seq:
        pixels = read_image(item.path, 3)
        frame = to_tensor(pixels)[:3]
        if size is not None and tuple(frame.shape) != size:
            raise ValueError(
                f"{item.path}: {frame.shape[2]}×{frame.shape[1]} pixels, but the sequence's "
                f"first frame is {size[2]}×{size[1]}; the frames of one folder must match"
            )
        size = tuple(frame.shape)
        yield frame, pixels.dtype != np.uint8


def _middle(
    model: FrameInterpolator,
    module: nn.Module,
    a: torch.Tensor,
    b: torch.Tensor,
    device: torch.device,
) -> torch.Tensor:
    if model.multiple is None:
        try:
            return _run(model, module, a, b, device, 1)
        except ValueError:  # the network's size guard: pad to the size it takes
            pass
    return _run(model, module, a, b, device, model.pad_multiple())


def _run(
    model: FrameInterpolator,
    module: nn.Module,
    a: torch.Tensor,
    b: torch.Tensor,
    device: torch.device,
    m: int,
) -> torch.Tensor:
    h, w = a.shape[-2:]
    pad = (0, -w % m, 0, -h % m)
    x0 = F.pad(a[None].to(device), pad, mode="replicate")
    x1 = F.pad(b[None].to(device), pad, mode="replicate")
    feeds: dict[str, Any] = {model.earlier: x0, model.later: x1}
    if model.middle is not None:
        feeds[model.middle] = (x0 + x1) / 2  # never read by the student
    with torch.inference_mode():
        out = module(**feeds)
    y: torch.Tensor = out[model.port] if isinstance(out, dict) else out
    return y[0, :, :h, :w].float().clamp(0, 1).cpu()


def _write(
    folder: Path, index: int, frame: torch.Tensor, fmt: str, bits: int, quality: int
) -> Path:
    path = folder / f"{index:08d}{FORMATS[fmt]}"
    top = 65535 if bits == 16 else 255
    values = (frame.permute(1, 2, 0).numpy() * top).round()
    write_image(path, values.astype(np.uint16 if bits == 16 else np.uint8), quality=quality)
    return path

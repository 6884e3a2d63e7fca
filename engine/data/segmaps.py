"""Segmentation probability maps (SFTGAN's condition): reading, checking, normalizing.

A map holds, for every pixel of its HR image, the probability of each of ``classes``
categories. Files are ``.npy`` arrays (C x H x W or H x W x C) or ``.pt``/``.pth``
tensors (C x H x W, or 1 x C x H x W as SFTGAN's segmentation script saved them),
matched to HR images by stem; SFTGAN's ``NAME_bic.pth`` names match ``NAME``.

``probe_seg`` reads only a file's header (``.npy``) or memory-maps it (``.pt``), so
sizes are checked before training; the values are checked when a map is read:
NaN, infinite or negative values are an error, and so are channel sums more than
:data:`SUM_TOLERANCE` from 1; what remains is divided by its sum, so every pixel's
channels sum to exactly 1 (float16 storage and rounding do not matter).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from engine.data.errors import DataError

SEG_EXTENSIONS: tuple[str, ...] = (".npy", ".pt", ".pth")
#: How far a pixel's channel sum may be from 1 before the map is refused.
SUM_TOLERANCE = 0.01
#: SFTGAN's segmentation script names the map of ``0001.png`` ``0001_bic.pth``.
_SUFFIX = re.compile(r"_bic$")


def seg_stem(stem: str) -> str:
    """A map file's stem as the HR image's: ``0001_bic`` → ``0001``."""
    return _SUFFIX.sub("", stem)


def _bad(path: Path, why: str) -> DataError:
    return DataError(
        f"corrupt probability map '{path}' ({why}); fix or remove the file, or set "
        "on_bad_image: skip to skip such files"
    )


def _load(path: Path, *, header_only: bool) -> Any:
    """The array in ``path`` (numpy, or a torch tensor when ``header_only``); with
    ``header_only`` the data may be memory-mapped rather than read."""
    try:
        if path.stat().st_size == 0:
            raise _bad(path, "empty file, 0 bytes")
        if path.suffix.lower() == ".npy":
            with path.open("rb") as f:
                if f.read(6) != b"\x93NUMPY":
                    raise _bad(path, "not a .npy file: no NUMPY header")
            return np.load(path, mmap_mode="r" if header_only else None, allow_pickle=False)
        value = _load_tensor(path, header_only=header_only)
    except DataError:
        raise
    except Exception as exc:  # numpy and torch raise many kinds for damaged files
        what = "a .npy array" if path.suffix.lower() == ".npy" else "a torch.save file"
        detail = str(exc).split("\n", 1)[0][:160]
        raise _bad(path, f"not readable as {what}: {type(exc).__name__} {detail}".strip()) from None
    if header_only:
        return value
    value = value.detach()
    return (value.float() if value.is_floating_point() else value).numpy()


def _load_tensor(path: Path, *, header_only: bool) -> Any:
    import torch

    try:
        value = torch.load(path, map_location="cpu", weights_only=True, mmap=header_only)
    except RuntimeError:
        if not header_only:
            raise
        # an old (pre-zipfile) torch.save cannot be memory-mapped: read it all
        value = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(value, torch.Tensor):
        raise _bad(path, f"it holds a {type(value).__name__}, not a tensor")
    return value


def _layout(path: Path, shape: tuple[int, ...], classes: int) -> bool:
    """True when ``shape`` is channels-first; raises DataError when it is no map of
    ``classes`` channels."""
    if len(shape) == 4 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) == 3 and shape[0] == classes:
        return True
    if len(shape) == 3 and shape[2] == classes:
        return False
    raise DataError(
        f"probability map '{path}' has shape {tuple(shape)}, but a map of seg_classes "
        f"{classes} is {classes} x H x W or H x W x {classes}; check the file, or set "
        "seg_classes to its number of classes"
    )


def probe_seg(path: Path, classes: int) -> tuple[int, int]:
    """(width, height) of the map in ``path``, from its header; raises DataError."""
    array = _load(path, header_only=True)
    shape = tuple(array.shape)
    first = _layout(path, shape, classes)
    height, width = shape[-2:] if first else shape[-3:-1]
    return width, height


def read_seg(path: Path, classes: int) -> np.ndarray:
    """The map in ``path`` as H x W x ``classes`` float32, each pixel summing to 1."""
    array = _load(path, header_only=False)
    first = _layout(path, tuple(array.shape), classes)
    if array.ndim == 4:
        array = array[0]
    if array.dtype.kind not in "fiu":
        raise DataError(f"probability map '{path}' holds {array.dtype} values, not numbers")
    values = np.asarray(array, np.float32)
    values = np.ascontiguousarray(values.transpose(1, 2, 0) if first else values)
    if not np.isfinite(values).all():
        raise DataError(
            f"probability map '{path}' contains NaN or infinite values; "
            "remake the map, or remove it (on_bad_image: skip skips such maps)"
        )
    low = float(values.min())
    if low < 0:
        raise DataError(
            f"probability map '{path}' has negative values (down to {low:.3g}): maps must "
            "hold probabilities, e.g. a softmax over the classes, not raw scores"
        )
    sums = values.sum(axis=2, keepdims=True)
    if np.abs(sums - 1).max() > SUM_TOLERANCE:
        raise DataError(
            f"probability map '{path}' does not sum to 1 over its {classes} channels (sums "
            f"from {float(sums.min()):.3g} to {float(sums.max()):.3g}): maps must hold "
            "per-pixel probabilities, e.g. a softmax over the classes"
        )
    probabilities: np.ndarray = values / sums
    return probabilities

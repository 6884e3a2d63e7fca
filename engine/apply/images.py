"""Image files in and out of ``infer``: what to read, and how results are written.

Inputs are a file, a folder (searched recursively; each result keeps its path relative
to the folder) or a glob (relative to the part before the first wildcard). Files are
read by the data side's reader (:mod:`engine.data.imageio`: every format it reads, 8
and 16 bit, EXIF orientation applied).

Outputs: PNG by default; ``jpg``, ``webp``, ``bmp``, ``tif`` on request, or ``same``
(the input's own format). 16-bit results are written as PNG or TIFF; Pillow writes no
16-bit colour PNG, so :func:`write_png16` encodes one itself (filter 0, zlib).
"""

from __future__ import annotations

import glob
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.data.imageio import EXTENSIONS

#: Output formats by name → file suffix.
FORMATS = {"png": ".png", "jpg": ".jpg", "webp": ".webp", "bmp": ".bmp", "tif": ".tif"}
SIXTEEN_BIT = (".png", ".tif", ".tiff")
_WILDCARDS = set("*?[")
_DIGITS = re.compile(r"(\d+)")


@dataclass(frozen=True)
class Item:
    """One input image and where its result goes, relative to the output folder."""

    path: Path
    relative: Path


class InputError(Exception):
    """The --input names nothing that can be read."""


def list_inputs(spec: str, *, exclude: Path | None = None) -> list[Item]:
    """The images ``spec`` names, sorted by their relative path; none from inside
    ``exclude`` (the output folder, when it lies in the input folder: a second run
    must not take the first one's results as inputs)."""
    items = _list(spec)
    if exclude is not None:
        items = [i for i in items if not i.path.resolve().is_relative_to(exclude.resolve())]
        if not items:
            raise InputError(f"--input {spec}: every image found is inside --output {exclude}")
    return items


def _list(spec: str) -> list[Item]:
    if any(c in _WILDCARDS for c in spec):
        parts = Path(spec).parts
        fixed = next(i for i, p in enumerate(parts) if any(c in _WILDCARDS for c in p))
        root = Path(*parts[:fixed]) if fixed else Path(".")
        paths = [Path(p) for p in glob.glob(spec, recursive=True)]
        items = [Item(p, p.relative_to(root)) for p in paths if _is_image(p)]
        if not items:
            raise InputError(f"--input {spec}: the pattern matches no image file")
        return sorted(items, key=lambda i: str(i.relative))
    path = Path(spec)
    if path.is_file():
        return [Item(path, Path(path.name))]
    if path.is_dir():
        items = [Item(p, p.relative_to(path)) for p in path.rglob("*") if _is_image(p)]
        if not items:
            raise InputError(
                f"--input {spec}: the folder holds no image file ({', '.join(EXTENSIONS)})"
            )
        return sorted(items, key=lambda i: str(i.relative))
    raise InputError(f"--input {spec}: no such file or folder")


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in EXTENSIONS


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key putting ``frame2`` before ``frame10``: runs of digits compare as numbers."""
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in _DIGITS.split(name))


def sequences(items: list[Item]) -> list[list[Item]]:
    """The items grouped by folder (one sequence of frames each), in folder order, each
    in natural name order (:func:`natural_key`)."""
    groups: dict[Path, list[Item]] = {}
    for item in items:
        groups.setdefault(item.relative.parent, []).append(item)
    return [sorted(g, key=lambda i: natural_key(i.path.name)) for _, g in sorted(groups.items())]


def output_path(out_dir: Path, item: Item, fmt: str) -> Path:
    """Where ``item``'s result is written: its relative path, with the format's suffix."""
    suffix = item.path.suffix.lower() if fmt == "same" else FORMATS[fmt]
    return out_dir / item.relative.with_suffix(suffix)


def write_image(path: Path, pixels: np.ndarray, *, quality: int = 95) -> None:
    """Write HxWxC uint8 or uint16 pixels (C = 1, 2, 3 or 4), creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if pixels.dtype == np.uint16:
        if suffix == ".png":
            write_png16(path, pixels)
            return
        if suffix in (".tif", ".tiff"):
            import tifffile

            photometric = "minisblack" if pixels.shape[2] <= 2 else "rgb"
            extra = ["unassalpha"] if pixels.shape[2] in (2, 4) else None
            data = pixels[:, :, 0] if pixels.shape[2] == 1 else pixels
            tifffile.imwrite(path, data, photometric=photometric, extrasamples=extra)
            return
        raise ValueError(f"{path}: 16-bit output needs PNG or TIFF, not {suffix}")
    from PIL import Image

    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[pixels.shape[2]]
    image = Image.fromarray(pixels[:, :, 0] if mode == "L" else pixels, mode)
    if suffix in (".jpg", ".jpeg") and mode in ("LA", "RGBA"):
        image = image.convert("L" if mode == "LA" else "RGB")  # JPEG has no alpha
    if suffix in (".jpg", ".jpeg", ".webp"):
        image.save(path, quality=quality)
    else:
        image.save(path)


def write_png16(path: Path, pixels: np.ndarray) -> None:
    """A 16-bit PNG (gray, gray+alpha, RGB or RGBA) from HxWxC uint16 pixels."""
    height, width, channels = pixels.shape
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    rows = np.ascontiguousarray(pixels.astype(">u2")).reshape(height, width * channels)
    filtered = np.concatenate([np.zeros((height, 1), np.uint8), rows.view(np.uint8)], axis=1)
    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    with path.open("wb") as out:
        out.write(b"\x89PNG\r\n\x1a\n")
        for kind, data in (
            (b"IHDR", header),
            (b"IDAT", zlib.compress(filtered.tobytes(), 6)),
            (b"IEND", b""),
        ):
            out.write(struct.pack(">I", len(data)) + kind + data)
            out.write(struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

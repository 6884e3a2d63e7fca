"""Reading image files into arrays: formats, bit depths, channels, EXIF orientation.

``read_image`` returns an HxWxC array in the file's own precision (uint8 or uint16;
float32 for floating-point TIFFs) with the spec's channel count applied, rotated as
the EXIF orientation tag says; ``to_tensor`` makes it a float32 CxHxW tensor in
[0, 1]. Channel rules: gray → RGB repeats the gray value; RGB → gray is ITU-R BT.601
luma; alpha is composited on white when dropped and added as opaque when missing.
"""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError

from engine.data.errors import DataError
from engine.data.kinds import MAX_MEGAPIXELS
from engine.data.png import SIGNATURE, damaged_chunk, is_png16, read_png16

if TYPE_CHECKING:  # torch is imported where a tensor is made, not with this module
    import torch

#: File extensions read as images (lower case); other files in a folder are ignored.
EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
_TIFF = (".tif", ".tiff")
_ORIENTATION_TAG = 0x0112
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


# Pillow's own guard warns above 89 MP and refuses above 179 MP; Loom checks the size
# itself, against the dataset's max_megapixels, before asking Pillow to decode.
Image.MAX_IMAGE_PIXELS = None


def _bad(path: Path, why: str) -> DataError:
    return DataError(
        f"corrupt image '{path}' ({why}); fix or remove the file, or set on_bad_image: skip "
        "to skip such files"
    )


def _check_size(path: Path, width: int, height: int, max_megapixels: float) -> None:
    """Refuse an image whose header declares more pixels than ``max_megapixels``."""
    megapixels = width * height / 1e6
    if megapixels > max_megapixels:
        shown = f"{megapixels:,.0f}" if megapixels >= 10 else f"{megapixels:.2g}"
        raise DataError(
            f"image '{path}' declares {width}x{height} pixels ({shown} MP), more than "
            f"max_megapixels {max_megapixels:g}; it may be a decompression bomb. Remove the "
            f"file, or, for a real image this large, set max_megapixels: {math.ceil(megapixels)} "
            "in its data section (on_bad_image: skip skips such images)"
        )


def probe(path: Path, *, max_megapixels: float = MAX_MEGAPIXELS) -> tuple[int, int]:
    """(width, height) as the image will be read (after EXIF orientation), from its header;
    a DataError when the header declares more than ``max_megapixels``."""
    try:
        if path.stat().st_size == 0:
            raise _bad(path, "empty file, 0 bytes")
        with Image.open(path) as im:
            width, height = im.size
            _check_size(path, width, height, max_megapixels)
            orientation = _orientation(im)
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise _bad(path, _reason(exc)) from None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def read_image(path: Path, channels: int, *, max_megapixels: float = MAX_MEGAPIXELS) -> np.ndarray:
    """The pixels of ``path`` as HxWx``channels`` (uint8, uint16 or float32); the size
    in its header is checked against ``max_megapixels`` before anything is decoded."""
    try:
        if path.stat().st_size == 0:
            raise _bad(path, "empty file, 0 bytes")
        pixels, orientation = _decode(path, max_megapixels)
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        raise _bad(path, _reason(exc)) from None
    return convert_channels(orient(pixels, orientation), channels)


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """HxWxC uint8/uint16/float32 → float32 CxHxW in [0, 1]."""
    import torch

    scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(pixels.dtype)
    t = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))
    if scale is None:
        return t.float().clamp_(0, 1)
    return t.float().div_(scale)


def _decode(path: Path, max_megapixels: float) -> tuple[np.ndarray, int]:
    data = path.read_bytes()
    if data.startswith(SIGNATURE):
        damage = damaged_chunk(data)
        if damage:
            raise _bad(path, damage)
        if is_png16(data[:33]):
            with Image.open(io.BytesIO(data)) as im:
                _check_size(path, *im.size, max_megapixels)
                orientation = _orientation(im)
            return read_png16(data), orientation
    if path.suffix.lower() in _TIFF:
        tiff = _read_tiff(path, max_megapixels)
        if tiff is not None:
            return tiff
    with Image.open(io.BytesIO(data)) as im:
        _check_size(path, *im.size, max_megapixels)
        orientation = _orientation(im)
        im.load()
        return _pil_array(im), orientation


def _read_tiff(path: Path, max_megapixels: float) -> tuple[np.ndarray, int] | None:
    """TIFFs through tifffile (16-bit RGB, float); None to let Pillow try instead."""
    try:
        import tifffile
    except ImportError:  # pragma: no cover - scikit-image depends on tifffile
        return None
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            if not isinstance(page, tifffile.TiffPage):
                return None  # a frame, not a page: only with TiffFile(useframes=True)
            tag = page.tags.get("Orientation")
            _check_size(path, int(page.imagewidth), int(page.imagelength), max_megapixels)
            pixels = page.asarray()
            photometric = int(page.photometric)
    except DataError:
        raise
    except Exception:  # whatever tifffile cannot read, Pillow may
        return None
    if photometric == 3:  # palette: Pillow knows the colour map
        return None
    orientation = int(tag.value) if tag is not None else 1
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.ndim != 3:
        return None
    if pixels.dtype.kind == "f":
        return pixels.astype(np.float32), orientation
    if pixels.dtype == np.bool_:
        return pixels.astype(np.uint8) * 255, orientation
    if pixels.dtype.itemsize > 2:
        pixels = np.clip(pixels, 0, 65535)
        return pixels.astype(np.uint16), orientation
    return pixels.astype(pixels.dtype.newbyteorder("=")), orientation


def _pil_array(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        return np.asarray(im).astype(np.uint16)[:, :, None]
    if mode == "I":  # 16-bit gray PNG in some Pillow versions; 32-bit TIFF
        clipped: np.ndarray = np.clip(np.asarray(im), 0, 65535)
        return clipped.astype(np.uint16)[:, :, None]
    if mode == "F":
        return np.asarray(im, np.float32)[:, :, None]
    if mode not in ("L", "LA", "RGB", "RGBA"):
        has_alpha = "A" in mode or mode == "La" or "transparency" in im.info
        target = ("LA" if mode == "La" else "RGBA") if has_alpha else "RGB"
        with warnings.catch_warnings():  # palette transparency warns on convert
            warnings.simplefilter("ignore")
            im = im.convert("L" if mode == "1" else target)
    pixels = np.asarray(im)
    return pixels[:, :, None] if pixels.ndim == 2 else pixels


def _orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:  # a broken EXIF block must not hide the pixels
        return 1
    return int(value) if isinstance(value, int) and 1 <= value <= 8 else 1


def orient(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) so the image is upright, as viewers show it."""
    ops = {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
        8: lambda a: np.rot90(a, 1),
    }
    return np.ascontiguousarray(ops.get(orientation, ops[1])(pixels))


def convert_channels(pixels: np.ndarray, channels: int) -> np.ndarray:
    """HxWxC (C = 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA) → HxWx``channels``."""
    have = pixels.shape[2]
    if have == channels:
        return pixels
    color, alpha = pixels[:, :, : 1 if have <= 2 else 3], None
    if have in (2, 4):
        color, alpha = _on_white(color, pixels[:, :, -1:]), pixels[:, :, -1:]
    if channels == 1:
        return color if color.shape[2] == 1 else _luma(color)
    if color.shape[2] == 1:
        color = np.repeat(color, 3, axis=2)
    if channels == 3:
        return color
    if alpha is None:
        alpha = np.full_like(color[:, :, :1], _max_value(color.dtype))
    return np.concatenate([color, alpha], axis=2)


def _max_value(dtype: np.dtype) -> float:
    return float(np.iinfo(dtype).max) if dtype.kind in "ui" else 1.0


def _on_white(color: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    top = _max_value(color.dtype)
    a = alpha.astype(np.float32) / top
    mixed = color.astype(np.float32) * a + top * (1.0 - a)
    return _like(mixed, color.dtype)


def _luma(color: np.ndarray) -> np.ndarray:
    return _like((color.astype(np.float32) @ _LUMA)[:, :, None], color.dtype)


def _like(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if dtype.kind in "ui":
        rounded: np.ndarray = np.clip(np.rint(values), 0, np.iinfo(dtype).max)
        return rounded.astype(dtype)
    return values.astype(dtype)


def _reason(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, UnidentifiedImageError) or text.startswith("cannot identify"):
        return "cannot identify image file"
    if "truncated" in text.lower() or isinstance(exc, EOFError):
        return "truncated file"
    return text.split(" (", 1)[0] or type(exc).__name__

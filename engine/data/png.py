"""PNG specifics: chunk checksums, and a decoder for 16-bit files.

Pillow does not verify the checksums of a PNG's image data, so a damaged file can
decode to wrong pixels without a word; :func:`damaged_chunk` checks them. Pillow also
reads 16-bit colour PNGs at 8 bits per channel; :func:`read_png16` keeps all 16.

PNG stores each row filtered (None, Sub, Up, Average, Paeth); undoing Average and
Paeth needs the already-decoded left, upper and upper-left bytes. A byte at (row y,
column x) depends only on bytes with a smaller x + y, so the rows are decoded along
anti-diagonals: one vectorized numpy step per diagonal instead of one Python step
per byte. Interlaced (Adam7) files are not handled here.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # colour type → samples per pixel


def is_png16(head: bytes) -> bool:
    """True when ``head`` (the file's first 33 bytes) starts a non-interlaced 16-bit PNG."""
    if len(head) < 33 or not head.startswith(SIGNATURE) or head[12:16] != b"IHDR":
        return False
    depth, color, interlace = head[24], head[25], head[28]
    return depth == 16 and color in _CHANNELS and interlace == 0


def damaged_chunk(data: bytes) -> str | None:
    """Why the PNG ``data`` is damaged (a chunk's CRC or length is wrong), or None."""
    pos = len(SIGNATURE)
    while pos + 12 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        end = pos + 8 + length
        if end + 4 > len(data):
            return None  # truncated: the decoder says so
        (crc,) = struct.unpack(">I", data[end : end + 4])
        if zlib.crc32(data[pos + 4 : end]) & 0xFFFFFFFF != crc:
            kind = data[pos + 4 : pos + 8].decode("latin-1")
            return f"damaged data: checksum mismatch in {kind} chunk"
        if data[pos + 4 : pos + 8] == b"IEND":
            return None
        pos = end + 4
    return None


def read_png16(data: bytes) -> np.ndarray:
    """The image as uint16, HxWxC (C = 1, 2, 3 or 4); raises ValueError if corrupt.

    The caller checks the size the header declares first: this allocates all of it."""
    width, height = struct.unpack(">II", data[16:24])
    channels = _CHANNELS[data[25]]
    idat = bytearray()
    pos = len(SIGNATURE)
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        if kind == b"IDAT":
            idat += data[pos + 8 : pos + 8 + length]
        if kind == b"IEND":
            break
        pos += 12 + length
    stride = width * channels * 2
    needed = height * (stride + 1)
    try:
        # Never inflate more than the header's size needs: extra compressed data (a
        # zip bomb inside IDAT) is left undecoded. (A max_length of 0 means no limit.)
        raw = zlib.decompressobj().decompress(bytes(idat), max(needed, 1))
    except zlib.error as exc:
        raise ValueError(f"compressed data damaged ({exc})") from None
    if len(raw) < needed:
        raise ValueError("image data truncated")
    rows = np.frombuffer(raw, np.uint8, needed).reshape(height, stride + 1)
    pixels = unfilter(rows[:, 1:], rows[:, 0], bpp=channels * 2)
    return pixels.view(">u2").astype(np.uint16).reshape(height, width, channels)


def unfilter(filtered: np.ndarray, kinds: np.ndarray, *, bpp: int) -> np.ndarray:
    """Undo PNG row filters; ``filtered`` is HxS bytes, ``kinds`` the H filter types."""
    if np.any(kinds > 4):
        raise ValueError(f"unknown row filter type {int(kinds.max())}")
    height, stride = filtered.shape
    # Work on pixels of bpp bytes: byte lanes never interact across a filter.
    f = filtered.reshape(height, stride // bpp, bpp).astype(np.int32)
    width = f.shape[1]
    out = np.zeros((height + 1, width + 1, bpp), np.int32)  # padded: row 0 and column 0 are 0
    kind_of_row = np.asarray(kinds, np.int32)
    for diag in range(height + width - 1):
        ys = np.arange(max(0, diag - width + 1), min(height, diag + 1))
        xs = diag - ys
        a = out[ys + 1, xs]  # left
        b = out[ys, xs + 1]  # up
        c = out[ys, xs]  # up-left
        k = kind_of_row[ys][:, None]
        pa, pb, pc = np.abs(b - c), np.abs(a - c), np.abs(a + b - 2 * c)
        paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
        pred = np.select([k == 1, k == 2, k == 3, k == 4], [a, b, (a + b) // 2, paeth], 0)
        out[ys + 1, xs + 1] = (f[ys, xs] + pred) & 0xFF
    return out[1:, 1:].astype(np.uint8).reshape(height, stride)

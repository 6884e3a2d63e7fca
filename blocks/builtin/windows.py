"""Window attention's tables and masks, and a table lookup.

Swin-style attention (SwinIR, Swin2SR, HAT) splits an image into windows with
``rearrange`` and attends inside each window, which YAML writes from ``linear``,
``split``, ``matmul`` and ``softmax``. What it cannot write is what a Swin block
computes once from its window size: the relative position index (which entry of the
bias table each query/key pair reads) and the shifted-window mask (which pairs of a
rolled window came from different regions of the image). These blocks compute them,
and the index and the mask are tensor nodes, saved under the node's name as published
checkpoints carry them (``….attn.relative_position_index``, ``….attn_mask``).
"""

from __future__ import annotations

from typing import Annotated

import torch
from torch import nn

from blocks.builtin.tensors import TensorNode
from blocks.registry import Range, register

Positive = Annotated[int, Range(ge=1)]
NonNegative = Annotated[int, Range(ge=0)]
#: Masks one ``window_mask`` node keeps (one per image size, device and dtype seen).
_MASKS_KEPT = 8
#: What a masked attention score gets: exp(−100) is 0 in float32, and unlike −inf a
#: fully masked row cannot occur and half precision does not overflow (Swin's value).
MASKED = -100.0


def _pair(window: int | tuple[int, int]) -> tuple[int, int]:
    return (window, window) if isinstance(window, int) else (window[0], window[1])


def relative_position_index(window: tuple[int, int]) -> torch.Tensor:
    """(N, N) int64 for N = wh · ww tokens: the row of a (2wh − 1)(2ww − 1) table that
    the pair (query i, key j) reads, one row per relative offset (dy, dx)."""
    wh, ww = window
    ys, xs = torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()  # token order: row by row, as windows flatten
    dy = ys[:, None] - ys[None, :] + (wh - 1)  # 0 … 2wh − 2
    dx = xs[:, None] - xs[None, :] + (ww - 1)
    return dy * (2 * ww - 1) + dx


def shifted_window_mask(
    height: int,
    width: int,
    window: tuple[int, int],
    shift: tuple[int, int],
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """(windows, N, N): 0 where query and key of a window lie in the same region of the
    image rolled by −shift, ``MASKED`` where the roll brought them together from
    opposite borders. Windows in row-major order, as ``(b h w)`` partitions them."""
    wh, ww = window

    def regions(n: int, w: int, s: int) -> torch.Tensor:
        # Along one axis: the part untouched by the roll, the window's width before the
        # end, and the shift that wrapped around: regions 0, 1 and 2 (Swin's slices).
        p = torch.arange(n, device=device)
        return (p >= n - w).long() + (p >= n - s).long()

    label = regions(height, wh, shift[0])[:, None] * 3 + regions(width, ww, shift[1])[None, :]
    tokens = label.reshape(height // wh, wh, width // ww, ww).permute(0, 2, 1, 3)
    tokens = tokens.reshape(-1, wh * ww)
    differ = tokens[:, None, :] != tokens[:, :, None]
    return torch.zeros(differ.shape, device=device).masked_fill(differ, MASKED)


def _check_window(block: str, window: tuple[int, int], shift: tuple[int, int]) -> None:
    for s, w in zip(shift, window, strict=True):
        if not 0 <= s < w:
            raise ValueError(
                f"{block}: shift {list(shift)} must be at least 0 and smaller than the "
                f"window {list(window)} (Swin shifts by half a window)"
            )


@register("relative_position_index", inputs=(), trainable=False, grad=False)
class RelativePositionIndex(TensorNode):
    """The relative position index of a window, a saved int64 buffer of (N, N) for
    N = window² tokens: which row of a relative position bias table (one row per
    offset between two tokens, (2·window − 1)² rows) each query/key pair reads.

    Swin, SwinIR and HAT save it as ``….attn.relative_position_index``; name the node so
    and the key is theirs. ``lookup`` with the table gives the (N, N, heads) bias.

    Args:
        window: the window's size: one number, or [height, width].
    """

    def __init__(self, *, window: Positive | tuple[Positive, Positive]) -> None:
        super().__init__()
        self.register_buffer("value", relative_position_index(_pair(window)))


@register("window_mask_buffer", inputs=(), trainable=False, grad=False)
class WindowMaskBuffer(TensorNode):
    """The shifted-window attention mask of one image size, as a saved buffer.

    SwinIR's shifted blocks save the mask of their training size as ``attn_mask``
    (windows, N, N), and chaiNNer's loader reads that size back from its shape; a node
    of this block named ``attn_mask`` carries that key, and ``window_mask`` uses it at
    that size. An unshifted block (shift 0) has no mask: the node then holds an empty
    tensor that is not saved, so one block definition serves both kinds of Swin block.

    Args:
        window: the window's size: one number, or [height, width].
        shift: how far the block rolls the image: one number, or [height, width].
        size: the image size the mask is saved for: one number, or [height, width];
            each a multiple of the window.
    """

    def __init__(
        self,
        *,
        window: Positive | tuple[Positive, Positive],
        shift: NonNegative | tuple[NonNegative, NonNegative],
        size: Positive | tuple[Positive, Positive],
    ) -> None:
        super().__init__()
        win, sh, (h, w) = _pair(window), _pair(shift), _pair(size)
        _check_window("window_mask_buffer", win, sh)
        if h % win[0] or w % win[1]:
            raise ValueError(
                f"window_mask_buffer: size {[h, w]} is not a multiple of the window {list(win)}"
            )
        self.persistent = any(sh)
        mask = shifted_window_mask(h, w, win, sh) if self.persistent else torch.zeros(0)
        self.register_buffer("value", mask, persistent=self.persistent)


@register("window_mask", inputs=("x", "saved"), min_inputs=1, trainable=False, grad=False)
class WindowMask(nn.Module):
    """The shifted-window attention mask for the size of the input, at run time.

    x is the image (N, C, H, W) that is partitioned into windows after being rolled by
    −shift; the output is (windows, N, N) with 0 for pairs of tokens from one region of
    the image and −100 for pairs that the roll brought together, added to the attention
    scores of each window before the softmax. H and W must be multiples of the window
    (``pad_to_multiple`` first). With a second input ``saved`` (a ``window_mask_buffer``)
    an input of ``size`` gets the saved mask, as SwinIR does; other sizes get a mask
    computed once per size, device and dtype and kept.

    Args:
        window: the window's size: one number, or [height, width].
        shift: how far the image is rolled: one number, or [height, width].
        size: the image size the saved mask is for (with ``saved``).
    """

    def __init__(
        self,
        *,
        window: Positive | tuple[Positive, Positive],
        shift: NonNegative | tuple[NonNegative, NonNegative],
        size: Positive | tuple[Positive, Positive] | None = None,
    ) -> None:
        super().__init__()
        self.window, self.shift = _pair(window), _pair(shift)
        _check_window("window_mask", self.window, self.shift)
        self.size = None if size is None else _pair(size)
        self._masks: dict[tuple[int, int, torch.device, torch.dtype], torch.Tensor] = {}

    def forward(self, x: torch.Tensor, saved: torch.Tensor | None = None) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            # A symbolic trace would inline the mask's construction into the network and
            # rebuild it every call: refusing keeps this module (and its cache) called.
            raise TypeError("window_mask runs on tensors: it keeps its masks")
        h, w = int(x.shape[-2]), int(x.shape[-1])
        if h % self.window[0] or w % self.window[1]:  # shapes, not values
            raise ValueError(
                f"window_mask: an image of {h}×{w} does not split into windows of "
                f"{self.window[0]}×{self.window[1]}; pad it to a multiple first "
                "(pad_to_multiple)"
            )
        if saved is not None and (h, w) == self.size and saved.dim() == 3:
            return saved.to(x.dtype)
        key = (h, w, x.device, x.dtype)
        if key not in self._masks:
            if len(self._masks) >= _MASKS_KEPT:
                del self._masks[next(iter(self._masks))]
            mask = shifted_window_mask(h, w, self.window, self.shift, device=x.device)
            self._masks[key] = mask.to(x.dtype)
        return self._masks[key]

    def extra_repr(self) -> str:
        return f"window={list(self.window)}, shift={list(self.shift)}, size={self.size}"


@register("lookup", inputs=("table", "index"), trainable=False)
class Lookup(nn.Module):
    """Rows of a table picked by a tensor of indices of any shape: ``table[index]``,
    shaped ``index.shape + table.shape[1:]``.

    A relative position bias is the (rows, heads) table looked up by the (N, N)
    ``relative_position_index``: (N, N, heads), permuted to (heads, N, N) and added to
    the attention scores. Gradients reach the table (rows picked several times add up);
    the indices are whole numbers and carry none.
    """

    def __init__(self) -> None:
        super().__init__()

    def forward(self, table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return table[index.long()]

"""PAN's two community weight layouts, and how they map onto Loom's PAN.

Loom's ``PAN`` (``specs/lib/pan.yaml``) has the original PAN repository's key names,
so the ``pan`` layout is the network's own ``state_dict``. traiNNer's ``pan_net``
stores the same tensors under other names:

    original / Loom                    traiNNer
    SCPA_trunk.N.PAConv.k2 … k4        SCPA_trunk.N.PACnv.k2 … k4
    upconv{k}                          upsample.{5(k-1) + 1}
    att{k}.conv                        upsample.{5(k-1) + 2}.conv
    HRconv{k}                          upsample.{5(k-1) + 4}

for U-PA stage k = 1, 2, … Every other key (``conv_first``, the rest of the SC-PA
blocks, ``trunk_conv``, ``conv_last``) is the same in both. traiNNer builds each stage
as ``upsample, upconv, att, act, HRconv, act`` with one activation module used twice,
and flattens the stages into one ``nn.Sequential``: the repeated activation is kept
once, so each stage takes five indices. One stage (x2, x3) is not flattened and keeps
both activations; several (x4, x8) lose the one after ``HRconv``. Names cannot say
that, so a traiNNer checkpoint computes what it was trained to compute only in a
network built with ``variant: trainner`` (docs/pan.md).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping

import torch

StateDict = dict[str, torch.Tensor]

#: The keys that make a network (or a file in the ``pan`` layout) a PAN.
PAN_KEYS = ("conv_first.weight", "SCPA_trunk.0.PAConv.k2.weight", "trunk_conv.weight")
#: Where a U-PA stage's layers sit inside one traiNNer stage of five modules
#: (upsample 0, upconv 1, att 2, act 3, HRconv 4).
_OFFSETS = {"upconv": 1, "att": 2, "HRconv": 4}
_NAMES = {offset: name for name, offset in _OFFSETS.items()}
_STAGE_WIDTH = 5

_ORIGINAL_STAGE = re.compile(r"(upconv|att|HRconv)(\d+)")
_TRAINNER_STAGE = re.compile(r"upsample\.(\d+)")
_PACONV = re.compile(r"(SCPA_trunk\.\d+)\.PAConv(?=\.|$)")
_PACNV = re.compile(r"(SCPA_trunk\.\d+)\.PACnv(?=\.|$)")


class PanLayoutError(ValueError):
    """A state dict that is not a PAN in the layout it was asked for or read in."""


def is_pan(keys: Iterable[str]) -> bool:
    """Whether ``keys`` (a network's or a file's) are a PAN's in Loom's names."""
    have = set(keys)
    return all(k in have for k in PAN_KEYS)


def is_trainner(keys: Iterable[str]) -> bool:
    """Whether a file's keys are in traiNNer's names (its PA convs are ``PACnv``)."""
    return any(_PACNV.match(k) for k in keys)


def _rename(state: Mapping[str, torch.Tensor], rename: Callable[[str], str]) -> StateDict:
    out: StateDict = {}
    for key, value in state.items():
        module, _, param = key.rpartition(".")
        out[f"{rename(module)}.{param}" if module else key] = value
    return out


def to_trainner(state: Mapping[str, torch.Tensor]) -> StateDict:
    """Loom's (the original repository's) names → traiNNer's."""

    def rename(module: str) -> str:
        module = _PACONV.sub(r"\1.PACnv", module)
        head, _, rest = module.partition(".")
        if m := _ORIGINAL_STAGE.fullmatch(head):
            index = _STAGE_WIDTH * (int(m[2]) - 1) + _OFFSETS[m[1]]
            return f"upsample.{index}" + (f".{rest}" if rest else "")
        return module

    return _rename(state, rename)


def from_trainner(state: Mapping[str, torch.Tensor]) -> StateDict:
    """traiNNer's names → Loom's; an ``upsample`` index no stage has is an error."""

    def rename(module: str) -> str:
        module = _PACNV.sub(r"\1.PAConv", module)
        m = _TRAINNER_STAGE.match(module)
        if m is None:
            return module
        stage, offset = divmod(int(m[1]), _STAGE_WIDTH)
        if offset not in _NAMES:
            raise PanLayoutError(
                f"traiNNer PAN layout: '{module}' holds weights, but index {m[1]} of a "
                "stage (upsample, upconv, att, act, HRconv) is parameter-free; expected "
                "upsample.{5k+1}, upsample.{5k+2}.conv or upsample.{5k+4}"
            )
        return f"{_NAMES[offset]}{stage + 1}{module[m.end() :]}"

    return _rename(state, rename)


def to_layout(state: Mapping[str, torch.Tensor], layout: str) -> StateDict:
    """A PAN network's state dict written in ``layout`` (``pan`` or ``pan_trainner``).

    Refuses a network that is not a PAN, or that holds keys no PAN has (a network
    extended in YAML), since neither tool could load those.
    """
    missing = [k for k in PAN_KEYS if k not in state]
    if missing:
        raise PanLayoutError(
            f"layout '{layout}' is for a PAN, but the network has no "
            f"{', '.join(repr(k) for k in missing)}; export it with layout 'loom'"
        )
    foreign = [k for k in state if not _is_pan_key(k)]
    if foreign:
        raise PanLayoutError(
            f"layout '{layout}' holds only PAN's layers, but the network also has "
            f"{', '.join(foreign[:8])}; export it with layout 'loom'"
        )
    return to_trainner(state) if layout == "pan_trainner" else dict(state)


_PAN_KEY = re.compile(
    r"(conv_first|trunk_conv|conv_last|upconv\d+|HRconv\d+|att\d+\.conv"
    r"|SCPA_trunk\.\d+\.(conv1_a|conv1_b|k1\.0|conv3|PAConv\.k[234]))\.(weight|bias)"
)


def _is_pan_key(key: str) -> bool:
    return _PAN_KEY.fullmatch(key) is not None

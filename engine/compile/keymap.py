"""``pretrained.key_map``: renaming a weight file's keys before they are matched.

A file trained as another network (a PSNR-oriented SRResNet that initializes SFTGAN's
generator, a backbone reused in a new model) holds tensors the network can use under
other names. A key map says where they go, as data in the spec::

    key_map:
      conv_first: conv0                       # conv_first.weight → conv0.weight, .bias too
      body.*.conv1: sft_branch.*.conv0        # '*' is one name segment, carried over
      conv_hr: null                           # leave out

Each entry renames the keys whose leading segments match ``FROM`` (whole segments,
``*`` matching any one) by putting ``TO``'s segments in their place, the k-th ``*`` of
``TO`` taking what the k-th ``*`` of ``FROM`` matched; the rest of the key (``.weight``)
is kept. The first entry that matches a key, in the order written, renames it; keys
no entry matches keep their names. ``TO`` null leaves the key out. Two keys renamed to
one name, and an entry that matches no key of the file, are errors: the map was
written for this file, and a silent miss would load less than it says.

This module reads no tensors and imports no torch, so ``validate`` checks the map's
syntax (:func:`check_entry`) with the rest of the spec.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TypeVar

V = TypeVar("V")
KeyMap = Sequence[tuple[str, str | None]]

_SEGMENT = re.compile(r"[A-Za-z0-9_]+|\*")


class KeyMapError(ValueError):
    """A key map that is malformed, or that does not fit the file it is applied to."""


def check_entry(source: str, target: str | None) -> str | None:
    """What is wrong with one ``FROM: TO`` entry, or None when it is well formed."""
    for side, text in (("the key", source), ("its new name", target)):
        if text is None:
            continue
        bad = [s for s in text.split(".") if not _SEGMENT.fullmatch(s)]
        if bad:
            return (
                f"{side} '{text}' has the segment '{bad[0]}': write dotted names of "
                "letters, digits and _, with * for one whole segment"
            )
    if target is not None and source.split(".").count("*") != target.split(".").count("*"):
        return (
            f"'{source}' has {source.split('.').count('*')} '*' but '{target}' has "
            f"{target.split('.').count('*')}; each '*' of the new name takes what one "
            "'*' of the key matched"
        )
    return None


def _match(pattern: list[str], segments: list[str]) -> list[str] | None:
    """What the stars of ``pattern`` matched, if it matches the leading ``segments``."""
    if len(pattern) > len(segments):
        return None
    stars: list[str] = []
    for want, got in zip(pattern, segments, strict=False):
        if want == "*":
            stars.append(got)
        elif want != got:
            return None
    return stars


def _fill(target: str, stars: list[str]) -> list[str]:
    filled = iter(stars)
    return [next(filled) if s == "*" else s for s in target.split(".")]


def apply_key_map(state: Mapping[str, V], key_map: KeyMap) -> tuple[dict[str, V], int]:
    """``state`` with its keys renamed by ``key_map``, and how many keys were renamed
    (or left out); raises :class:`KeyMapError` as the module doc says."""
    entries = [(source.split("."), target) for source, target in key_map]
    used = [False] * len(entries)
    out: dict[str, V] = {}
    came_from: dict[str, str] = {}
    changed = 0
    for key, value in state.items():
        segments = key.split(".")
        new: str | None = key
        for i, (pattern, target) in enumerate(entries):
            stars = _match(pattern, segments)
            if stars is None:
                continue
            used[i] = True
            rest = segments[len(pattern) :]
            new = None if target is None else ".".join([*_fill(target, stars), *rest])
            changed += 1
            break
        if new is None:
            continue
        if new in out:
            raise KeyMapError(
                f"key_map: '{came_from[new]}' and '{key}' both become '{new}'; "
                "rename them to different keys"
            )
        out[new] = value
        came_from[new] = key
    unused = [source for (source, _), hit in zip(key_map, used, strict=True) if not hit]
    if unused:
        sample = ", ".join(list(state)[:4])
        raise KeyMapError(
            f"key_map: {', '.join(repr(u) for u in unused)} matches no key of the file "
            f"(its keys begin {sample}, …); fix the entry or remove it"
        )
    return out, changed

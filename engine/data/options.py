"""A dataset section of the spec, read once into typed settings (torch-free).

Everything below this module takes a :class:`DataOptions`, never the spec dict.
Checks that the JSON Schema cannot express (keys that a dataset type does not use,
crop sizes that do not divide by the scale, a resize mode without ``load_size``)
raise :class:`DataError` naming the option, its ``key`` set to that key of the section
so ``validate`` can point at it. :func:`folder_warnings` says which folders are not
there, without reading any file. What each type reads and provides is
:data:`engine.data.kinds.KINDS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from engine.data.errors import DataError
from engine.data.kinds import FOLDER_KEYS, KINDS, MAX_MEGAPIXELS, DatasetKind
from engine.data.paths import BUILTIN, find_file, find_folder, folder_label

#: A dataset type (one of :data:`engine.data.kinds.KINDS`; a test keeps them equal).
Kind = Literal["sr", "sr_seg", "paired", "unpaired", "single", "frames", "interp"]
ResizeMode = Literal["resize", "scale_width", "scale_shortside"]
CropMode = Literal["crop", "center_crop"]
#: A resize kernel (:data:`engine.data.kinds.KERNELS`; a test keeps them equal).
Kernel = Literal["nearest", "bilinear", "bicubic", "lanczos", "area"]

RESIZE_MODES: tuple[str, ...] = ("resize", "scale_width", "scale_shortside")
CROP_MODES: tuple[str, ...] = ("crop", "center_crop")
_T = TypeVar("_T")

#: Channels of a probability map by default: SFTGAN's 8 outdoor categories.
SEG_CLASSES = 8


@dataclass(frozen=True)
class Preprocess:
    """``resize_and_crop`` → resize='resize', crop='crop'; ``none`` → both None."""

    resize: ResizeMode | None = None
    crop: CropMode | None = None

    @classmethod
    def parse(cls, text: str, where: str) -> Preprocess:
        if text == "none":
            return cls()
        parts = text.split("_and_")
        resize = parts[0] if parts[0] in RESIZE_MODES else None
        rest = parts[1:] if resize else parts
        crop = rest[0] if len(rest) == 1 and rest[0] in CROP_MODES else None
        if (rest and crop is None) or (not resize and not crop):
            raise DataError(
                f"{where}.preprocess: unknown mode '{text}'; use none, a resize mode "
                f"({', '.join(RESIZE_MODES)}), a crop mode ({', '.join(CROP_MODES)}), "
                "or a resize and a crop mode joined with '_and_' (e.g. resize_and_crop)",
                key="preprocess",
            )
        return cls(resize, crop)  # type: ignore[arg-type]  # both checked against the modes

    def __str__(self) -> str:
        parts = [p for p in (self.resize, self.crop) if p]
        return "_and_".join(parts) or "none"


@dataclass(frozen=True)
class DataOptions:
    """One dataset section (``data.train`` or ``data.val``), checked and with defaults."""

    where: str
    kind: Kind
    folders: dict[str, tuple[str, ...]]
    weights: tuple[float, ...] | None = None
    preprocess: Preprocess = Preprocess()
    load_size: int | None = None
    crop_size: int | None = None  # of the target (HR) side
    flip: bool = False
    rotate: bool = False
    frames: int = 3  # interp: always 3 (f0, mid, f1)
    frame_skip: tuple[int, int] = (1, 1)
    reverse: bool = False
    channel_reverse: bool = False  # interp: RGB ↔ BGR of all three frames, half the time
    resize_kernel: Kernel = "bicubic"
    degradations: tuple[dict[str, Any], ...] = ()
    max_size: int | None = None
    subset: str | None = None
    on_bad_image: Literal["error", "skip"] = "error"
    max_megapixels: float = MAX_MEGAPIXELS  # larger images are refused from their header
    channels: int = 3
    seg_classes: int = SEG_CLASSES
    batch_size: int = 1  # per process
    workers: int = 0  # DataLoader worker processes per process

    @property
    def skip_bad(self) -> bool:
        return self.on_bad_image == "skip"


def parse_options(section: dict[str, Any], *, train: bool, scale: int) -> DataOptions:
    """Read ``section`` (already schema-checked) into :class:`DataOptions`.

    Raises a :class:`DataError` whose ``problems`` are every problem found, each with
    the ``key`` of ``section`` to change (None: the section as a whole). Settings that
    depend on each other (crop size, preprocess, load size; folders, weights) report
    only their first problem, not the ones that follow from it.
    """
    where = "data.train" if train else "data.val"
    type_name = section.get("type")
    kind = KINDS.get(type_name) if isinstance(type_name, str) else None
    if kind is None:
        raise DataError(
            f"{where}.type: unknown dataset type {section.get('type')!r}; use " + ", ".join(KINDS),
            key="type",
        )
    problems: list[DataError] = []

    def attempt(fallback: _T, read: Callable[..., _T], *args: Any) -> _T:
        try:
            return read(*args)
        except DataError as exc:
            problems.append(exc)
            return fallback

    folders = attempt(None, _folders, section, kind, where)
    weights = attempt(None, _weights, section, folders, where) if folders else None
    no_geometry: tuple[int | None, Preprocess, int | None] = (None, Preprocess(), None)
    crop, preprocess, load_size = attempt(
        no_geometry, _geometry, section, kind, scale, train, where
    )
    for check in (_check_degradations, _check_seg_classes, _check_frames):
        attempt(None, check, section, kind, where)
    if problems:
        raise DataError.gather(problems)
    assert folders is not None
    return DataOptions(
        where=where,
        kind=kind.name,  # type: ignore[arg-type]  # a KINDS name: a test keeps Kind equal
        folders=folders,
        weights=weights,
        preprocess=preprocess,
        load_size=load_size,
        crop_size=crop,
        flip=bool(section.get("flip", train)),
        rotate=bool(section.get("rotate", False)),
        frames=int(section.get("frames", 3)),
        frame_skip=_frame_skip(section.get("frame_skip", 1)),
        reverse=bool(section.get("reverse", False)),
        channel_reverse=bool(section.get("channel_reverse", False)),
        resize_kernel=section.get("resize_kernel", "bicubic"),
        degradations=tuple(section.get("degradations") or ()),
        max_size=section.get("max_size"),
        subset=section.get("subset"),
        on_bad_image=section.get("on_bad_image", "error"),
        max_megapixels=float(section.get("max_megapixels", MAX_MEGAPIXELS)),
        channels=int(section.get("channels", 3)),
        seg_classes=int(section.get("seg_classes", SEG_CLASSES)),
        batch_size=int(section.get("batch_size", 1)),
        workers=int(section.get("workers", 0)),
    )


def folder_warnings(options: DataOptions, spec_dir: Path | None) -> list[tuple[str | None, str]]:
    """``(key, message)`` for each folder (and ``subset`` file) of ``options`` that is
    not there; ``builtin:`` folders are made on first use, so they are never missing.

    What ``validate`` can say about the files without reading any: the dataset itself
    refuses such a section with the same words when the run starts.
    """
    where = options.where
    wanted = [
        (find_folder, value, folder_label(where, key, i, len(values)), key)
        for key, values in options.folders.items()
        for i, value in enumerate(values)
        if not value.startswith(BUILTIN)
    ]
    if options.subset:
        wanted.append((find_file, options.subset, f"{where}.subset", "subset"))
    found: list[tuple[str | None, str]] = []
    for find, value, label, key in wanted:
        try:
            find(value, spec_dir, label=label, key=key)
        except DataError as exc:
            found.append((exc.key, str(exc)))
    return found


def _folders(section: dict[str, Any], kind: DatasetKind, where: str) -> dict[str, tuple[str, ...]]:
    given = {k: section[k] for k in FOLDER_KEYS if k in section}
    for key in given:
        if key not in kind.folders:
            raise DataError(
                f"{where}.{key}: type '{kind.name}' does not read '{key}'; it reads "
                f"{', '.join(kind.folders)} (remove '{key}' or change type)",
                key=key,
            )
    if not kind.fits(set(given)):
        raise DataError(f"{where}: type '{kind.name}' needs {kind.needs}")
    return {k: tuple([v] if isinstance(v, str) else v) for k, v in given.items()}


def _crop_size(section: dict[str, Any], kind: DatasetKind, scale: int, where: str) -> int | None:
    # Positive integers or None (the schema check reports anything else).
    crop: int | None = section.get("crop_size")
    lr_crop: int | None = section.get("lr_crop_size")
    if not kind.scaled:
        if lr_crop is not None:
            raise DataError(
                f"{where}.lr_crop_size: type '{kind.name}' has no LR side; use crop_size",
                key="lr_crop_size",
            )
        return crop
    if lr_crop is not None:
        if crop is not None and crop != lr_crop * scale:
            raise DataError(
                f"{where}: crop_size {crop} (HR) and lr_crop_size {lr_crop} disagree at "
                f"scale {scale}: crop_size must be lr_crop_size x scale = {lr_crop * scale}; "
                "set only one of them",
                key="lr_crop_size",
            )
        return lr_crop * scale
    if crop is not None and crop % scale:
        raise DataError(
            f"{where}.crop_size {crop} (the HR crop) is not a multiple of the scale {scale}: "
            f"use {max(crop // scale, 1) * scale}, or give lr_crop_size instead",
            key="crop_size",
        )
    return crop


def _geometry(
    section: dict[str, Any], kind: DatasetKind, scale: int, train: bool, where: str
) -> tuple[int | None, Preprocess, int | None]:
    """The crop size (HR side), the preprocess mode and the load size, which depend on
    each other: the first problem among them."""
    crop = _crop_size(section, kind, scale, where)
    preprocess = _preprocess(section, train, crop, where)
    load_size = _load_size(section, kind, scale, preprocess, crop, where)
    if preprocess.crop and crop is None:
        raise DataError(f"{where}.preprocess '{preprocess}' crops: set crop_size", key="preprocess")
    return crop, preprocess, load_size


def _check_degradations(section: dict[str, Any], kind: DatasetKind, where: str) -> None:
    if section.get("degradations") and not kind.scaled:
        scaled = ", ".join(k.name for k in KINDS.values() if k.scaled)
        raise DataError(
            f"{where}.degradations: only types {scaled} degrade their input "
            f"(this is '{kind.name}'); remove degradations",
            key="degradations",
        )


def _check_seg_classes(section: dict[str, Any], kind: DatasetKind, where: str) -> None:
    if "seg_classes" in section and "seg" not in kind.folders:
        raise DataError(
            f"{where}.seg_classes: only type sr_seg reads probability maps (this is "
            f"'{kind.name}'); remove seg_classes",
            key="seg_classes",
        )


def _check_frames(section: dict[str, Any], kind: DatasetKind, where: str) -> None:
    frames = section.get("frames", 3)
    if kind.name == "frames" and isinstance(frames, int) and frames % 2 == 0:
        raise DataError(
            f"{where}.frames: a window has a centre frame, so frames must be odd (got "
            f"{frames}); use {frames - 1} or {frames + 1}",
            key="frames",
        )
    if kind.name == "interp" and section.get("frames", 3) != 3:
        raise DataError(
            f"{where}.frames: type interp always reads 3 frames (f0, mid, f1); remove frames, "
            "or use frame_skip to take the inputs further from the middle frame",
            key="frames",
        )
    if "channel_reverse" in section and kind.name != "interp":
        raise DataError(
            f"{where}.channel_reverse: only type interp reverses channels (this is "
            f"'{kind.name}'); remove channel_reverse",
            key="channel_reverse",
        )


def _preprocess(section: dict[str, Any], train: bool, crop: int | None, where: str) -> Preprocess:
    text = section.get("preprocess")
    if text is None:
        return Preprocess(crop="crop") if train and crop else Preprocess()
    mode = Preprocess.parse(text, where)
    if not train and mode.crop == "crop":
        return Preprocess(mode.resize, "center_crop")  # validation is deterministic
    return mode


def _load_size(
    section: dict[str, Any],
    kind: DatasetKind,
    scale: int,
    preprocess: Preprocess,
    crop: int | None,
    where: str,
) -> int | None:
    load_size: int | None = section.get("load_size")  # as crop_size
    if load_size is None:
        if preprocess.resize:
            raise DataError(
                f"{where}.preprocess '{preprocess}' resizes to load_size: set load_size",
                key="preprocess",
            )
        return None
    if preprocess.resize == "resize" and crop and load_size < crop:
        raise DataError(
            f"{where}.load_size {load_size} is smaller than crop_size {crop}: "
            "raise load_size or lower crop_size",
            key="load_size",
        )
    if kind.scaled and load_size % scale:
        raise DataError(
            f"{where}.load_size {load_size} is not a multiple of the scale {scale}: "
            f"use {load_size // scale * scale or scale}",
            key="load_size",
        )
    return load_size


def _weights(
    section: dict[str, Any], folders: dict[str, tuple[str, ...]], where: str
) -> tuple[float, ...] | None:
    weights = section.get("weights")
    if weights is None:
        return None
    counts = {k: len(v) for k, v in folders.items() if len(v) > 1}
    if not counts:
        raise DataError(
            f"{where}.weights: weights sample between several folders of one side, but every "
            "side has one folder; give a list of folders or remove weights",
            key="weights",
        )
    for key, n in counts.items():
        if n != len(weights):
            raise DataError(
                f"{where}.weights has {len(weights)} values but {where}.{key} lists {n} "
                "folders: give one weight per folder",
                key="weights",
            )
    return tuple(float(w) for w in weights)


def _frame_skip(value: int | list[int]) -> tuple[int, int]:
    """``2`` → (2, 2); ``[1, 3]`` → a skip drawn from 1..3 per training window."""
    if isinstance(value, int):
        return value, value
    return int(min(value)), int(max(value))

"""A dataset section of the spec, read once into typed settings (torch-free).

Everything below this module takes a :class:`DataOptions`, never the spec dict.
Checks that the JSON Schema cannot express (keys that a dataset type does not use,
crop sizes that do not divide by the scale, a resize mode without ``load_size``)
raise :class:`DataError` naming the option.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from engine.data.errors import DataError

Kind = Literal["sr", "sr_seg", "paired", "unpaired", "single", "frames", "interp"]
ResizeMode = Literal["resize", "scale_width", "scale_shortside"]
CropMode = Literal["crop", "center_crop"]
Kernel = Literal["nearest", "bilinear", "bicubic", "lanczos", "area"]

RESIZE_MODES: tuple[str, ...] = ("resize", "scale_width", "scale_shortside")
CROP_MODES: tuple[str, ...] = ("crop", "center_crop")

#: The folder keys each dataset type reads.
FOLDER_KEYS: dict[str, tuple[str, ...]] = {
    "sr": ("hr", "lr"),
    "sr_seg": ("hr", "lr", "seg"),
    "paired": ("A", "B", "folder"),
    "unpaired": ("A", "B"),
    "single": ("folder",),
    "frames": ("hr", "lr"),
    "interp": ("folder",),
}
_REQUIRED: dict[str, str] = {
    "sr": "hr",
    "sr_seg": "hr and seg",
    "unpaired": "A and B",
    "single": "folder",
    "frames": "hr",
    "interp": "folder",
    "paired": "A and B, or folder (side-by-side AB images)",
}
#: The types with an LR side at 1/scale of the target (HR) side.
SCALED_KINDS: tuple[str, ...] = ("sr", "sr_seg", "frames")
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
                "or a resize and a crop mode joined with '_and_' (e.g. resize_and_crop)"
            )
        return cls(resize, crop)  # type: ignore[arg-type]

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
    resize_kernel: Kernel = "bicubic"
    degradations: tuple[dict[str, Any], ...] = ()
    max_size: int | None = None
    subset: str | None = None
    on_bad_image: Literal["error", "skip"] = "error"
    channels: int = 3
    seg_classes: int = SEG_CLASSES

    @property
    def skip_bad(self) -> bool:
        return self.on_bad_image == "skip"


def parse_options(section: dict[str, Any], *, train: bool, scale: int) -> DataOptions:
    """Read ``section`` (already schema-checked) into :class:`DataOptions`."""
    where = "data.train" if train else "data.val"
    kind = section.get("type")
    if kind not in FOLDER_KEYS:
        raise DataError(
            f"{where}.type: unknown dataset type {kind!r}; use {', '.join(FOLDER_KEYS)}"
        )
    folders = _folders(section, kind, where)
    crop = _crop_size(section, kind, scale, where)
    preprocess = _preprocess(section, train, crop, where)
    load_size = section.get("load_size")
    if preprocess.resize and load_size is None:
        raise DataError(f"{where}.preprocess '{preprocess}' resizes to load_size: set load_size")
    if preprocess.crop and crop is None:
        raise DataError(f"{where}.preprocess '{preprocess}' crops: set crop_size")
    if preprocess.resize == "resize" and crop and load_size < crop:
        raise DataError(
            f"{where}.load_size {load_size} is smaller than crop_size {crop}: "
            "raise load_size or lower crop_size"
        )
    if load_size is not None and kind in SCALED_KINDS and load_size % scale:
        raise DataError(
            f"{where}.load_size {load_size} is not a multiple of the scale {scale}: "
            f"use {load_size // scale * scale or scale}"
        )
    degradations = tuple(section.get("degradations") or ())
    if degradations and kind not in SCALED_KINDS:
        raise DataError(
            f"{where}.degradations: only types {', '.join(SCALED_KINDS)} degrade their input "
            f"(this is '{kind}'); remove degradations"
        )
    if "seg_classes" in section and kind != "sr_seg":
        raise DataError(
            f"{where}.seg_classes: only type sr_seg reads probability maps (this is "
            f"'{kind}'); remove seg_classes"
        )
    if kind == "interp" and section.get("frames", 3) != 3:
        raise DataError(
            f"{where}.frames: type interp always reads 3 frames (f0, mid, f1); remove frames, "
            "or use frame_skip to take the inputs further from the middle frame"
        )
    return DataOptions(
        where=where,
        kind=kind,
        folders=folders,
        weights=_weights(section, folders, where),
        preprocess=preprocess,
        load_size=load_size,
        crop_size=crop,
        flip=bool(section.get("flip", train)),
        rotate=bool(section.get("rotate", False)),
        frames=int(section.get("frames", 3)),
        frame_skip=_frame_skip(section.get("frame_skip", 1)),
        reverse=bool(section.get("reverse", False)),
        resize_kernel=section.get("resize_kernel", "bicubic"),
        degradations=degradations,
        max_size=section.get("max_size"),
        subset=section.get("subset"),
        on_bad_image=section.get("on_bad_image", "error"),
        channels=int(section.get("channels", 3)),
        seg_classes=int(section.get("seg_classes", SEG_CLASSES)),
    )


def _folders(section: dict[str, Any], kind: str, where: str) -> dict[str, tuple[str, ...]]:
    allowed = FOLDER_KEYS[kind]
    given = {k: section[k] for k in ("hr", "lr", "seg", "A", "B", "folder") if k in section}
    for key in given:
        if key not in allowed:
            raise DataError(
                f"{where}.{key}: type '{kind}' does not read '{key}'; it reads "
                f"{', '.join(allowed)} (remove '{key}' or change type)"
            )
    folders = {k: tuple([v] if isinstance(v, str) else v) for k, v in given.items()}
    ok = {
        "sr": "hr" in folders,
        "sr_seg": {"hr", "seg"} <= set(folders),
        "frames": "hr" in folders,
        "single": "folder" in folders,
        "interp": "folder" in folders,
        "unpaired": {"A", "B"} <= set(folders),
        "paired": {"A", "B"} <= set(folders) or set(folders) == {"folder"},
    }[kind]
    if not ok or (kind == "paired" and "folder" in folders and len(folders) > 1):
        raise DataError(f"{where}: type '{kind}' needs {_REQUIRED[kind]}")
    return folders


def _crop_size(section: dict[str, Any], kind: str, scale: int, where: str) -> int | None:
    crop, lr_crop = section.get("crop_size"), section.get("lr_crop_size")
    if kind not in SCALED_KINDS:
        if lr_crop is not None:
            raise DataError(f"{where}.lr_crop_size: type '{kind}' has no LR side; use crop_size")
        return crop
    if lr_crop is not None:
        if crop is not None and crop != lr_crop * scale:
            raise DataError(
                f"{where}: crop_size {crop} (HR) and lr_crop_size {lr_crop} disagree at "
                f"scale {scale}: crop_size must be lr_crop_size x scale = {lr_crop * scale}; "
                "set only one of them"
            )
        return lr_crop * scale
    if crop is not None and crop % scale:
        raise DataError(
            f"{where}.crop_size {crop} (the HR crop) is not a multiple of the scale {scale}: "
            f"use {max(crop // scale, 1) * scale}, or give lr_crop_size instead"
        )
    return crop


def _preprocess(section: dict[str, Any], train: bool, crop: int | None, where: str) -> Preprocess:
    text = section.get("preprocess")
    if text is None:
        return Preprocess(crop="crop") if train and crop else Preprocess()
    mode = Preprocess.parse(text, where)
    if not train and mode.crop == "crop":
        return Preprocess(mode.resize, "center_crop")  # validation is deterministic
    return mode


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
            "side has one folder; give a list of folders or remove weights"
        )
    for key, n in counts.items():
        if n != len(weights):
            raise DataError(
                f"{where}.weights has {len(weights)} values but {where}.{key} lists {n} "
                "folders: give one weight per folder"
            )
    return tuple(float(w) for w in weights)


def _frame_skip(value: int | list[int]) -> tuple[int, int]:
    """``2`` → (2, 2); ``[1, 3]`` → a skip drawn from 1..3 per training window."""
    if isinstance(value, int):
        return value, value
    return int(min(value)), int(max(value))

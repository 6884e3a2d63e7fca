"""Folders of images: resolving a folder value, listing its images, matching by stem.

A folder value is ``builtin:NAME`` (made by :mod:`engine.data.builtin`), an absolute
path, or a path relative to the spec file's folder, then to the working directory
(:mod:`engine.data.paths`).
Folders are listed recursively in sorted order; a file's *stem* is its path relative
to the folder without the extension (``sub/0001``), which is what pairs match on.
Symbolic links are followed once per real folder and an image reached twice is listed
once, so a link loop (``loop -> .``) neither multiplies the images nor hangs the listing.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from engine.data.errors import DataError, DataWarning
from engine.data.imageio import EXTENSIONS
from engine.data.paths import BUILTIN, find_file, find_folder, folder_label
from engine.data.segmaps import SEG_EXTENSIONS


@dataclass(frozen=True)
class FileKind:
    """What a folder holds: images, or (for ``seg``) probability maps."""

    noun: str
    extensions: tuple[str, ...]

    def holds(self, path: Path) -> bool:
        return path.suffix.lower() in self.extensions and not path.name.startswith(".")


IMAGES = FileKind("images", EXTENSIONS)
SEG_MAPS = FileKind("probability maps", SEG_EXTENSIONS)


@dataclass(frozen=True)
class Folder:
    """One listed folder: where it came from (``data.train.hr[1]``) and its images."""

    label: str
    value: str
    path: Path
    files: tuple[Path, ...]

    def stem(self, file: Path) -> str:
        return file.relative_to(self.path).with_suffix("").as_posix()


@dataclass
class Side:
    """The images of one dataset key (``hr``, ``A``, …): one or more folders, concatenated."""

    key: str
    label: str
    folders: list[Folder]
    weights: tuple[float, ...] | None = None
    files: list[Path] = field(default_factory=list)
    stems: list[str] = field(default_factory=list)
    origin: list[int] = field(default_factory=list)  # the folder each file came from

    def __post_init__(self) -> None:
        self.refresh()

    def refresh(self) -> None:
        self.files, self.stems, self.origin = [], [], []
        for i, folder in enumerate(self.folders):
            self.files += folder.files
            self.stems += [folder.stem(f) for f in folder.files]
            self.origin += [i] * len(folder.files)

    def keep(self, wanted: Sequence[bool]) -> None:
        """Drop the files whose flag is False (bad images, unmatched, beyond max_size)."""
        drop = {f for f, ok in zip(self.files, wanted, strict=True) if not ok}
        self.folders = [
            Folder(d.label, d.value, d.path, tuple(f for f in d.files if f not in drop))
            for d in self.folders
        ]
        self.refresh()

    def __len__(self) -> int:
        return len(self.files)

    def by_stem(self) -> dict[str, Path]:
        seen: dict[str, Path] = {}
        for stem, file in zip(self.stems, self.files, strict=True):
            if stem in seen:
                raise DataError(
                    f"{self.label}: two files share the stem '{stem}' ('{seen[stem]}' and "
                    f"'{file}'); pairs are matched by stem, so rename one"
                )
            seen[stem] = file
        return seen


def resolve(value: str, label: str, spec_dir: Path | None, *, train: bool, key: str) -> Path:
    """The folder a spec value names; raises DataError naming the places looked in."""
    if value.startswith(BUILTIN):
        from engine.data.builtin import materialize

        return materialize(value[len(BUILTIN) :], train=train, label=label)
    return find_folder(value, spec_dir, label=label, key=key)


def list_images(path: Path, label: str, value: str, kind: FileKind = IMAGES) -> tuple[Path, ...]:
    """Every image (or other ``kind`` of file) under ``path``, recursively, sorted;
    hidden entries are skipped."""
    found: list[Path] = []
    others: list[str] = []
    for root, names in _walk(path, label, value):
        for name in names:
            file = root / name
            if kind.holds(file):
                found.append(file)
            elif not name.startswith("."):
                others.append(name)
    if not found:
        kinds = ", ".join(e.lstrip(".") for e in kind.extensions)
        extra = (
            f" (it holds {len(others)} other files, e.g. '{sorted(others)[0]}')" if others else ""
        )
        raise DataError(f"{label}: folder '{value}' has no {kind.noun} ({kinds}){extra}")
    return _once(sorted(found, key=lambda f: f.relative_to(path).as_posix()), label)


def _folder_id(path: Path) -> tuple[int, int]:
    info = os.stat(path)  # follows links: the real folder
    return info.st_dev, info.st_ino


def _walk(top: Path, label: str, value: str) -> list[tuple[Path, list[str]]]:
    """``(folder, file names)`` of every folder under ``top``, hidden ones skipped.

    The real folders come first and are all marked; then each link to a folder is
    followed, and a folder already marked that it leads to (a loop such as
    ``loop -> .``, or a second way to one folder) is left out with a warning naming it.
    """
    seen: set[tuple[int, int]] = {_folder_id(top)}
    listed: list[tuple[Path, list[str]]] = []
    pending: list[Path] = [top]

    def new(folder: Path) -> bool:
        key = _folder_id(folder)
        if key not in seen:
            seen.add(key)
            return True
        warnings.warn(
            f"{label}: '{Path(value) / folder.relative_to(top)}' leads to "
            f"'{os.path.realpath(folder)}', a folder already read (a symlink loop, or a "
            "second link to it); its images are read once",
            DataWarning,
            stacklevel=4,
        )
        return False

    while pending:
        links: list[Path] = []
        for root, dirs, names in os.walk(pending.pop(0)):  # links are listed, not entered
            here = Path(root)
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            links += [here / d for d in dirs if (here / d).is_symlink()]
            dirs[:] = [d for d in dirs if not (here / d).is_symlink() and new(here / d)]
            listed.append((here, names))
        pending += [link for link in links if new(link)]
    return listed


def _once(files: list[Path], label: str) -> tuple[Path, ...]:
    """``files`` (sorted) with each real file once: of the names that links give one
    image, the first is kept, or one that is not itself a link."""
    folders: dict[Path, str] = {}  # real path of each folder, resolved once

    def real(file: Path) -> str:
        if file.is_symlink():
            return os.path.realpath(file)
        if file.parent not in folders:
            folders[file.parent] = os.path.realpath(file.parent)
        return os.path.join(folders[file.parent], file.name)

    kept: dict[str, Path] = {}
    dropped: list[tuple[Path, Path]] = []  # (a name left out, the name kept)
    for file in files:
        key = real(file)
        first = kept.setdefault(key, file)
        if first is file:
            continue
        if first.is_symlink() and not file.is_symlink():
            kept[key], file = file, first
        dropped.append((file, kept[key]))
    if dropped:
        warnings.warn(
            f"{label}: {_count(len(dropped))} reached twice through symbolic links "
            f"(e.g. '{dropped[0][0]}' is '{dropped[0][1]}'); each is read once",
            DataWarning,
            stacklevel=2,
        )
    chosen = set(kept.values())
    return tuple(f for f in files if f in chosen)


def _count(images: int) -> str:
    return "an image is" if images == 1 else f"{images} images are"


def load_side(
    key: str,
    values: Sequence[str],
    where: str,
    spec_dir: Path | None,
    *,
    train: bool,
    weights: tuple[float, ...] | None,
    kind: FileKind = IMAGES,
) -> Side:
    folders = []
    for i, value in enumerate(values):
        label = folder_label(where, key, i, len(values))
        path = resolve(value, label, spec_dir, train=train, key=key)
        folders.append(Folder(label, value, path, list_images(path, label, value, kind)))
    use_weights = weights if len(values) > 1 else None
    return Side(key, f"{where}.{key}", folders, use_weights)


def read_subset(value: str, where: str, spec_dir: Path | None) -> set[str]:
    """The stems a subset file lists (one per line; '#' comments; extensions ignored)."""
    path = find_file(value, spec_dir, label=f"{where}.subset", key="subset")
    stems = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name = Path(line)
            stems.add(
                name.with_suffix("").as_posix()
                if name.suffix.lower() in EXTENSIONS + SEG_EXTENSIONS
                else line
            )
    return stems


def lr_stem(stem: str, scale: int) -> str:
    """An LR file's stem without the DIV2K-style scale suffix: ``0001x4`` → ``0001``."""
    return re.sub(rf"x{scale}$", "", stem) if scale > 1 else stem

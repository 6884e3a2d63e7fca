"""Where a path written in a dataset section points (torch-free; no file is read).

``builtin:NAME`` names built-in data (made by :mod:`engine.data.builtin`). Any other
value has ``~`` and ``$VARS`` expanded; an absolute path is itself, a relative one is
looked up next to the spec file first, then in the working directory. ``validate``
and the dataset find folders with the same functions, so they say the same.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

from engine.data.errors import DataError

BUILTIN = "builtin:"


def folder_label(where: str, key: str, index: int, count: int) -> str:
    """How errors name folder ``index`` of the ``count`` a key lists: ``data.train.hr[1]``."""
    return f"{where}.{key}" + (f"[{index}]" if count > 1 else "")


def candidates(value: str, spec_dir: Path | None) -> list[Path]:
    """The places a non-builtin path value may mean, in the order they are tried."""
    path = Path(os.path.expandvars(value))
    with contextlib.suppress(RuntimeError):  # ~user of no such user: the name as written
        path = path.expanduser()
    if path.is_absolute():
        return [path]
    tried = [spec_dir / path] if spec_dir is not None else []
    return list(dict.fromkeys([*tried, Path.cwd() / path]))


def find_folder(value: str, spec_dir: Path | None, *, label: str, key: str) -> Path:
    """The folder a non-builtin value names; a DataError (about ``key``) naming the
    places looked in when there is none."""
    places = candidates(value, spec_dir)
    for place in places:
        if _is(place, Path.is_dir):
            return place
        if _is(place, Path.exists):
            raise DataError(f"{label}: '{value}' is a file, not a folder of images", key=key)
    looked = " and ".join(f"'{p}'" for p in places)
    raise DataError(f"{label}: folder '{value}' does not exist (looked in {looked})", key=key)


def find_file(value: str, spec_dir: Path | None, *, label: str, key: str) -> Path:
    """The file a value names (a ``subset`` list); a DataError about ``key`` if none."""
    found = next((p for p in candidates(value, spec_dir) if _is(p, Path.is_file)), None)
    if found is None:
        raise DataError(f"{label}: file '{value}' does not exist", key=key)
    return found


def _is(place: Path, test: Callable[[Path], bool]) -> bool:
    """``test(place)``, False for a name the system cannot look up (a component longer
    than the file system allows), as for a file that is not there."""
    try:
        return test(place)
    except OSError:
        return False

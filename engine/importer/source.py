"""An option file of another trainer, read with the place of every option kept.

traiNNer writes JSON with ``//`` comments, BasicSR and traiNNer-redux YAML. Both are
read by Loom's own YAML loader (JSON is YAML's flow style): JSON comments are blanked
out character for character first, so every line and column stays where the user
wrote it. The reader then tracks which options the importer took; whatever it did
not take is reported at its ``FILE:LINE:COL`` with a reason, never dropped silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

from engine.spec.diagnostics import Diagnostics, Loc
from engine.spec.yamlio import Doc, Path, parse_yaml


class OptionFileError(Exception):
    """An option file that cannot be read or converted (the command exits 2)."""


@dataclass(frozen=True)
class Note:
    """An option the written spec does not carry, where it was written and why."""

    loc: Loc | None
    key: str
    reason: str

    def __str__(self) -> str:
        where = f"{self.loc}: " if self.loc else ""
        return f"{where}{self.key}: {self.reason}"


def dotted(path: Path) -> str:
    return ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in path).replace(".[", "[")


def blank_json_comments(text: str) -> str:
    """``text`` with ``//`` and ``/* */`` comments (outside strings) replaced by spaces.

    Newlines are kept and every other character becomes exactly one space, so the
    positions the parser reports are those of the original file. Tabs become spaces
    too (YAML refuses tabs where JSON allows them) without moving anything."""
    out = list(text)
    i, n = 0, len(text)
    in_string = False
    while i < n:
        ch = text[i]
        if in_string:
            if ch == "\\":
                i += 2
                continue
            if ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif text.startswith("//", i):
            while i < n and text[i] != "\n":
                out[i] = " "
                i += 1
            continue
        elif text.startswith("/*", i):
            while i < n and not text.startswith("*/", i):
                if text[i] != "\n":
                    out[i] = " "
                i += 1
            for j in range(i, min(i + 2, n)):
                out[j] = " "
            i += 2
            continue
        elif ch == "\t":
            out[i] = " "
        i += 1
    return "".join(out)


def looks_like_json(text: str) -> bool:
    """Whether the first thing in the file, comments aside, is a ``{``."""
    stripped = blank_json_comments(text).lstrip()
    return stripped.startswith("{")


@dataclass
class OptionFile:
    """A parsed option file; ``take`` marks options mapped, ``skip`` notes them unmapped."""

    path: FsPath
    label: str
    doc: Doc
    is_json: bool
    taken: set[Path] = field(default_factory=set)
    notes: list[Note] = field(default_factory=list)

    @property
    def data(self) -> dict[str, Any]:
        return self.doc.data  # type: ignore[no-any-return]

    def get(self, *path: str | int, default: Any = None) -> Any:
        """The value at ``path`` (``default`` when absent or null), without taking it."""
        value = self.doc.get(path)
        return default if value is None else value

    def has(self, *path: str | int) -> bool:
        return self.get(*path) is not None

    def take(self, *path: str | int, default: Any = None) -> Any:
        """The value at ``path``, marked as mapped (with everything under it)."""
        self.taken.add(path)
        return self.get(*path, default=default)

    def loc(self, *path: str | int) -> Loc | None:
        return self.doc.key_loc(path) if path in self.doc.keys else self.doc.loc(path)

    def where(self, *path: str | int) -> str:
        """``FILE:LINE:COL: key`` of an option, for messages."""
        loc = self.loc(*path)
        return f"{loc}: {dotted(path)}" if loc else dotted(path)

    def skip(self, path: Path, reason: str) -> None:
        """Note an option as not mapped (once), and count it as handled."""
        if self.doc.get(path) is None:
            return
        self.taken.add(path)
        self.notes.append(Note(self.loc(*path), dotted(path), reason))

    def note(self, path: Path, reason: str) -> None:
        """Say how an option that was mapped differs in Loom (it stays mapped)."""
        self.notes.append(Note(self.loc(*path), dotted(path), reason))

    def fail(self, path: Path, message: str) -> OptionFileError:
        """An error about one option, at its place."""
        return OptionFileError(f"{self.where(*path)}: {message}")

    def is_taken(self, path: Path) -> bool:
        return any(path[: len(t)] == t for t in self.taken)

    def leaves(self, path: Path = ()) -> list[Path]:
        """Paths of the options under ``path``: scalars and lists (a list is one option)."""
        value = self.doc.get(path)
        found: list[Path] = []
        if isinstance(value, dict):
            for key in value:
                found.extend(self.leaves((*path, key)))
            return found
        if isinstance(value, list) and any(isinstance(v, dict) for v in value):
            for i in range(len(value)):  # a list of sections (redux's losses): each its own
                found.extend(self.leaves((*path, i)) or [(*path, i)])
            return found
        return [path] if path else []

    def untaken(self) -> list[Path]:
        """Options set (not null) that nothing took or noted, in file order."""
        left = [p for p in self.leaves() if not self.is_taken(p) and self.doc.get(p) is not None]
        return sorted(left, key=lambda p: self.loc(*p) or Loc(self.label))


def read_options(path: str | FsPath) -> OptionFile:
    """Read and parse an option file; anything unreadable raises :class:`OptionFileError`."""
    file = FsPath(path)
    label = str(path)
    try:
        text = file.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise OptionFileError(f"{label}: file not found") from None
    except IsADirectoryError:
        raise OptionFileError(f"{label}: a folder, not an option file") from None
    except UnicodeDecodeError:
        raise OptionFileError(f"{label}: not a text file (it is not UTF-8)") from None
    except OSError as exc:
        raise OptionFileError(f"{label}: cannot read: {exc.strerror or exc}") from None
    is_json = looks_like_json(text)
    diags = Diagnostics()
    doc = parse_yaml(blank_json_comments(text) if is_json else text, label, diags)
    if doc is None or diags.errors:
        kind = "JSON" if is_json else "YAML"
        lines = [str(d).replace("error: YAML:", f"error: {kind}:") for d in diags.sorted()]
        raise OptionFileError("\n".join(lines) or f"{label}: cannot parse the file")
    if not isinstance(doc.data, dict):
        raise OptionFileError(
            f"{label}: an option file is a mapping of options; this file holds "
            f"{type(doc.data).__name__ if doc.data is not None else 'nothing'}"
        )
    return OptionFile(file, label, doc, is_json)

"""Diagnostics: every problem found in a spec, with the place it was found.

Checks never raise on the first problem: they add to a :class:`Diagnostics` list, and
the caller reports the whole list at once, sorted by place, gcc style
(``FILE:LINE:COL: error: message``) so that editors can jump to each one.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True, order=True)
class Loc:
    """A place in a spec: a file (or an override, named as ``<override ...>``), 1-based."""

    file: str
    line: int = 0
    col: int = 0

    def __str__(self) -> str:
        if self.line <= 0:
            return self.file
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True)
class Diagnostic:
    loc: Loc | None
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        where = f"{self.loc}: " if self.loc else ""
        return f"{where}{self.severity}: {self.message}"

    def as_json(self) -> dict[str, object]:
        loc = self.loc or Loc("")
        return {
            "file": loc.file,
            "line": loc.line,
            "col": loc.col,
            "severity": self.severity,
            "message": self.message,
        }


@dataclass
class Diagnostics:
    """An ordered, de-duplicated collection of diagnostics."""

    items: list[Diagnostic] = field(default_factory=list)
    _seen: set[tuple[Loc | None, str, str]] = field(default_factory=set, repr=False)

    def add(self, loc: Loc | None, message: str, severity: Severity = "error") -> None:
        key = (loc, message, severity)
        if key not in self._seen:
            self._seen.add(key)
            self.items.append(Diagnostic(loc, message, severity))

    def error(self, loc: Loc | None, message: str) -> None:
        self.add(loc, message, "error")

    def warning(self, loc: Loc | None, message: str) -> None:
        self.add(loc, message, "warning")

    def extend(self, other: Iterable[Diagnostic]) -> None:
        for d in other:
            self.add(d.loc, d.message, d.severity)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.items if d.severity == "error"]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.items if d.severity == "warning"]

    def sorted(self) -> list[Diagnostic]:
        return sorted(self.items, key=lambda d: (d.loc or Loc(""), d.message))

    def __iter__(self) -> Iterator[Diagnostic]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


class SpecError(Exception):
    """A spec has errors; ``diagnostics`` holds all of them (and any warnings)."""

    def __init__(self, diagnostics: Diagnostics) -> None:
        self.diagnostics = diagnostics
        lines = [str(d) for d in diagnostics.sorted()]
        super().__init__("\n".join(lines) if lines else "invalid spec")


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` when a choice is close to ``name``, else ``""``."""
    options = [c for c in choices if isinstance(c, str)]
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    if not close:
        lowered = {c.lower(): c for c in options}
        if name.lower() in lowered:
            close = [lowered[name.lower()]]
    return f" (did you mean '{close[0]}'?)" if close else ""


def quote_list(names: Iterable[str], limit: int = 12) -> str:
    """``'a', 'b', 'c'`` — at most ``limit`` names, then ``…``."""
    items = [f"'{n}'" for n in names]
    if len(items) > limit:
        items = [*items[:limit], "…"]
    return ", ".join(items) if items else "(none)"

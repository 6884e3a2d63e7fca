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


#: Names longer than this are not compared (a hostile 10 MB key stays fast).
_LONGEST_NAME = 64


def _distance(a: str, b: str, limit: int) -> int:
    """Levenshtein distance of ``a`` and ``b``, or ``limit + 1`` once it exceeds ``limit``."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        if min(current) > limit:
            return limit + 1
        previous = current
    return previous[-1]


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest choices, else ``""``.

    Choices at the smallest edit distance (at most a third of the name, and 1 for short
    names) are offered, several when they tie (``ad``: 'add' or 'pad'); otherwise a
    close match by similarity or by case.
    """
    if len(name) > _LONGEST_NAME:
        return ""
    options = list(
        dict.fromkeys(c for c in choices if isinstance(c, str) and len(c) <= _LONGEST_NAME)
    )
    limit = max(1, len(name) // 3)
    scored = [(_distance(name.lower(), c.lower(), limit), c) for c in options]
    best = min((d for d, _ in scored), default=limit + 1)
    close = [c for d, c in scored if d == best] if best <= limit else []
    if not close:
        close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    if not close:
        return ""
    quoted = [f"'{c}'" for c in close[:3]]
    return (
        " (did you mean "
        + (" or ".join(quoted) if len(quoted) < 3 else ", ".join(quoted[:-1]) + " or " + quoted[-1])
        + "?)"
    )


def quote_list(names: Iterable[str], limit: int = 12) -> str:
    """``'a', 'b', 'c'`` — at most ``limit`` names, then ``…``."""
    items = [f"'{n}'" for n in names]
    if len(items) > limit:
        items = [*items[:limit], "…"]
    return ", ".join(items) if items else "(none)"

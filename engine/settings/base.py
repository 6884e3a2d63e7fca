"""What every settings section shares: documented defaults and a located reader.

A settings class is a frozen dataclass whose fields carry their documentation
(``setting(default, "what it does")``), so ``docs/settings.md`` is generated from the
classes themselves and the defaults live in one place. Sections are parsed from the
resolved, schema-checked spec by a :class:`Reader`, which turns every problem the JSON
Schema cannot express into a diagnostic at the offending key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from engine.spec.diagnostics import Diagnostics, Loc
from engine.spec.yamlio import Doc

T = TypeVar("T")
Path = tuple[Any, ...]

#: Validation metrics where lower is better; the rest are better higher.
LOWER_IS_BETTER: frozenset[str] = frozenset({"lpips"})


def setting(
    default: Any = dataclasses.MISSING,
    doc: str | None = "",
    *,
    key: str | None = None,
    shown: str | None = None,
) -> Any:
    """A dataclass field with its documentation (shown in docs/settings.md).

    ``key`` is the spec key when it differs from the field's name, ``shown`` the
    default as the docs say it when it is computed (``a third of training``);
    ``doc=None`` keeps a derived field out of the docs.
    """
    if isinstance(default, list | dict | set):
        raise TypeError("use an immutable default (a tuple) for settings")
    metadata = {"doc": doc, "key": key, "shown": shown}
    return dataclasses.field(default=default, metadata=metadata)


def iteration_of(value: Any, total: int) -> int | None:
    """An iteration written as an int, or as a fraction (0, 1] of ``total``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and 0 < value <= 1:
        return round(value * total)
    return None


@dataclass
class Reader:
    """Reads one section of the spec; reports at ``doc`` locations into ``diags``."""

    doc: Doc
    diags: Diagnostics
    base: Path
    section: dict[str, Any]

    def sub(self, *keys: Any) -> Reader:
        value: Any = self.section
        for key in keys:
            value = value[key]
        return Reader(self.doc, self.diags, (*self.base, *keys), value)

    def loc(self, *keys: Any) -> Loc:
        return self.doc.loc((*self.base, *keys)) or self.doc.key_loc(self.base) or Loc("?")

    def where(self, *keys: Any) -> str:
        """The dotted path of a key as users write it: ``optimizers.G.milestones[1]``."""
        text = ""
        for key in (*self.base, *keys):
            text += f"[{key}]" if isinstance(key, int) else f".{key}" if text else str(key)
        return text

    def error(self, keys: tuple[Any, ...], message: str) -> None:
        self.diags.error(self.loc(*keys), message)

    def warning(self, keys: tuple[Any, ...], message: str) -> None:
        self.diags.warning(self.loc(*keys), message)

    def iteration(self, key: Any, total: int, *, allow_zero: bool = False) -> int | None:
        """A key holding an iteration or a fraction of training, checked to lie inside it."""
        return self.iteration_at((key,), self.section[key], total, allow_zero=allow_zero)

    def iteration_at(
        self, keys: tuple[Any, ...], value: Any, total: int, *, allow_zero: bool = False
    ) -> int | None:
        found = iteration_of(value, total)
        label = self.where(*keys)
        if found is None:
            return None  # neither an iteration nor a fraction: the schema reported it
        if found > total:
            self.error(keys, f"{label}: iteration {found} is after train.iterations ({total})")
            return None
        elif found == 0 and not allow_zero:
            self.error(keys, f"{label}: must be after iteration 0")
            return None
        return found


def parse_section(diags: Diagnostics, parse: Callable[[], T]) -> T | None:
    """Run a section parser; a section the schema already refused may not parse.

    A wrong type there is already reported (by the schema), so it is not reported
    twice (nor an infinite ``iterations`` or a zero ``scale``, which overflow or divide
    by zero); without an earlier error, a failure is a bug and is raised.
    """
    try:
        return parse()
    except (KeyError, TypeError, ValueError, AttributeError, ArithmeticError):
        if diags.errors:
            return None
        raise


def defaults_table(cls: type, prefix: str) -> list[str]:
    """Markdown rows ``| key | default | meaning |`` for a settings class."""
    rows = []
    for f in dataclasses.fields(cls):
        doc = f.metadata.get("doc")
        if doc is None:
            continue
        if f.metadata.get("shown"):
            default = f.metadata["shown"]
        elif f.default is not dataclasses.MISSING:
            default = _shown(f.default)
        else:
            default = "required"
        key = f.metadata.get("key") or f.name
        rows.append(f"| `{prefix}{key}` | {default} | {doc} |")
    return rows


def _shown(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if value == ():
        return "—"
    if isinstance(value, tuple):
        return "`[" + ", ".join(str(v) for v in value) + "]`"
    return f"`{value}`"

"""YAML loading that remembers where every key and value was written.

A spec is turned into plain Python values (dicts, lists, str, int, float, bool, None)
plus two side tables mapping a *path* (a tuple of keys and indices) to a :class:`Loc`:
one for values, one for mapping keys. Plain values keep the rest of the engine simple;
the side tables let every check point at a file, line and column, even after specs
are merged with ``extends:`` and overrides.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any, cast

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar
from ruamel.yaml.constructor import ConstructorError, RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from engine.spec.diagnostics import Diagnostics, Loc

Path = tuple[str | int, ...]

_STANDARD_TAGS = {
    f"tag:yaml.org,2002:{name}"
    for name in ("str", "int", "float", "bool", "null", "map", "seq", "omap")
}


@dataclass
class Doc:
    """Plain data plus the places its parts were written."""

    data: Any
    values: dict[Path, Loc] = field(default_factory=dict)
    keys: dict[Path, Loc] = field(default_factory=dict)

    def loc(self, path: Path) -> Loc | None:
        """Where the value at ``path`` was written (or its nearest written ancestor)."""
        for end in range(len(path), -1, -1):
            found = self.values.get(path[:end])
            if found is not None:
                return found
        return None

    def key_loc(self, path: Path) -> Loc | None:
        """Where the key naming ``path`` was written, falling back to the value."""
        return self.keys.get(path) or self.loc(path)

    def get(self, path: Path, default: Any = None) -> Any:
        node = self.data
        for part in path:
            try:
                node = node[part]
            except (KeyError, IndexError, TypeError):
                return default
        return node

    def subtree(self, path: Path) -> Doc:
        """The part of this doc under ``path``, re-rooted (locations are kept)."""
        n = len(path)
        values = {p[n:]: loc for p, loc in self.values.items() if p[:n] == path}
        keys = {p[n:]: loc for p, loc in self.keys.items() if p[:n] == path}
        if () not in values and (found := self.loc(path)):
            values[()] = found
        return Doc(self.get(path), values, keys)

    def graft(self, path: Path, other: Doc) -> None:
        """Record ``other``'s locations under ``path`` (its data is placed by the caller)."""
        n = len(path)
        for table, source in ((self.values, other.values), (self.keys, other.keys)):
            for p in [p for p in table if p[:n] == path and len(p) > n]:
                del table[p]
            for p, loc in source.items():
                if p or table is self.values:
                    table[path + p] = loc


def as_list(value: Any) -> list[Any]:
    """``value`` if it is a list, else ``[]`` (the schema check reports the wrong type)."""
    return value if isinstance(value, list) else []


def as_dict(value: Any) -> dict[str, Any]:
    """``value`` if it is a mapping, else ``{}`` (the schema check reports the wrong type)."""
    return value if isinstance(value, dict) else {}


#: Limits that keep any spec fast to read, whoever wrote it (alias "bombs", deep
#: nesting, huge strings): values in a document after aliases are expanded, nesting
#: depth, characters in a string and in a key.
MAX_VALUES = 200_000
MAX_DEPTH = 64
MAX_STRING = 100_000
MAX_KEY = 200
MAX_TEXT = 2 * 2**20  # characters in one file: real specs are a few kB


def _flow_depth(text: str) -> int:
    """The deepest nesting of flow brackets (``[`` ``{``) outside quotes and comments:
    a cheap look before the parser, whose recursion on deep nesting is slow."""
    depth = deepest = 0
    quote = ""
    comment = False
    for ch in text:
        if comment:
            comment = ch != "\n"
        elif quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#":
            comment = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


class _TooBig(Exception):
    """A document past one of the limits: already reported."""


@dataclass
class _Budget:
    left: int = MAX_VALUES


class _Constructor(RoundTripConstructor):
    """ruamel's round-trip constructor, except that a value with an unknown tag
    (``!custom``, refused later with its place) is never left half-built: ruamel's own
    generator for it turns being closed — when a later error stops the document — into
    a ConstructorError that Python can only print, as a traceback, when it collects it."""

    def construct_unknown(self, node: Any) -> Iterator[Any]:
        # ruamel declares an Iterator; it is a generator, which close() finishes.
        inner = cast(Generator[Any, None, None], super().construct_unknown(node))
        try:
            yield next(inner)
            for _ in inner:
                pass
        except GeneratorExit:
            with contextlib.suppress(ConstructorError):
                inner.close()
            raise


_Constructor.add_constructor(None, _Constructor.construct_unknown)


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.Constructor = _Constructor
    yaml.allow_duplicate_keys = False
    return yaml


def parse_yaml(
    text: str, file: str, diagnostics: Diagnostics, *, line_offset: int = 0, col_offset: int = 0
) -> Doc | None:
    """Parse YAML text; problems go to ``diagnostics`` and ``None`` is returned."""
    if len(text) > MAX_TEXT:
        diagnostics.error(
            Loc(file), f"YAML: {len(text)} characters is too large for a spec (at most {MAX_TEXT})"
        )
        return None
    if _flow_depth(text) > MAX_DEPTH:
        diagnostics.error(
            Loc(file), f"YAML: nested too deeply (a spec nests at most {MAX_DEPTH} levels)"
        )
        return None
    try:
        raw = _yaml().load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        loc = (
            Loc(file, mark.line + 1 + line_offset, mark.column + 1 + col_offset)
            if mark
            else Loc(file)
        )
        problem = (exc.problem or exc.context or "invalid YAML").strip()
        context = exc.context_mark
        if exc.context and context is not None and context is not mark:
            if exc.context.strip().startswith("while parsing a flow") and mark is not None:
                # An unclosed [ or {: the mistake is at the bracket, not where the
                # parser gave up (often lines later); name both.
                loc = Loc(
                    file,
                    context.line + 1 + line_offset,
                    context.column + 1 + (col_offset if context.line == 0 else 0),
                )
                what = exc.context.strip().removeprefix("while parsing a ")
                problem += (
                    f" at line {mark.line + 1 + line_offset}, column {mark.column + 1}: "
                    f"the {what} that starts here is not closed"
                )
            else:
                line = context.line + 1 + line_offset
                problem += f" ({exc.context.strip()} at line {line}, column {context.column + 1})"
        if "duplicate key" in problem or "found duplicate key" in str(exc):
            key = _duplicate_key_name(str(exc))
            problem = f"duplicate key '{key}'" if key else "duplicate key"
        diagnostics.error(loc, f"YAML: {problem}")
        return None
    except YAMLError as exc:
        diagnostics.error(Loc(file), f"YAML: {exc}")
        return None
    except TypeError:  # ruamel hashes a complex key ({a: [1]}: x) and cannot
        diagnostics.error(
            Loc(file), "YAML: mapping keys must be plain names, not mappings or lists"
        )
        return None
    except RecursionError:
        diagnostics.error(
            Loc(file), f"YAML: nested too deeply (a spec nests at most {MAX_DEPTH} levels)"
        )
        return None
    doc = Doc(None)
    doc.values[()] = Loc(file, 1 + line_offset, 1 + col_offset)
    before = len(diagnostics.errors)
    try:
        doc.data = _plain(raw, (), doc, file, diagnostics, line_offset, col_offset, _Budget())
    except _TooBig:
        return None
    return doc if len(diagnostics.errors) == before else None


def _duplicate_key_name(message: str) -> str | None:
    for line in message.splitlines():
        if 'found duplicate key "' in line:
            return line.split('"')[1]
    return None


def load_yaml(path: str | FsPath, diagnostics: Diagnostics, label: str | None = None) -> Doc | None:
    """Read and parse a YAML file; a missing or unreadable file is a diagnostic."""
    name = label or str(path)
    try:
        text = FsPath(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        diagnostics.error(Loc(name), "file not found")
        return None
    except (OSError, UnicodeDecodeError) as exc:
        diagnostics.error(Loc(name), f"cannot read file: {exc}")
        return None
    return parse_yaml(text, name, diagnostics)


def _plain(
    node: Any,
    path: Path,
    doc: Doc,
    file: str,
    diags: Diagnostics,
    dl: int,
    dc: int,
    budget: _Budget,
) -> Any:
    def at(line: int, col: int) -> Loc:
        return Loc(file, line + 1 + dl, col + 1 + (dc if line == 0 else 0))

    def stop(message: str) -> _TooBig:
        diags.error(doc.values.get(path) or Loc(file), message)
        return _TooBig()

    budget.left -= 1
    if budget.left < 0:
        anchor = getattr(getattr(node, "anchor", None), "value", None)
        raise stop(
            f"YAML: more than {MAX_VALUES} values once aliases are expanded"
            + (f" (here alias '*{anchor}')" if anchor else "")
            + "; a spec that large is refused (an alias 'bomb'?)"
        )
    if len(path) > MAX_DEPTH:
        raise stop(f"YAML: nested too deeply (a spec nests at most {MAX_DEPTH} levels)")
    if isinstance(node, str) and len(node) > MAX_STRING:
        raise stop(f"YAML: a string of {len(node)} characters (at most {MAX_STRING})")

    tag = getattr(getattr(node, "tag", None), "value", None)
    if isinstance(node, TaggedScalar) or (tag and tag not in _STANDARD_TAGS):
        diags.error(doc.values.get(path), f"YAML tags such as '{tag}' are not allowed in specs")
        return None
    if isinstance(node, CommentedMap):
        out: dict[str, Any] = {}
        for key in node:
            if not isinstance(key, str | int | float | bool) or isinstance(key, bool):
                diags.error(doc.values.get(path), f"mapping keys must be plain names, got {key!r}")
                continue
            skey = str(key)
            if len(skey) > MAX_KEY:
                raise stop(f"YAML: a key of {len(skey)} characters (at most {MAX_KEY})")
            try:
                kline, kcol = node.lc.key(key)
                vline, vcol = node.lc.value(key)
            except (KeyError, TypeError):  # a key from a merge (<<: *anchor): no place of its own
                kline, kcol = vline, vcol = node.lc.line, node.lc.col
            doc.keys[(*path, skey)] = at(kline, kcol)
            doc.values[(*path, skey)] = at(vline, vcol)
            out[skey] = _plain(node[key], (*path, skey), doc, file, diags, dl, dc, budget)
        return out
    if isinstance(node, CommentedSeq):
        items = []
        for i, item in enumerate(node):
            line, col = node.lc.item(i)
            doc.values[(*path, i)] = at(line, col)
            items.append(_plain(item, (*path, i), doc, file, diags, dl, dc, budget))
        return items
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    diags.error(doc.values.get(path), f"unsupported YAML value {node!r}")
    return None

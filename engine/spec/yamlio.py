"""YAML loading that remembers where every key and value was written.

A spec is turned into plain Python values (dicts, lists, str, int, float, bool, None)
plus two side tables mapping a *path* (a tuple of keys and indices) to a :class:`Loc`:
one for values, one for mapping keys. Plain values keep the rest of the engine simple;
the side tables let every check point at a file, line and column, even after specs
are merged with ``extends:`` and overrides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar
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


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    return yaml


def parse_yaml(
    text: str, file: str, diagnostics: Diagnostics, *, line_offset: int = 0, col_offset: int = 0
) -> Doc | None:
    """Parse YAML text; problems go to ``diagnostics`` and ``None`` is returned."""
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
    doc = Doc(None)
    doc.values[()] = Loc(file, 1 + line_offset, 1 + col_offset)
    before = len(diagnostics.errors)
    doc.data = _plain(raw, (), doc, file, diagnostics, line_offset, col_offset)
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


def _plain(node: Any, path: Path, doc: Doc, file: str, diags: Diagnostics, dl: int, dc: int) -> Any:
    def at(line: int, col: int) -> Loc:
        return Loc(file, line + 1 + dl, col + 1 + (dc if line == 0 else 0))

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
            kline, kcol = node.lc.key(key)
            vline, vcol = node.lc.value(key)
            doc.keys[(*path, skey)] = at(kline, kcol)
            doc.values[(*path, skey)] = at(vline, vcol)
            out[skey] = _plain(node[key], (*path, skey), doc, file, diags, dl, dc)
        return out
    if isinstance(node, CommentedSeq):
        items = []
        for i, item in enumerate(node):
            line, col = node.lc.item(i)
            doc.values[(*path, i)] = at(line, col)
            items.append(_plain(item, (*path, i), doc, file, diags, dl, dc))
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

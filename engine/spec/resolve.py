"""Resolving a spec: ``extends:`` (deep merge) and command-line overrides.

Merge rule (documented in docs/spec-language.md): mappings merge key by key, the
extending spec winning; every other value (scalars, lists) replaces the inherited one;
a mapping written with ``_replace: true`` replaces the inherited mapping whole instead
of merging into it.

Overrides ``a.b.c=value`` set one value (parsed as YAML). The path must already exist
in the resolved spec, so a typo cannot silently add a key; ``+a.b.c=value`` adds it.
"""

from __future__ import annotations

import copy
from pathlib import Path as FsPath
from typing import Any

from engine.spec.catalog import SPECS_DIR
from engine.spec.diagnostics import Diagnostics, Loc, did_you_mean
from engine.spec.paths import PathPolicy
from engine.spec.yamlio import Doc, Path, load_yaml, parse_yaml

REPLACE_KEY = "_replace"


def find_file(name: str, relative_to: FsPath | None) -> FsPath | None:
    """A referenced spec file: next to the referencing file, else under ``specs/``."""
    candidates = []
    path = FsPath(name)
    if path.is_absolute():
        candidates.append(path)
    else:
        if relative_to is not None:
            candidates.append(relative_to / path)
        candidates.append(FsPath.cwd() / path)
        candidates.append(SPECS_DIR / path)
    for candidate in candidates:
        try:
            if candidate.is_file():
                return candidate
        except OSError:  # a name the system cannot look up (too long): not there
            continue
    return None


def display_name(path: FsPath) -> str:
    """How a file is named in messages: relative to the working directory when inside it."""
    try:
        return str(path.resolve().relative_to(FsPath.cwd().resolve()))
    except ValueError:
        return str(path)


#: At most this many files in one spec's ``extends:`` tree (each loaded once).
MAX_EXTENDS = 64


def load_with_extends(
    path: FsPath,
    diags: Diagnostics,
    policy: PathPolicy | None = None,
    _chain: tuple[FsPath, ...] = (),
    _loaded: dict[FsPath, Doc | None] | None = None,
) -> Doc | None:
    """Load a spec file and everything it extends, merged; every file is read once and
    must lie where ``policy`` allows."""
    loaded: dict[FsPath, Doc | None] = {} if _loaded is None else _loaded
    doc = load_yaml(path, diags, label=display_name(path))
    if doc is None:
        return None
    if not isinstance(doc.data, dict):
        diags.error(
            doc.loc(()), "a spec must be a mapping of sections (spec:, name:, networks:, …)"
        )
        return None
    bases = doc.data.get("extends")
    if bases is None:
        return doc
    names = bases if isinstance(bases, list) else [bases]
    merged: Doc | None = None
    for i, name in enumerate(names):
        where = ("extends", i) if isinstance(bases, list) else ("extends",)
        if not isinstance(name, str):
            continue  # the schema check reports it
        found = find_file(name, path.parent)
        if found is None:
            diags.error(
                doc.loc(where),
                f"extends: file '{name}' not found (looked next to "
                f"'{display_name(path)}' and in specs/)",
            )
            continue
        if policy is not None and not policy.allows(found):
            diags.error(doc.loc(where), f"extends: {policy.refusal(name)}")
            continue
        resolved = found.resolve()
        if resolved in _chain or resolved == path.resolve():
            cycle = " → ".join(display_name(p) for p in (*_chain, path.resolve(), resolved))
            diags.error(doc.loc(where), f"extends: cycle {cycle}")
            continue
        if resolved in loaded:
            base = copy.deepcopy(loaded[resolved])  # named again: read once
        elif len(loaded) >= MAX_EXTENDS:
            diags.error(doc.loc(where), f"extends: more than {MAX_EXTENDS} files in one spec")
            break
        else:
            loaded[resolved] = None
            base = load_with_extends(found, diags, policy, (*_chain, path.resolve()), loaded)
            loaded[resolved] = copy.deepcopy(base)
        if base is not None:
            merged = base if merged is None else merge(merged, base)
    own = Doc({k: v for k, v in doc.data.items() if k != "extends"}, doc.values, doc.keys)
    return own if merged is None else merge(merged, own)


def merge(base: Doc, child: Doc) -> Doc:
    """Deep-merge ``child`` over ``base`` (see the module docstring for the rule)."""
    out = Doc(None, dict(base.values), dict(base.keys))
    out.data = _merge_value(copy.deepcopy(base.data), child.data, (), out, child)
    return out


def _merge_value(base: Any, new: Any, path: Path, out: Doc, child: Doc) -> Any:
    if isinstance(base, dict) and isinstance(new, dict) and not new.get(REPLACE_KEY):
        for key, value in new.items():
            sub = (*path, key)
            if key in base:
                if sub in child.keys:
                    out.keys[sub] = child.keys[sub]
                base[key] = _merge_value(base[key], value, sub, out, child)
            else:
                base[key] = value
                out.graft(sub, child.subtree(sub))
                if sub in child.keys:
                    out.keys[sub] = child.keys[sub]
        if path in child.values and path not in out.values:
            out.values[path] = child.values[path]
        return base
    replaced = {k: v for k, v in new.items() if k != REPLACE_KEY} if isinstance(new, dict) else new
    out.graft(path, child.subtree(path))
    return replaced


def strip_replace_markers(value: Any) -> Any:
    """Remove ``_replace`` markers left in a spec that extends nothing."""
    if isinstance(value, dict):
        return {k: strip_replace_markers(v) for k, v in value.items() if k != REPLACE_KEY}
    if isinstance(value, list):
        return [strip_replace_markers(v) for v in value]
    return value


def apply_overrides(doc: Doc, overrides: list[str] | tuple[str, ...], diags: Diagnostics) -> None:
    """Apply ``a.b.c=value`` / ``+a.b.c=value`` overrides to ``doc`` in place."""
    for text in overrides:
        _apply_override(doc, text, diags)


def _apply_override(doc: Doc, text: str, diags: Diagnostics) -> None:
    label = f"<override {text}>"
    add = text.startswith("+")
    body = text[1:] if add else text
    offset = 1 if add else 0
    if "=" not in body:
        diags.error(
            Loc(label, 1, 1), "an override is written key.path=value (e.g. train.iterations=2000)"
        )
        return
    key_text, value_text = body.split("=", 1)
    parts = key_text.split(".")
    if not key_text or any(not p for p in parts):
        diags.error(
            Loc(label, 1, 1 + offset), f"override: '{key_text}' is not a key path like a.b.c"
        )
        return
    value_doc = parse_yaml(
        value_text or "null", label, diags, col_offset=offset + len(key_text) + 1
    )
    if value_doc is None:
        return
    node = doc.data
    path: Path = ()
    col = 1 + offset
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        step: str | int = part
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                diags.error(
                    Loc(label, 1, col),
                    f"override: '{dotted_text(parts[:i])}' is a list of "
                    f"{len(node)} items; '{part}' is not an index into it",
                )
                return
            step = int(part)
        elif isinstance(node, dict):
            if part not in node:
                if not add:
                    where = f"'{dotted_text(parts[:i])}'" if i else "the spec"
                    diags.error(
                        Loc(label, 1, col),
                        f"override: no key '{part}' in {where}"
                        f"{did_you_mean(part, node)}; write '+{body}' to add it",
                    )
                    return
                if not last:
                    node[part] = {}
        else:
            diags.error(
                Loc(label, 1, col),
                f"override: '{dotted_text(parts[:i])}' is a value, not a mapping",
            )
            return
        path = (*path, step)
        if last:
            node[step] = value_doc.data
            doc.graft(path, value_doc)
            doc.values[path] = Loc(label, 1, offset + len(key_text) + 2)
            doc.keys[path] = Loc(label, 1, col)
        else:
            node = node[step]
        col += len(part) + 1


def dotted_text(parts: list[str]) -> str:
    return ".".join(parts)

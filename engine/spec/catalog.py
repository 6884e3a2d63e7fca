"""The built-in blocks as ``validate`` sees them: read from ``schemas/blocks/*.json``.

These files are generated from the blocks' Python signatures (``python cli.py
schema``), so validation knows every block's parameters and ports without importing
torch. A test fails when they are stale.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_DIR = ROOT / "schemas"
SPECS_DIR = ROOT / "specs"


@dataclass(frozen=True)
class CatalogEntry:
    """One built-in block: its ports, how gradients and parameters behave, its schema."""

    name: str
    kind: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    variadic: bool
    min_inputs: int
    grad: bool
    trainable: bool
    schema: dict[str, Any] = field(repr=False, compare=False)
    invertible: bool = False  # a step of a normalizing flow (blocks/builtin/flow.py)

    @classmethod
    def from_schema(cls, schema: dict[str, Any]) -> CatalogEntry:
        meta = schema["x-loom"]
        return cls(
            name=schema["title"],
            kind=meta["kind"],
            inputs=tuple(meta["inputs"]),
            outputs=tuple(meta["outputs"]),
            variadic=meta["variadic"],
            min_inputs=meta["min_inputs"],
            grad=meta["grad"],
            trainable=meta["trainable"],
            schema=schema,
            invertible=meta.get("invertible", False),
        )

    @cached_property
    def validator(self) -> Draft202012Validator:
        return Draft202012Validator(self.schema)

    @property
    def params(self) -> list[str]:
        from blocks.schema import RESERVED_NODE_KEYS

        return [p for p in self.schema["properties"] if p not in RESERVED_NODE_KEYS]


class Catalog:
    """Built-in blocks by name, loaded once from a schema folder."""

    def __init__(self, entries: dict[str, CatalogEntry]) -> None:
        self.entries = entries

    @classmethod
    def load(cls, folder: Path | None = None) -> Catalog:
        folder = folder or SCHEMA_DIR / "blocks"
        entries = {}
        for path in sorted(folder.glob("*.json")):
            entry = CatalogEntry.from_schema(json.loads(path.read_text(encoding="utf-8")))
            entries[entry.name] = entry
        return cls(entries)

    def get(self, name: str) -> CatalogEntry | None:
        return self.entries.get(name)

    def names(self, *kinds: str) -> list[str]:
        return sorted(n for n, e in self.entries.items() if not kinds or e.kind in kinds)

    def __contains__(self, name: object) -> bool:
        return name in self.entries


_DEFAULT: Catalog | None = None


def default_catalog() -> Catalog:
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Catalog.load()
    return _DEFAULT

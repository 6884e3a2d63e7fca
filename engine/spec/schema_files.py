"""Writing (and checking) the committed JSON Schemas under ``schemas/``.

This is the one place that imports the blocks (and so torch) to read their
signatures; ``validate`` only reads the files it writes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.spec.catalog import SCHEMA_DIR
from engine.spec.skeleton import editor_schema


def generate() -> dict[str, dict[str, Any]]:
    """Every schema file's relative path → its content."""
    import blocks.builtin  # noqa: F401  (registers every built-in block)
    from blocks.registry import REGISTRY
    from blocks.schema import block_schema

    block_schemas = {info.name: block_schema(info) for info in REGISTRY}
    files = {f"blocks/{name}.json": schema for name, schema in block_schemas.items()}
    files["spec.schema.json"] = editor_schema(block_schemas)
    return files


def _text(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def stale(folder: Path = SCHEMA_DIR) -> list[str]:
    """Files that differ from what the code would generate (or should not exist)."""
    files = generate()
    problems = []
    for rel, schema in files.items():
        path = folder / rel
        if not path.is_file() or path.read_text(encoding="utf-8") != _text(schema):
            problems.append(rel)
    for path in sorted((folder / "blocks").glob("*.json")):
        rel = f"blocks/{path.name}"
        if rel not in files:
            problems.append(rel)
    return problems


def write(folder: Path = SCHEMA_DIR) -> list[str]:
    """(Re)write every schema file; delete block schemas of blocks that no longer exist."""
    files = generate()
    (folder / "blocks").mkdir(parents=True, exist_ok=True)
    for path in (folder / "blocks").glob("*.json"):
        if f"blocks/{path.name}" not in files:
            path.unlink()
    for rel, schema in files.items():
        (folder / rel).write_text(_text(schema), encoding="utf-8")
    return sorted(files)

"""Composite blocks defined in YAML: in a spec's ``blocks:`` or in library files.

Libraries (``specs/lib/*.yaml``) hold ``blocks:`` and may ``imports:`` other libraries.
A spec brings them in with ``imports: [lib/esrgan.yaml]`` and then uses their blocks by
name, exactly like built-ins; ``use: lib/x.yaml#Name`` names one block of a file
without importing the rest. Every definition keeps the locations of its own file, so
errors inside a library block point into the library.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Any

from jsonschema import Draft202012Validator

from engine.spec.catalog import Catalog
from engine.spec.diagnostics import Diagnostics, Loc
from engine.spec.paths import PathPolicy
from engine.spec.resolve import display_name, find_file
from engine.spec.schema_check import check_schema
from engine.spec.skeleton import LIBRARY
from engine.spec.yamlio import Doc, as_list, load_yaml

_LIBRARY_VALIDATOR = Draft202012Validator(LIBRARY)


@dataclass
class BlockDef:
    """A composite block: its definition (plain data) and where it was written."""

    name: str
    data: dict[str, Any]
    doc: Doc  # rooted at the definition

    @property
    def loc(self) -> Loc | None:
        return self.doc.loc(())

    @property
    def inputs(self) -> list[str]:
        value = self.data.get("inputs")
        return [str(v) for v in value] if isinstance(value, list) else []


class BlockTable:
    """Every composite block in scope for one spec, by name and by ``file#name``."""

    def __init__(
        self, catalog: Catalog, diags: Diagnostics, policy: PathPolicy | None = None
    ) -> None:
        self.catalog = catalog
        self.diags = diags
        self.policy = policy
        self.defs: dict[str, BlockDef] = {}
        self._files: dict[FsPath, dict[str, BlockDef] | None] = {}

    def add_from(
        self, doc: Doc, section_path: tuple[str, ...] = ("blocks",)
    ) -> dict[str, BlockDef]:
        """Register the blocks under ``section_path`` of ``doc``; return them."""
        found: dict[str, BlockDef] = {}
        blocks = doc.get(section_path)
        if not isinstance(blocks, dict):
            return found
        for name, data in blocks.items():
            if not isinstance(data, dict):
                continue
            path = (*section_path, name)
            if name in self.catalog:
                self.diags.error(
                    doc.key_loc(path),
                    f"block '{name}' is already a built-in block; choose another name",
                )
                continue
            if name in self.defs and self.defs[name].doc.loc(()) != doc.loc(path):
                other = self.defs[name].loc
                self.diags.error(
                    doc.key_loc(path), f"block '{name}' is defined twice (also at {other})"
                )
                continue
            block = BlockDef(name, data, doc.subtree(path))
            self.defs[name] = block
            found[name] = block
        return found

    def import_file(
        self, name: str, relative_to: FsPath | None, at: Loc | None
    ) -> dict[str, BlockDef] | None:
        """Load a library file (once) and bring its blocks into scope."""
        path = find_file(name, relative_to)
        if path is None:
            self.diags.error(
                at, f"library '{name}' not found (looked next to the spec and in specs/)"
            )
            return None
        if self.policy is not None and not self.policy.allows(path):
            self.diags.error(at, f"library {self.policy.refusal(name)}")
            return None
        key = path.resolve()
        if key in self._files:
            return self._files[key]
        self._files[key] = None  # in progress: an import cycle stops here
        doc = load_yaml(path, self.diags, label=display_name(path))
        if doc is None:
            return None
        if not isinstance(doc.data, dict):
            self.diags.error(doc.loc(()), "a library must be a mapping with a 'blocks:' section")
            return None
        check_schema(_LIBRARY_VALIDATOR, doc.data, doc, self.diags)
        for i, sub in enumerate(as_list(doc.data.get("imports"))):
            if isinstance(sub, str):
                self.import_file(sub, path.parent, doc.loc(("imports", i)))
        found = self.add_from(doc)
        self._files[key] = found
        return found

    def lookup(self, name: str, relative_to: FsPath | None, at: Loc | None) -> BlockDef | None:
        """A composite block by plain name or ``file#name`` (None: not a composite)."""
        if "#" in name:
            file, _, block = name.partition("#")
            found = self.import_file(file, relative_to, at)
            if found is None:
                return None
            if block not in found:
                from engine.spec.diagnostics import did_you_mean

                self.diags.error(at, f"no block '{block}' in '{file}'{did_you_mean(block, found)}")
                return None
            return found[block]
        return self.defs.get(name)

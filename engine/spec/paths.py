"""Which files a spec may reach through ``extends:``, ``imports:`` and ``use: FILE#``.

Specs are validated in CI on input from strangers, so a spec may not read files
outside its project: the enclosing repository (the nearest folder above the spec that
holds ``.git`` or a ``loom.toml`` project file) or, without one, the spec's own folder.
Loom's own tree (its libraries, specs and test corpus) is always allowed, and so are
the folders the user names with ``--allow-path DIR`` or in ``loom.toml``::

    [paths]
    allow = ["../shared-specs"]     # relative to loom.toml

Paths are compared after resolving symlinks, so a link cannot lead outside either.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from engine.spec.catalog import SPECS_DIR

PROJECT_FILE = "loom.toml"
#: Loom's own tree: the folder that holds specs/ (and engine/).
LOOM_ROOT = SPECS_DIR.resolve().parent


@dataclass(frozen=True)
class PathPolicy:
    """The folders a spec's references may resolve into."""

    project: Path
    roots: tuple[Path, ...]

    @classmethod
    def for_spec(cls, spec: Path, allow: Sequence[str | Path] = ()) -> PathPolicy:
        project = project_root(spec)
        roots = [project, LOOM_ROOT, *(Path(a).resolve() for a in allow)]
        roots += _project_file_roots(project)
        return cls(project, tuple(dict.fromkeys(roots)))

    def allows(self, path: Path) -> bool:
        real = path.resolve()
        return any(real == root or root in real.parents for root in self.roots)

    def refusal(self, name: str) -> str:
        return (
            f"'{name}' is outside the spec's project ({self.project}); a spec may only "
            "reach files inside it (allow another folder with --allow-path DIR or in "
            f"{PROJECT_FILE})"
        )


def project_root(spec: Path) -> Path:
    """The nearest folder above ``spec`` holding ``.git`` or ``loom.toml``, else its folder."""
    folder = spec.resolve().parent
    for candidate in (folder, *folder.parents):
        if (candidate / ".git").exists() or (candidate / PROJECT_FILE).is_file():
            return candidate
    return folder


def _project_file_roots(project: Path) -> list[Path]:
    path = project / PROJECT_FILE
    if not path.is_file():
        return []
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return []  # an unreadable project file allows nothing more
    allow = data.get("paths", {}).get("allow", []) if isinstance(data, dict) else []
    return [(project / a).resolve() for a in allow if isinstance(a, str)]

"""Loom's engine: specs in, trained image models out.

The public API is small and torch-free to import:

* :func:`load_spec` — load, resolve (``extends:``, overrides) and validate a spec;
  returns a :class:`Spec` or raises :class:`SpecError` listing every problem.
* :func:`build` — compile every network of a spec into a ``torch.fx.GraphModule``
  (imports torch on first use).
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine.load import Spec, check_spec, load_spec
from engine.spec.diagnostics import Diagnostic, SpecError

__all__ = ["Diagnostic", "Spec", "SpecError", "build", "check_spec", "load_spec"]


def build(spec_or_path: Spec | str | Path, overrides: Sequence[str] = (), **options: Any) -> Any:
    """Compile a spec's networks: ``{name: torch.fx.GraphModule}``; see engine.compile.build."""
    from engine.compile.build import build as _build

    return _build(spec_or_path, overrides, **options)

"""Loom's engine: specs in, trained image models out.

The public API is small and torch-free to import:

* :func:`load_spec` — load, resolve (``extends:``, overrides) and validate a spec;
  returns a :class:`Spec` or raises :class:`SpecError` listing every problem.
"""

from engine.spec.diagnostics import Diagnostic, SpecError
from engine.spec.load import Spec, check_spec, load_spec

__all__ = ["Diagnostic", "Spec", "SpecError", "check_spec", "load_spec"]

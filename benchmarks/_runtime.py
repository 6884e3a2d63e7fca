"""A training run prepared up to its first iteration, for benchmarks that time steps.

``prepared_run`` goes through the runner's own set-up (networks, optimizers, data when
asked, Accelerate, the step program) and enters a phase, so a benchmark can call
``run.iteration(i, phase, batch)`` — exactly what the training loop calls.
"""

from __future__ import annotations

import io
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def prepared_run(spec: str, overrides: list[str], *, phase: int, data: bool = False) -> Any:
    """The runner of ``specs/<spec>`` with ``overrides``, in phase ``phase``."""
    from engine import load_spec
    from engine.train.runner import prepare

    loaded = load_spec(ROOT / "specs" / spec, overrides)
    out = Path(tempfile.mkdtemp(prefix="loom-bench-"))
    run = prepare(loaded, out, stream=io.StringIO(), live=False, data=data)
    assert loaded.settings.train is not None
    run.phase = loaded.settings.train.phases[phase]
    run.enter_phase(run.phase)
    return run

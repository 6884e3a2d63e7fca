"""A training run prepared up to its first iteration, for benchmarks that time steps.

``prepared_run`` goes through the runner's own set-up (networks, optimizers, data when
asked, Accelerate, the step program) and enters a phase, so a benchmark can call
``run._iteration(i, phase, batch)`` — exactly what the training loop calls.
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
    from engine.graph.training import gradient_networks
    from engine.train.phases import phases_of
    from engine.train.program import Program
    from engine.train.runner import _Run

    loaded = load_spec(ROOT / "specs" / spec, overrides)
    out = Path(tempfile.mkdtemp(prefix="loom-bench-"))
    run = _Run(loaded, out, None, io.StringIO(), False, None)
    run._networks()
    run._optimizers()
    if data:
        run._data()
    else:
        run.world, run.rank = 1, 0
    run._prepare()
    run.bad = 0
    run.phases = phases_of(run.train_cfg)
    reach = gradient_networks(loaded.training, loaded.networks)
    run.program = Program(
        loaded.training, run.networks, run.ops, run.losses, reach, autocast=run.accelerator.autocast
    )
    run.phase = run.phases[phase]
    run._enter_phase(run.phase)
    return run

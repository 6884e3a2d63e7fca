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


def race_against_hand_loops(
    title: str, contenders: dict[str, Any], *, repeats: int, clock: str, difference: float
) -> None:
    """Time Loom's iteration against the hand loops (``loom``, ``hand``: the same compiled
    network, ``module``: the plain module) in interleaved rounds, rotating who goes
    first, and print the medians and the median per-round ratios, and each one's minor
    page faults (memory the allocator maps afresh: system time that a CPU clock
    counts)."""
    import resource
    import statistics
    import time

    for fn in contenders.values():  # warm-up: allocator, kernels, optimizer state
        fn()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    faults: dict[str, list[int]] = {name: [] for name in contenders}
    order = list(contenders.items())
    tick = time.perf_counter if clock == "wall" else time.process_time
    for i in range(repeats):
        for name, fn in order[i % 3 :] + order[: i % 3]:
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            start = tick()
            fn()
            times[name].append(tick() - start)
            faults[name].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)

    def ratio(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(times[a], times[b], strict=True))

    median = {name: statistics.median(t) for name, t in times.items()}
    print(title)
    print(f"  outputs, plain module vs compiled: max abs difference {difference:.2e}")
    print(
        f"  medians: Loom {median['loom']:.3f}s, hand loop on the compiled network "
        f"{median['hand']:.3f}s, hand loop on the plain module {median['module']:.3f}s"
    )
    print(
        "  median minor page faults an iteration: "
        + ", ".join(f"{name} {statistics.median(f):.0f}" for name, f in faults.items())
    )
    print(
        f"  median ratio Loom / hand loop {ratio('loom', 'hand'):.3f}, "
        f"Loom / plain module {ratio('loom', 'module'):.3f} (target ≤ 1.05)"
    )

"""How training's figures read as text: durations, numbers, trends, memory.

Shared by the plain ``key=value`` lines (:mod:`engine.train.report`) and the terminal
dashboard (:mod:`engine.train.dashboard`); it imports neither.
"""

from __future__ import annotations

import math
from typing import Any

SPARK = "▁▂▃▄▅▆▇█"


def duration(seconds: float) -> str:
    """3725.0 → '1:02:05', 65.0 → '1:05'; '?' when it is not known (inf, nan)."""
    if not math.isfinite(seconds):
        return "?"
    h, rest = divmod(int(seconds), 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def number(value: Any) -> str:
    """A float to 4 significant digits; anything else as ``str`` gives it."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def sparkline(values: list[float]) -> str:
    """A trend in block characters scaled to its own range; '!' marks inf or nan."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return ""
    lo, hi = min(finite), max(finite)
    span = hi - lo or 1.0
    return "".join(
        SPARK[min(int((v - lo) / span * (len(SPARK) - 1)), len(SPARK) - 1)]
        if math.isfinite(v)
        else "!"
        for v in values
    )


def memory_text() -> str:
    """Peak memory so far: the GPU's when there is one, else the resident set's."""
    try:
        import torch  # already imported by training; absent in torch-free tools

        if torch.cuda.is_available():
            return f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB (GPU peak)"
    except ImportError:  # pragma: no cover
        pass
    try:
        import resource

        return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB (RSS peak)"
    except (ImportError, OSError):  # pragma: no cover
        return "?"

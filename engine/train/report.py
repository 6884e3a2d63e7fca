"""Where training tells what it does: metrics.jsonl, train.log, and the console.

On a terminal the console is a rich Live dashboard (spec, phase, iteration / total,
it/s, ETA, each loss with a small trend, learning rates, last validation and best,
memory, last checkpoint). Elsewhere (CI, nohup, pipes) it prints plain ``key=value``
lines with no control codes. Only the main process reports.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from engine.train.format import duration, number

#: The dashboard's smoothing factor per iteration: the average's memory is about
#: 1 / (1 - 0.98) = 50 iterations.
SMOOTHING = 0.98


@dataclass
class Reporter:
    """Writes events to the run folder and shows progress."""

    run_dir: Path
    name: str
    total: int
    every: int
    main: bool = True
    stream: TextIO = field(default_factory=lambda: sys.stdout)
    live: bool | None = None  # None: a rich dashboard when the stream is a terminal
    trends: dict[str, deque[float]] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    tracker: Any = None  # the run's trackers (engine/train/trackers.py), when it has any
    #: The smoothed loss beside the raw one: an exponential moving average over every
    #: iteration, bias-corrected so that it starts at the first values and not at 0.
    smoothed: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.started = time.perf_counter()
        self.start_iter: int | None = None
        self._ema: dict[str, tuple[int, float]] = {}
        self._dash = None
        if not self.main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics = (self.run_dir / "metrics.jsonl").open("a", encoding="utf-8")
        self.log_file = (self.run_dir / "train.log").open("a", encoding="utf-8")
        if self.live is None:
            self.live = self.stream.isatty()
        if self.live:
            from engine.train.dashboard import Dashboard  # rich, for a terminal only

            self._dash = Dashboard(self, self.stream)

    # ---------------------------------------------------------------- events
    def event(self, record: dict[str, Any]) -> None:
        """One JSON object per line in metrics.jsonl."""
        if self.main:
            self.metrics.write(json.dumps(record, allow_nan=True) + "\n")
            self.metrics.flush()
            if self.tracker is not None:
                numbers = {
                    k: v for k, v in record.items() if isinstance(v, float | int) and k != "iter"
                }
                self.tracker.log(numbers, step=record["iter"])

    def log(self, text: str, *, console: bool = True) -> None:
        if not self.main:
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        self.log_file.write(f"{stamp} {text}\n")
        self.log_file.flush()
        if console:
            if self._dash is not None:
                self._dash.message(text)
            else:
                print(text, file=self.stream, flush=True)

    def progress(
        self, iteration: int, phase: str, losses: dict[str, float], lrs: dict[str, float]
    ) -> None:
        """Called every iteration; logs and renders every ``every`` iterations."""
        if not self.main:
            return
        if self.start_iter is None:
            self.start_iter = iteration - 1
            self.started = time.perf_counter()
        for key, value in losses.items():
            self.trends.setdefault(key, deque(maxlen=24)).append(value)
            self._smooth(key, value)
        done = iteration - self.start_iter
        elapsed = time.perf_counter() - self.started
        speed = done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - iteration) / speed if speed > 0 else float("inf")
        self.state.update(
            iteration=iteration, phase=phase, losses=losses, lrs=lrs, speed=speed, eta=eta
        )
        if iteration % self.every == 0 or iteration == self.total:
            record = {"iter": iteration, "phase": phase}
            record.update({f"loss/{k}": v for k, v in losses.items()})
            record.update({f"lr/{k}": v for k, v in lrs.items()})
            self.event(record)
            line = " ".join(
                [
                    f"iter={iteration}/{self.total}",
                    f"phase={phase}",
                    f"it/s={speed:.2f}",
                    f"eta={duration(eta)}",
                ]
                + [f"loss/{k}={number(v)}" for k, v in losses.items()]
                + [f"lr/{k}={v:.3g}" for k, v in lrs.items()]
            )
            self.log(line, console=self._dash is None)
        if self._dash is not None:
            self._dash.update()

    def _smooth(self, key: str, value: float) -> None:
        """Fold one raw loss into its moving average (non-finite values are left out:
        one NaN step would otherwise hide every later value)."""
        if not math.isfinite(value):
            return
        steps, average = self._ema.get(key, (0, 0.0))
        steps, average = steps + 1, SMOOTHING * average + (1 - SMOOTHING) * value
        self._ema[key] = (steps, average)
        self.smoothed[key] = average / (1 - SMOOTHING**steps)

    def validation(
        self, iteration: int, phase: str, values: dict[str, float], best: dict[str, float]
    ) -> None:
        if not self.main:
            return
        self.state.update(val=values, best=best)
        self.event(
            {"iter": iteration, "phase": phase, **{f"val/{k}": v for k, v in values.items()}}
        )
        if self.tracker is not None:
            self.tracker.samples(iteration)
        text = " ".join(f"val/{k}={v:.4f}" for k, v in values.items())
        self.log(
            f"iter={iteration} {text} " + " ".join(f"best/{k}={v:.4f}" for k, v in best.items())
        )

    def checkpoint(self, path: Path) -> None:
        self.state["checkpoint"] = path.name
        self.log(f"checkpoint saved: {path}")

    def close(self) -> None:
        if not self.main:
            return
        if self._dash is not None:
            self._dash.stop()
        self.metrics.close()
        self.log_file.close()

"""The rich Live dashboard shown when training runs in a terminal."""

from __future__ import annotations

from collections import deque
from typing import Any, Protocol, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from engine.train.format import duration, memory_text, number, sparkline


class Progress(Protocol):
    """What the dashboard shows: the reporter's latest state (see ``Reporter``)."""

    name: str
    total: int
    state: dict[str, Any]
    trends: dict[str, deque[float]]
    smoothed: dict[str, float]  # each loss's moving average (report.SMOOTHING)


class Dashboard:
    """A live panel of a run's progress, redrawn on every update."""

    def __init__(self, reporter: Progress, stream: TextIO) -> None:
        self.reporter = reporter
        self.console = Console(file=stream)
        self.messages: list[str] = []
        self.live = Live(
            self._render(), console=self.console, refresh_per_second=4, transient=False
        )
        self.live.start()

    def message(self, text: str) -> None:
        self.messages = [*self.messages[-4:], text]
        self.update()

    def update(self) -> None:
        self.live.update(self._render())

    def stop(self) -> None:
        self.live.update(self._render())
        self.live.stop()

    def _render(self) -> Any:
        r = self.reporter
        s = r.state
        iteration = s.get("iteration", 0)
        head = Table.grid(padding=(0, 2))
        head.add_row(
            Text(r.name, style="bold"),
            Text(f"phase {s.get('phase', '-')}", style="cyan"),
            Text(f"{iteration}/{r.total}"),
            Text(f"{s.get('speed', 0):.2f} it/s"),
            Text(f"ETA {duration(s.get('eta', float('inf')))}"),
        )
        bar = Table.grid()
        bar.add_row(ProgressBar(total=max(r.total, 1), completed=iteration, width=60))
        losses = Table("loss", "value", "smoothed", "trend", box=None, padding=(0, 2))
        for key, value in s.get("losses", {}).items():
            smooth = r.smoothed.get(key)
            losses.add_row(
                key,
                number(value),
                "-" if smooth is None else number(smooth),
                sparkline(list(r.trends.get(key, []))),
            )
        side = Table("", "", box=None, padding=(0, 2), show_header=False)
        for key, value in s.get("lrs", {}).items():
            side.add_row(f"lr/{key}", f"{value:.3g}")
        for key, value in s.get("val", {}).items():
            best = s.get("best", {}).get(key)
            side.add_row(
                f"val/{key}", f"{value:.4f}" + (f" (best {best:.4f})" if best is not None else "")
            )
        side.add_row("memory", memory_text())
        side.add_row("checkpoint", s.get("checkpoint", "-"))
        body = Table.grid(padding=(0, 4))
        body.add_row(losses, side)
        log = Text("\n".join(self.messages[-5:]), style="dim")
        return Panel(Group(head, bar, body, log), title="Loom", border_style="blue")

"""The phase schedule: which steps run at an iteration, with which loss weights."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.checks import iteration_of


@dataclass(frozen=True)
class Step:
    optimizer: str
    weights: dict[str, Any]  # loss → number or ramp {from, to, over}
    every: int = 1
    start: int = 0
    accumulate: int = 1

    def active(self, iteration: int, phase_start: int) -> bool:
        offset = iteration - phase_start
        return offset >= self.start and (offset - self.start) % self.every == 0

    def weight_values(self, iteration: int, phase_start: int, total: int) -> dict[str, float]:
        return {
            loss: _weight(w, iteration - phase_start, total) for loss, w in self.weights.items()
        }


@dataclass(frozen=True)
class Phase:
    name: str
    start: int
    end: int
    steps: tuple[Step, ...]
    frozen: tuple[str, ...]
    lr: dict[str, float]


def _weight(value: Any, offset: int, total: int) -> float:
    if isinstance(value, dict):
        over = iteration_of(value["over"], total) or 1
        progress = min(offset / max(over, 1), 1.0)
        return float(value["from"]) + (float(value["to"]) - float(value["from"])) * progress
    return float(value)


def phases_of(train: dict[str, Any]) -> list[Phase]:
    total = int(train["iterations"])
    found = []
    start = 0
    for raw in train["phases"]:
        end = iteration_of(raw["until"], total) if "until" in raw else total
        steps = tuple(
            Step(
                optimizer=s["optimizer"],
                weights=dict(s["minimize"]),
                every=int(s.get("every", 1)),
                start=int(s.get("start", 0)),
                accumulate=int(s.get("accumulate", 1)),
            )
            for s in raw["steps"]
        )
        found.append(
            Phase(
                raw["name"],
                start,
                end,
                steps,
                tuple(raw.get("frozen") or ()),
                dict(raw.get("lr") or {}),
            )
        )
        start = end
    return found


def phase_at(phases: list[Phase], iteration: int) -> Phase:
    for phase in phases:
        if iteration < phase.end:
            return phase
    return phases[-1]

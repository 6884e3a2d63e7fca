"""Learning-rate schedules: a multiplier of the base lr as a function of the iteration.

Every kind is a pure function of the iteration (so milestones as fractions, warm-up
and restarts compose, and a resumed run recomputes the same values), except
``plateau``, whose factor follows validation results and is saved with the run.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypedDict, cast

from engine.settings import ScheduleSettings
from engine.spec.skeleton import SCHEDULERS

_Factor = Callable[[ScheduleSettings, int, int], float]


def _cycle(s: ScheduleSettings, it: int) -> tuple[int, int, float]:
    """For restarts: the current period's length, its first iteration and its weight."""
    offset = 0
    weights = s.restart_weights
    for i, period in enumerate(s.periods):
        if it < offset + period or i == len(s.periods) - 1:
            return period, offset, weights[min(i, len(weights) - 1)]
        offset += period
    return s.periods[-1], offset, weights[-1]


def _multistep_restarts(s: ScheduleSettings, it: int, total: int) -> float:
    period, offset, weight = _cycle(s, it)
    return weight * s.gamma ** sum(it - offset >= m for m in s.milestones if m < period)


def _cosine(s: ScheduleSettings, it: int, total: int) -> float:
    period, offset, weight = _cycle(s, it)
    progress = min((it - offset) / max(period, 1), 1.0)
    return s.eta_min + (weight - s.eta_min) * 0.5 * (1 + math.cos(math.pi * progress))


def _linear_decay(s: ScheduleSettings, it: int, total: int) -> float:
    if it < s.start:
        return 1.0
    return max(0.0, 1.0 - (it - s.start) / max(total - s.start, 1))


def _onecycle(s: ScheduleSettings, it: int, total: int) -> float:
    peak_at = max(int(0.3 * total), 1)
    if it < peak_at:
        return s.peak * (0.04 + 0.96 * it / peak_at)
    return s.peak * max(0.0, 1.0 - (it - peak_at) / max(total - peak_at, 1))


#: Each built-in kind's multiplier; ``torch`` replays a torch scheduler, ``plateau``
#: starts at 1 and follows validation.
FACTORS: dict[str, _Factor] = {
    "constant": lambda s, it, total: 1.0,
    "multistep": lambda s, it, total: s.gamma ** sum(it >= m for m in s.milestones),
    "multistep_restarts": _multistep_restarts,
    "step": lambda s, it, total: s.gamma ** (it // s.step_size),
    "exponential": lambda s, it, total: s.gamma ** (it / max(total, 1)),
    "cosine": _cosine,
    "cosine_restarts": _cosine,
    "linear_decay": _linear_decay,
    "onecycle": _onecycle,
    "plateau": lambda s, it, total: 1.0,
}
assert set(FACTORS) | {"torch"} == set(SCHEDULERS), "a scheduler kind without its factor"


class PlateauState(TypedDict):
    """What a plateau schedule has learned from validation; saved with the run."""

    factor: float  # the multiplier so far: gamma per reduction
    best: float | None  # the best metric value seen
    bad: int  # validations since the last improvement


class Schedule:
    """One optimizer's schedule, with the plateau state when it follows a metric."""

    def __init__(self, settings: ScheduleSettings | None, total: int) -> None:
        self.settings = settings
        self.total = total
        self._replay: Callable[[int], float] | None = None
        if settings is not None and settings.type == "torch":
            self._replay = _torch_replay(settings)
        self.plateau: PlateauState = {"factor": 1.0, "best": None, "bad": 0}

    def __call__(self, iteration: int) -> float:
        s = self.settings
        if s is None:
            return 1.0
        value = (
            self._replay(iteration)
            if self._replay is not None
            else FACTORS[s.type](s, iteration, self.total)
        )
        if s.warmup and iteration < s.warmup:
            value *= (iteration + 1) / s.warmup
        return value * self.plateau["factor"]

    def observe(self, values: dict[str, float]) -> str | None:
        """A plateau schedule reads the validation metrics; says when it lowered the lr."""
        s = self.settings
        if s is None or s.type != "plateau" or s.metric not in values:
            return None
        value, p = values[s.metric], self.plateau
        better = p["best"] is None or (value > p["best"] if s.mode == "max" else value < p["best"])
        if better:
            p["best"], p["bad"] = value, 0
            return None
        p["bad"] += 1
        if p["bad"] <= s.patience:
            return None
        p["factor"] *= s.gamma
        p["bad"] = 0
        return f"{s.metric} has not improved; lr × {s.gamma}"

    def state_dict(self) -> dict[str, Any]:
        return dict(self.plateau)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # What state_dict() gave, back from torch.load (which returns Any).
        self.plateau.update(cast(PlateauState, state))


def _torch_replay(settings: ScheduleSettings) -> Callable[[int], float]:
    """A torch.optim.lr_scheduler class, replayed on a dummy optimizer of lr 1.

    The multiplier at iteration N is what the scheduler gives after N steps, so it is a
    pure function of the iteration (resume recomputes it) like the built-in schedules.
    """
    import torch
    import torch.optim.lr_scheduler as schedulers

    dummy = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = getattr(schedulers, str(settings.name))(dummy, **dict(settings.options))
    values: list[float] = []

    def factor(it: int) -> float:
        while len(values) <= it:
            values.append(float(dummy.param_groups[0]["lr"]))
            dummy.step()
            scheduler.step()
        return values[it]

    return factor

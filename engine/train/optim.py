"""Optimizers and learning-rate schedules from the ``optimizers:`` section.

Parameters are selected by the same selectors ``validate`` checks (a network, a node
path prefix, or a glob over qualified node names such as ``G.body.3.rdb1.conv2``).
Schedules are plain functions of the iteration (a multiplier of each group's base
lr), so milestones given as fractions of training, warm-up and restarts compose, and
a resumed run recomputes the same values from the iteration alone.
"""

from __future__ import annotations

import fnmatch
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from engine.checks import iteration_of

#: Lower-case names → torch.optim classes.
OPTIMIZER_CLASSES: dict[str, type[torch.optim.Optimizer]] = {
    name.lower(): cls
    for name, cls in vars(torch.optim).items()
    if inspect.isclass(cls)
    and issubclass(cls, torch.optim.Optimizer)
    and cls is not torch.optim.Optimizer
}

_PASSED_THROUGH = ("betas", "eps", "weight_decay", "momentum", "nesterov", "amsgrad")


def named_parameters(networks: dict[str, nn.Module]) -> dict[str, nn.Parameter]:
    """Every parameter by qualified name: ``G.body.0.rdb1.conv1.weight``."""
    return {
        f"{net}.{name}": param
        for net, module in networks.items()
        for name, param in module.named_parameters()
    }


def select(selector: str, params: dict[str, nn.Parameter]) -> list[str]:
    """Qualified parameter names matched by a selector (network, node prefix or glob)."""
    if any(ch in selector for ch in "*?["):
        node_of = {name: name.rsplit(".", 1)[0] for name in params}
        return [
            n
            for n in params
            if fnmatch.fnmatchcase(node_of[n], selector) or fnmatch.fnmatchcase(n, selector)
        ]
    return [n for n in params if n == selector or n.startswith(selector + ".")]


def _selectors(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value or [])


def build_optimizer(
    name: str, section: dict[str, Any], params: dict[str, nn.Parameter]
) -> tuple[torch.optim.Optimizer, list[str]]:
    """One optimizer and the qualified names of the parameters it owns."""
    owned: list[str] = []
    for selector in _selectors(section["params"]):
        owned += [n for n in select(selector, params) if n not in owned]
    options = {
        k: (tuple(v) if k == "betas" else v) for k, v in section.items() if k in _PASSED_THROUGH
    }
    options.update(section.get("options") or {})
    cls = OPTIMIZER_CLASSES[section["type"].lower()]
    accepted = inspect.signature(cls).parameters
    if "foreach" in accepted and "fused" not in options and "foreach" not in options:
        options["foreach"] = True  # one kernel per parameter group step, not per tensor
    groups = []
    rest = list(owned)
    for group in section.get("groups") or []:
        members = [n for s in _selectors(group["params"]) for n in select(s, params) if n in rest]
        rest = [n for n in rest if n not in members]
        extra = {k: v for k, v in group.items() if k != "params"}
        groups.append({"params": [params[n] for n in members], "names": members, **extra})
    groups.insert(0, {"params": [params[n] for n in rest], "names": rest})
    groups = [g for g in groups if g["params"]]
    optimizer = cls(
        [{k: v for k, v in g.items() if k != "names"} for g in groups], lr=section["lr"], **options
    )
    for group, spec_group in zip(optimizer.param_groups, groups, strict=True):
        group["base_lr"] = group["lr"]
        group["names"] = spec_group["names"]
    return optimizer, owned


@dataclass
class Schedule:
    """A multiplier of the base learning rate as a function of the iteration."""

    factor: Callable[[int], float]
    metric: str | None = None  # plateau schedules read a validation metric

    def __call__(self, iteration: int) -> float:
        return self.factor(iteration)


def build_schedule(section: dict[str, Any] | None, total: int) -> Schedule:
    """The multiplier function of one optimizer's ``scheduler:``."""
    if not section:
        return Schedule(lambda it: 1.0)
    kind = section["type"]
    if kind == "torch":
        return _torch_schedule(section)
    gamma = float(section.get("gamma", 0.5 if kind.startswith("multistep") else 0.1))

    def at(value: Any, default: int) -> int:
        found = iteration_of(value, total) if value is not None else None
        return default if found is None else found

    milestones = sorted(at(m, total) for m in section.get("milestones") or [])
    periods = [at(p, total) for p in section.get("periods") or []] or [total]
    restart_weights = list(section.get("restart_weights") or [1.0] * len(periods))
    eta_min_ratio = float(section.get("eta_min", 0.0))
    start = at(section.get("start"), total // 2)
    step_size = at(section.get("step_size"), max(total // 3, 1))
    warmup = int(section.get("warmup", 0))

    def base(it: int) -> float:
        if kind == "constant":
            return 1.0
        if kind == "multistep":
            return gamma ** sum(it >= m for m in milestones)
        if kind == "multistep_restarts":
            period, offset, weight = _cycle(it, periods, restart_weights)
            return weight * gamma ** sum(it - offset >= m for m in milestones if m < period)
        if kind == "step":
            return gamma ** (it // step_size)
        if kind == "exponential":
            return gamma ** (it / max(total, 1))
        if kind in ("cosine", "cosine_restarts"):
            period, offset, weight = _cycle(it, periods, restart_weights)
            progress = min((it - offset) / max(period, 1), 1.0)
            return eta_min_ratio + (weight - eta_min_ratio) * 0.5 * (
                1 + math.cos(math.pi * progress)
            )
        if kind == "linear_decay":
            if it < start:
                return 1.0
            return max(0.0, 1.0 - (it - start) / max(total - start, 1))
        if kind == "onecycle":
            peak = max(int(0.3 * total), 1)
            if it < peak:
                return 0.04 + 0.96 * it / peak
            return max(0.0, 1.0 - (it - peak) / max(total - peak, 1))
        return 1.0  # plateau: adjusted from validation results, not by the iteration

    def factor(it: int) -> float:
        value = base(it)
        if warmup and it < warmup:
            value *= (it + 1) / warmup
        return value

    return Schedule(factor, metric=section.get("metric") if kind == "plateau" else None)


def _torch_schedule(section: dict[str, Any]) -> Schedule:
    """A torch.optim.lr_scheduler class, replayed on a dummy optimizer of lr 1.

    The multiplier at iteration N is what the scheduler gives after N steps, so it is a
    pure function of the iteration (resume recomputes it) like the built-in schedules.
    """
    import torch.optim.lr_scheduler as schedulers

    dummy = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = getattr(schedulers, section["name"])(dummy, **(section.get("options") or {}))
    values: list[float] = []

    def factor(it: int) -> float:
        while len(values) <= it:
            values.append(float(dummy.param_groups[0]["lr"]))
            dummy.step()
            scheduler.step()
        return values[it]

    return Schedule(factor)


def _cycle(it: int, periods: list[int], weights: list[float]) -> tuple[int, int, float]:
    """For restarts: the current period's length, its first iteration and its weight."""
    offset = 0
    for i, period in enumerate(periods):
        if it < offset + period or i == len(periods) - 1:
            return period, offset, weights[min(i, len(weights) - 1)]
        offset += period
    return periods[-1], offset, weights[-1]


def apply_lr(optimizer: torch.optim.Optimizer, factor: float, scale: float = 1.0) -> None:
    """Set every group's lr to base × schedule factor × phase scale."""
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor * scale

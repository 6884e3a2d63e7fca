"""Optimizers from their settings: torch.optim classes over selected parameters.

Parameters are selected by the same selectors ``validate`` checks (a network, a node
path prefix, or a glob over qualified node names such as ``G.body.3.rdb1.conv2``).
Schedules live in schedules.py.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from engine.settings import OptimizerSettings
from engine.spec.skeleton import OPTIMIZERS

#: The optimizers a spec may name (``OPTIMIZERS``, checked by ``validate``) → their
#: torch.optim classes, each called as ``cls(param_groups, lr=..., **options)`` (the
#: base class itself takes no ``lr``, so they are typed as what they are called as).
OPTIMIZER_CLASSES: dict[str, Callable[..., torch.optim.Optimizer]] = {
    name.lower(): cls
    for name, cls in vars(torch.optim).items()
    if name.lower() in OPTIMIZERS
    and inspect.isclass(cls)
    and issubclass(cls, torch.optim.Optimizer)
}


def named_parameters(networks: dict[str, nn.Module]) -> dict[str, nn.Parameter]:
    """Every parameter by qualified name: ``G.body.0.rdb1.conv1.weight``."""
    return {
        f"{net}.{name}": param
        for net, module in networks.items()
        for name, param in module.named_parameters()
    }


def build_optimizer(
    settings: OptimizerSettings,
    params: dict[str, nn.Parameter],
    select: Callable[[str], list[str]],
) -> tuple[torch.optim.Optimizer, list[str]]:
    """One optimizer and the qualified names of the parameters it owns.

    ``select`` gives the parameter names a selector names (validation uses the same
    rule on the same nodes, so what validates is what trains).
    """
    owned: list[str] = []
    for selector in settings.params:
        owned += [n for n in select(selector) if n not in owned]
    options = settings.kwargs
    cls = OPTIMIZER_CLASSES[settings.type]
    accepted = inspect.signature(cls).parameters
    if "foreach" in accepted and "fused" not in options and "foreach" not in options:
        options["foreach"] = True  # one kernel per parameter group step, not per tensor
    groups: list[dict[str, Any]] = []
    rest = list(owned)
    for group in settings.groups:
        members = [n for s in group.params for n in select(s) if n in rest]
        rest = [n for n in rest if n not in members]
        extra = {
            k: v
            for k, v in (("lr", group.lr), ("weight_decay", group.weight_decay))
            if v is not None
        }
        groups.append(
            {
                "params": [params[n] for n in members],
                "names": members,
                "hold": group.hold,
                **extra,
            }
        )
    groups.insert(0, {"params": [params[n] for n in rest], "names": rest, "hold": None})
    groups = [g for g in groups if g["params"]]
    ours = ("names", "hold")  # kept on the live groups, not passed to the optimizer
    optimizer = cls(
        [{k: v for k, v in g.items() if k not in ours} for g in groups], lr=settings.lr, **options
    )
    for live, spec_group in zip(optimizer.param_groups, groups, strict=True):
        live["base_lr"] = live["lr"]
        for key in ours:
            live[key] = spec_group[key]
    return optimizer, owned


def held(group: dict[str, Any], iteration: int) -> bool:
    """Whether a live parameter group is held (not stepped) at ``iteration``."""
    hold = group.get("hold")
    return hold is not None and hold[0] <= iteration < hold[1]


def apply_lr(
    optimizer: torch.optim.Optimizer, factor: float, scale: float = 1.0, *, iteration: int
) -> None:
    """Set every group's lr to base × schedule factor × phase scale; a held group reads
    0. The schedule runs on the run's iterations, so a group joins it where it then
    stands, as a separate optimizer first stepped there would."""
    for group in optimizer.param_groups:
        group["lr"] = 0.0 if held(group, iteration) else group["base_lr"] * factor * scale


def hold_delayed(optimizer: torch.optim.Optimizer, iteration: int) -> None:
    """Drop the gradients of the groups held at ``iteration``, before a step.

    torch's optimizers skip a parameter without a gradient entirely, so while held a
    group's parameters keep their exact values, its optimizer state (Adam's moments
    and step count) does not move and weight decay does not touch it. A group held from
    iteration 0 starts with an empty state when its hold ends, as a separate optimizer
    first stepped there would (SFTGAN's parameters other than SFT). Gradient clipping,
    which comes after this, sees only the groups that step.
    """
    for group in optimizer.param_groups:
        if held(group, iteration):
            for param in group["params"]:
                param.grad = None

"""The ``optimizers:`` section: one optimizer per entry, its groups, clip and schedule."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.settings.base import Reader, setting
from engine.settings.schedule import ScheduleSettings, parse_schedule

#: Spec keys passed to the torch optimizer as keyword arguments.
PASSED_THROUGH = ("betas", "eps", "weight_decay", "momentum", "nesterov", "amsgrad")


@dataclass(frozen=True)
class GroupSettings:
    """A parameter group: selected parameters with their own lr or weight decay."""

    params: tuple[str, ...] = setting(doc="selectors of the group's parameters")
    lr: float | None = setting(None, "the group's lr", shown="the optimizer's")
    weight_decay: float | None = setting(None, "the group's weight decay")
    hold: tuple[int, int] | None = setting(
        None,
        "`[from, until]`: iterations (or fractions) in which the group is not stepped; "
        "its parameters and optimizer state stay as they are and its lr reads 0",
        shown="none",
    )


@dataclass(frozen=True)
class ClipSettings:
    norm: float | None = setting(None, "clip the gradients' total norm to this")
    value: float | None = setting(None, "clip each gradient element to ±this")


@dataclass(frozen=True)
class OptimizerSettings:
    name: str
    type: str = setting(doc="a torch.optim class by lower-case name (adam, adamw, sgd, …)")
    params: tuple[str, ...] = setting(doc="selectors: a network, a node path, or a glob")
    lr: float = setting(doc="the base learning rate")
    options: tuple[tuple[str, Any], ...] = setting(
        (), "keyword arguments of the optimizer (betas, eps, weight_decay, … and `options:`)"
    )
    groups: tuple[GroupSettings, ...] = setting((), "parameter groups with their own lr")
    clip: ClipSettings = setting(
        ClipSettings(), "gradient clipping (`{norm}` or `{value}`)", shown="none"
    )
    scheduler: ScheduleSettings | None = setting(None, "the lr schedule", shown="constant")

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.options)


def _selectors(value: Any) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


def _group_hold(
    r: Reader, index: int, group: dict[str, Any], total: int | None
) -> tuple[int, int] | None:
    """``groups[index].hold`` as two iterations, checked against training and each other."""
    if "hold" not in group or total is None:
        return None
    base = ("groups", index, "hold")
    ends = [
        r.iteration_at((*base, i), value, total, allow_zero=True)
        for i, value in enumerate(group["hold"])
    ]
    begin, end = ends
    if begin is None or end is None:
        return None
    if end <= begin:
        r.error(
            base,
            f"{r.where(*base)}: holds from iteration {begin} until {end}, which is no "
            "iteration at all; write [from, until] with until after from",
        )
        return None
    if begin == 0 and end == total:
        r.warning(base, f"{r.where(*base)}: the group is held for all of training")
    return begin, end


def parse_optimizer(r: Reader, name: str, total: int | None) -> OptimizerSettings:
    s = r.section
    options: dict[str, Any] = {
        k: (tuple(v) if k == "betas" else v) for k, v in s.items() if k in PASSED_THROUGH
    }
    for key, value in (s.get("options") or {}).items():
        if key in options:
            r.error(
                ("options", key),
                f"{r.where('options', key)}: '{key}' is also given as {r.where(key)}; "
                "keep one of them",
            )
        options[key] = value
    groups = tuple(
        GroupSettings(
            params=_selectors(g["params"]),
            lr=None if "lr" not in g else float(g["lr"]),
            weight_decay=None if "weight_decay" not in g else float(g["weight_decay"]),
            hold=_group_hold(r, i, g, total),
        )
        for i, g in enumerate(s.get("groups") or ())
    )
    clip = s.get("clip") or {}
    scheduler = None
    if s.get("scheduler") is not None and total is not None:
        scheduler = parse_schedule(r.sub("scheduler"), total, float(s["lr"]))
    return OptimizerSettings(
        name=name,
        type=str(s["type"]).lower(),
        params=_selectors(s["params"]),
        lr=float(s["lr"]),
        options=tuple(options.items()),
        groups=groups,
        clip=ClipSettings(norm=clip.get("norm"), value=clip.get("value")),
        scheduler=scheduler,
    )

"""An optimizer's ``scheduler:``: its kind and the keys that kind reads.

Points in training (milestones, periods, ``start``, ``step_size``) are resolved here
to iterations, once, and checked against ``train.iterations``. A key that the chosen
kind does not read is an error, never silently ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

from engine.settings.base import LOWER_IS_BETTER, Reader, setting
from engine.spec.diagnostics import quote_list
from engine.spec.skeleton import SCHEDULERS

Kind = Literal[
    "torch",
    "constant",
    "multistep",
    "multistep_restarts",
    "step",
    "cosine",
    "cosine_restarts",
    "linear_decay",
    "exponential",
    "plateau",
    "onecycle",
]

_ALWAYS = ("type", "warmup")
#: The keys each kind reads (besides ``type`` and ``warmup``).
USED_KEYS: dict[str, tuple[str, ...]] = {
    "torch": ("name", "options"),
    "constant": (),
    "multistep": ("milestones", "gamma"),
    "multistep_restarts": ("milestones", "gamma", "periods", "restart_weights"),
    "step": ("step_size", "gamma"),
    "cosine": ("eta_min", "periods"),
    "cosine_restarts": ("eta_min", "periods", "restart_weights"),
    "linear_decay": ("start",),
    "exponential": ("gamma",),
    "plateau": ("metric", "mode", "patience", "gamma"),
    "onecycle": ("max_lr",),
}
assert tuple(USED_KEYS) == SCHEDULERS == get_args(Kind), "scheduler kinds disagree"


@dataclass(frozen=True)
class ScheduleSettings:
    """A multiplier of each parameter group's base lr as a function of the iteration."""

    type: Kind = setting(doc="the schedule's kind: " + ", ".join(f"`{k}`" for k in SCHEDULERS))
    milestones: tuple[int, ...] = setting((), "iterations (or fractions) where lr × gamma")
    gamma: float = setting(
        0.1, "the factor per milestone/step", shown="`0.5` multistep, else `0.1`"
    )
    step_size: int = setting(0, "`step`: iterations per step", shown="a third of training")
    periods: tuple[int, ...] = setting(
        (), "cosine and restart kinds: lengths of the cycles", shown="all of training"
    )
    restart_weights: tuple[float, ...] = setting(
        (), "restart kinds: lr multiplier per cycle", shown="1 each"
    )
    eta_min: float = setting(0.0, "cosine kinds: the floor, as a fraction of the base lr")
    start: int = setting(0, "`linear_decay`: where decay starts", shown="half of training")
    warmup: int = setting(0, "iterations of linear warm-up, for any kind")
    metric: str = setting("psnr", "`plateau`: the validation metric watched")
    mode: Literal["min", "max"] = setting("max", "`plateau`: max or min", shown="`min` for lpips")
    patience: int = setting(2, "`plateau`: validations without improvement before lr × gamma")
    peak: float = setting(1.0, "`onecycle`: the peak lr", key="max_lr", shown="the base lr")
    name: str | None = setting(None, "`torch`: a torch.optim.lr_scheduler class")
    options: tuple[tuple[str, Any], ...] = setting((), "`torch`: the scheduler's arguments")


def parse_schedule(r: Reader, total: int, lr: float) -> ScheduleSettings:
    """Read ``r.section`` (one ``scheduler:`` mapping, schema-checked)."""
    s = r.section
    kind = s["type"]
    used = USED_KEYS[kind]
    for key in s:
        if key not in used and key not in _ALWAYS:
            r.error(
                (key,),
                f"{r.where(key)}: scheduler type '{kind}' does not read '{key}' (it reads "
                f"{quote_list([*used, 'warmup'])}); remove it or change type",
            )
    gamma = float(s.get("gamma", 0.5 if kind.startswith("multistep") else 0.1))
    milestones = tuple(
        sorted(
            found
            for i, m in enumerate(s.get("milestones", ()))
            if (found := r.iteration_at(("milestones", i), m, total, allow_zero=True)) is not None
        )
    )
    periods = tuple(
        found
        for i, p in enumerate(s.get("periods", ()))
        if (found := r.iteration_at(("periods", i), p, total)) is not None
    )
    if periods and sum(periods) != total and "periods" in s:
        r.warning(
            ("periods",),
            f"{r.where('periods')}: the periods add up to {sum(periods)}, not "
            f"train.iterations ({total}); "
            + ("the last one is held at its end" if sum(periods) < total else "training ends early")
            + " in the cycle",
        )
    weights = tuple(float(w) for w in s.get("restart_weights", ()))
    if "restart_weights" in s and len(weights) != max(len(periods), 1):
        r.error(
            ("restart_weights",),
            f"{r.where('restart_weights')}: {len(weights)} weights for "
            f"{len(periods)} periods; give one weight per period",
        )
    start = total // 2 if "start" not in s else r.iteration("start", total, allow_zero=True)
    step_size = max(total // 3, 1) if "step_size" not in s else r.iteration("step_size", total)
    warmup = int(s.get("warmup", 0))
    if warmup >= total:
        r.warning(
            ("warmup",),
            f"{r.where('warmup')}: a warm-up of {warmup} iterations never ends "
            f"(train.iterations is {total})",
        )
    if kind == "torch" and "name" not in s:
        r.error(
            ("type",),
            f"{r.where('type')}: type torch needs 'name:' (a torch.optim.lr_scheduler class)",
        )
    peak = float(s["max_lr"]) / lr if "max_lr" in s else 1.0
    return ScheduleSettings(
        type=kind,
        milestones=milestones,
        gamma=gamma,
        step_size=step_size or 1,
        periods=periods or (total,),
        restart_weights=weights or (1.0,) * max(len(periods), 1),
        eta_min=float(s.get("eta_min", 0.0)),
        start=start or 0,
        warmup=warmup,
        metric=str(s.get("metric", "psnr")),
        mode=s.get("mode", "min" if s.get("metric") in LOWER_IS_BETTER else "max"),
        patience=int(s.get("patience", 2)),
        peak=peak,
        name=s.get("name"),
        options=tuple((s.get("options") or {}).items()),
    )

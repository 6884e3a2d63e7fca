"""The ``train:`` section: iterations, precision, EMA, and the phase schedule.

Phase ends and ramps are resolved to iterations here, once; which steps run at an
iteration and with which loss weights are pure functions of the iteration, so a
resumed run recomputes exactly what the uninterrupted one would have used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from engine.settings.base import Reader, iteration_of, setting

Precision = Literal["fp32", "fp16", "bf16"]


@dataclass(frozen=True)
class Ramp:
    """A loss weight ramped linearly from the start of its phase over ``over`` iterations."""

    start: float
    end: float
    over: int

    def at(self, offset: int) -> float:
        progress = min(offset / max(self.over, 1), 1.0)
        return self.start + (self.end - self.start) * progress


Weight = float | Ramp


@dataclass(frozen=True)
class StepSettings:
    optimizer: str = setting(doc="the optimizer this step updates")
    weights: tuple[tuple[str, Weight], ...] = setting(
        doc="loss → weight, or a ramp `{from, to, over}` from the phase's start", key="minimize"
    )
    every: int = setting(1, "step once every N iterations (update ratio)")
    start: int = setting(0, "iterations into the phase before the first step")
    accumulate: int = setting(1, "batches per optimizer step (virtual batch)")

    def active(self, iteration: int, phase_start: int) -> bool:
        offset = iteration - phase_start
        return offset >= self.start and (offset - self.start) % self.every == 0

    def weight_values(self, iteration: int, phase_start: int) -> dict[str, float]:
        offset = iteration - phase_start
        return {loss: w.at(offset) if isinstance(w, Ramp) else float(w) for loss, w in self.weights}


@dataclass(frozen=True)
class PhaseSettings:
    name: str = setting(doc="the phase's name (shown and logged)")
    start: int = setting(0, None)  # the previous phase's end
    end: int = setting(
        0, "where the phase ends: an iteration or a fraction", key="until", shown="the end"
    )
    steps: tuple[StepSettings, ...] = setting((), "optimizer steps per iteration, in order")
    frozen: tuple[str, ...] = setting((), "selectors of parameters not trained in this phase")
    lr: tuple[tuple[str, float], ...] = setting((), "optimizer → lr for this phase")
    validation_output: str | None = setting(
        None,
        "the graph output validated after this phase's iterations",
        key="validation.output",
        shown="`validation.output`",
    )


@dataclass(frozen=True)
class EmaSettings:
    networks: tuple[str, ...] = setting(doc="networks whose weights are averaged")
    decay: float = setting(0.999, "the average's decay per optimizer step")
    start: int = setting(0, "iteration before which the average copies the weights")


@dataclass(frozen=True)
class TrainSettings:
    iterations: int = setting(doc="iterations of training")
    seed: int = setting(0, "seed of every random number generator")
    precision: Precision = setting("fp32", "fp32, fp16 or bf16 (mixed precision)")
    channels_last: bool = setting(False, "networks in channels_last memory format")
    compile: bool = setting(False, "torch.compile the networks")
    tf32: bool = setting(False, "allow TF32 matrix multiplies on CUDA")
    ema: EmaSettings | None = setting(None, "an exponential moving average of networks")
    max_bad_steps: int = setting(10, "NaN/inf iterations in a row before the run stops")
    phases: tuple[PhaseSettings, ...] = setting((), "the phase schedule")

    def phase_at(self, iteration: int) -> PhaseSettings:
        """The phase that runs ``iteration`` (0-based); empty phases are never chosen."""
        for phase in self.phases:
            if iteration < phase.end:
                return phase
        return self.phases[-1]


def parse_train(r: Reader) -> TrainSettings:
    """Read ``train:`` (schema-checked; phase order and coverage are checked elsewhere)."""
    s = r.section
    total = int(s["iterations"])
    phases = []
    start = 0
    for p, raw in enumerate(s["phases"]):
        end = total
        if "until" in raw:
            found = iteration_of(raw["until"], total)
            end = total if found is None else found  # 0: an empty first phase
        steps = tuple(
            _step(r.sub("phases", p, "steps", i), total) for i in range(len(raw["steps"]))
        )
        phases.append(
            PhaseSettings(
                name=raw["name"],
                start=start,
                end=end,
                steps=steps,
                frozen=tuple(raw.get("frozen") or ()),
                lr=tuple((k, float(v)) for k, v in (raw.get("lr") or {}).items()),
                validation_output=(raw.get("validation") or {}).get("output"),
            )
        )
        start = end
    ema = s.get("ema")
    return TrainSettings(
        iterations=total,
        seed=int(s.get("seed", 0)),
        precision=s.get("precision", "fp32"),
        channels_last=bool(s.get("channels_last", False)),
        compile=bool(s.get("compile", False)),
        tf32=bool(s.get("tf32", False)),
        ema=None
        if ema is None
        else EmaSettings(
            networks=tuple(ema["networks"]),
            decay=float(ema.get("decay", 0.999)),
            start=int(ema.get("start", 0)),
        ),
        max_bad_steps=int(s.get("max_bad_steps", 10)),
        phases=tuple(phases),
    )


def _step(r: Reader, total: int) -> StepSettings:
    s = r.section
    weights: list[tuple[str, Weight]] = []
    for loss, value in s["minimize"].items():
        if isinstance(value, dict):
            over = r.iteration_at(("minimize", loss, "over"), value["over"], total)
            weights.append((loss, Ramp(float(value["from"]), float(value["to"]), over or 1)))
        else:
            weights.append((loss, float(value)))
    return StepSettings(
        optimizer=s["optimizer"],
        weights=tuple(weights),
        every=int(s.get("every", 1)),
        start=int(s.get("start", 0)),
        accumulate=int(s.get("accumulate", 1)),
    )

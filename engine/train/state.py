"""What a checkpoint holds, and how a run is put back exactly where it was.

``capture`` gathers everything a resumed run needs (weights, EMA, optimizers and
their accumulation counters, schedule state, image pools, the AMP scaler, RNG, data
position, best metrics, the NaN counter); ``restore`` puts it back. ``save`` writes
the checkpoint atomically (checkpoint.py) and exports each network's weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from engine.compile.network import unwrap
from engine.compile.weights import export
from engine.load import Spec
from engine.train import checkpoint as ckpt
from engine.train.ema import Ema
from engine.train.setup import OptimizerRun


@dataclass
class Parts:
    """The stateful parts of a run, as the loop holds them."""

    networks: dict[str, nn.Module]
    ema: Ema
    optimizers: dict[str, OptimizerRun]
    ops: dict[str, nn.Module]
    loader: Any
    scaler: Any  # Accelerate's GradScaler, or None

    def plain_networks(self) -> dict[str, nn.Module]:
        return {n: unwrap(m) for n, m in self.networks.items()}


@dataclass
class Counters:
    iteration: int
    best: dict[str, float]
    bad: int


def capture(parts: Parts, counters: Counters, rng: dict[str, Any], data: Any) -> dict[str, Any]:
    state = {
        "iteration": counters.iteration,
        "networks": {n: m.state_dict() for n, m in parts.plain_networks().items()},
        "ema": parts.ema.state_dict(),
        "optimizers": {n: o.optimizer.state_dict() for n, o in parts.optimizers.items()},
        "micro": {n: o.micro for n, o in parts.optimizers.items()},
        "ops": {n: m.state_dict() for n, m in parts.ops.items()},
        "rng": rng,
        "data": data,
        "best": dict(counters.best),
        "bad": counters.bad,
        "plateau": {n: o.schedule.state_dict() for n, o in parts.optimizers.items()},
    }
    if parts.scaler is not None:
        state["scaler"] = parts.scaler.state_dict()
    return state


def restore(parts: Parts, state: dict[str, Any]) -> Counters:
    for n, sd in state["networks"].items():
        unwrap(parts.networks[n]).load_state_dict(sd)
    parts.ema.load_state_dict(state["ema"])
    for n, sd in state["optimizers"].items():
        parts.optimizers[n].optimizer.load_state_dict(sd)
        parts.optimizers[n].micro = state["micro"][n]
    for n, sd in state["ops"].items():
        parts.ops[n].load_state_dict(sd)
    if "scaler" in state and parts.scaler is not None:
        parts.scaler.load_state_dict(state["scaler"])
    parts.loader.load_state_dict(state["data"])
    ckpt.set_rng_state(state["rng"])
    for name, saved in state.get("plateau", {}).items():
        if name in parts.optimizers:
            parts.optimizers[name].schedule.load_state_dict(saved)
    return Counters(int(state["iteration"]), dict(state["best"]), int(state["bad"]))


def save(
    spec: Spec, run_dir: Path, parts: Parts, counters: Counters, rng: dict[str, Any], data: Any
) -> Path:
    """A checkpoint of this iteration, and each network's weights (EMA where averaged)."""
    plain = parts.plain_networks()
    meta = {"spec": spec.name, "hash": spec.hash, "shapes": ckpt.shapes_of(plain)}
    path = ckpt.save(
        run_dir / "checkpoints",
        counters.iteration,
        capture(parts, counters, rng, data),
        meta,
        keep=spec.settings.checkpoints.keep,
    )
    for name, module in plain.items():
        weights = parts.ema.get(name, module)
        stem = run_dir / "models" / f"{name}_iter_{counters.iteration:08d}"
        export(weights, stem.with_suffix(".safetensors"))
        export(weights, stem.with_suffix(".pth"))
    return path

"""What a checkpoint holds, and how a run is put back exactly where it was.

``capture`` gathers everything a resumed run needs (weights, EMA, optimizers and
their accumulation counters, schedule state, image pools, the AMP scaler, RNG, data
position, best metrics, the NaN counter); ``restore`` puts it back. ``save`` exports
each network's weights and writes the checkpoint, both atomically (a temporary name,
then a rename), and records the exports' sha256 in the checkpoint's ``meta.json`` and
in ``models/SHA256SUMS`` (``sha256sum -c`` checks them); ``models/`` keeps the exports
of the newest ``keep_models`` saves.
"""

from __future__ import annotations

import os
import re
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
        optimizer = parts.optimizers[n].optimizer
        # The spec's hyper-parameters (lr, betas, weight decay …) win over the saved
        # ones, so that a change taken on resume is applied; the moments are restored.
        fresh = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
        optimizer.load_state_dict(sd)
        for group, settings in zip(optimizer.param_groups, fresh, strict=True):
            group.update(settings)
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
    spec: Spec,
    run_dir: Path,
    parts: Parts,
    counters: Counters,
    rng: dict[str, Any],
    data: Any,
    *,
    keep_models: int | None = None,
) -> Path:
    """Each network's weights (EMA where averaged), then a checkpoint of this iteration."""
    plain = parts.plain_networks()
    exports = export_networks(
        run_dir / "models", {n: parts.ema.get(n, m) for n, m in plain.items()}, counters.iteration
    )
    meta = {
        "spec": spec.name,
        "hash": spec.hash,
        "resolved": spec.data,
        "shapes": ckpt.shapes_of(plain),
        "exports": exports,
    }
    keep = spec.settings.checkpoints.keep
    path = ckpt.save(
        run_dir / "checkpoints",
        counters.iteration,
        capture(parts, counters, rng, data),
        meta,
        keep=keep,
    )
    prune_models(run_dir / "models", keep if keep_models is None else keep_models)
    return path


EXPORT_NAME = re.compile(r".+_iter_(\d+)\.(safetensors|pth)")
SUMS = "SHA256SUMS"


def export_networks(
    folder: Path, networks: dict[str, nn.Module], iteration: int
) -> dict[str, dict[str, Any]]:
    """``<net>_iter_N.safetensors`` and ``.pth`` per network, each written under a
    temporary name and renamed into place; their size and sha256 by file name."""
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, dict[str, Any]] = {}
    for name, module in networks.items():
        for suffix in (".safetensors", ".pth"):
            final = folder / f"{name}_iter_{iteration:08d}{suffix}"
            temp = folder / f".tmp-{final.stem}-{os.getpid()}{suffix}"
            try:
                export(module, temp)
                written[final.name] = ckpt.fingerprint(temp)
                os.replace(temp, final)
            finally:
                temp.unlink(missing_ok=True)
    _write_sums(folder, written)
    return written


def _write_sums(folder: Path, new: dict[str, dict[str, Any]]) -> None:
    """``models/SHA256SUMS`` in sha256sum's format, for the exports that exist."""
    sums: dict[str, str] = {}
    path = folder / SUMS
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            digest, _, name = line.partition("  ")
            if name and (folder / name).is_file():
                sums[name] = digest
    sums.update({name: f["sha256"] for name, f in new.items()})
    temp = folder / f".tmp-{SUMS}-{os.getpid()}"
    try:
        temp.write_text("".join(f"{d}  {n}\n" for n, d in sorted(sums.items())), encoding="utf-8")
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def prune_models(folder: Path, keep: int) -> list[Path]:
    """Keep the exports of the newest ``keep`` iterations (0: keep all)."""
    if keep <= 0 or not folder.is_dir():
        return []
    by_iteration: dict[int, list[Path]] = {}
    for path in folder.iterdir():
        if m := EXPORT_NAME.fullmatch(path.name):
            by_iteration.setdefault(int(m[1]), []).append(path)
    removed = [p for it in sorted(by_iteration)[:-keep] for p in by_iteration[it]]
    for path in removed:
        path.unlink(missing_ok=True)
    if removed:
        _write_sums(folder, {})
    return removed

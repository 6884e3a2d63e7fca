"""Resumable checkpoints, written atomically.

A checkpoint is a folder ``RUN/checkpoints/iter_00001000/`` holding ``state.pt``
(weights, EMA, optimizers, schedules, image pools, RNG of every generator, iteration,
phase, data position, counters) and ``meta.json`` (the spec hash and each network's
parameter shapes, to refuse a checkpoint from another spec before loading anything).
It is written to a temporary folder and renamed into place, then ``latest`` (a text
file naming the folder) is replaced atomically, so a crash at any moment leaves the
previous checkpoint intact and ``latest`` pointing at a complete one.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

LATEST = "latest"


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message says why and what to do."""


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": _plain(random.getstate()),
    }
    # The default (legacy) form is this tuple; numpy's stub types the call as the dict form.
    legacy = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    kind, keys, pos, has_gauss, gauss = legacy
    state["numpy"] = {
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "gauss": float(gauss),
        "kind": str(kind),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _plain(value: Any) -> Any:
    return [_plain(v) for v in value] if isinstance(value, tuple | list) else value


def _tuple(value: Any) -> Any:
    return tuple(_tuple(v) for v in value) if isinstance(value, list) else value


def shapes_of(networks: dict[str, torch.nn.Module]) -> dict[str, dict[str, list[int]]]:
    return {
        name: {k: list(v.shape) for k, v in module.state_dict().items()}
        for name, module in networks.items()
    }


def save(
    folder: Path, iteration: int, state: dict[str, Any], meta: dict[str, Any], keep: int
) -> Path:
    """Write ``iter_<N>`` atomically, point ``latest`` at it, keep the newest ``keep``."""
    folder.mkdir(parents=True, exist_ok=True)
    name = f"iter_{iteration:08d}"
    final = folder / name
    temp = folder / f".tmp-{name}-{os.getpid()}"
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir()
    torch.save(state, temp / "state.pt")
    (temp / "meta.json").write_text(json.dumps({**meta, "iteration": iteration}, indent=1))
    _fsync_dir(temp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(temp, final)
    pointer = folder / f".{LATEST}.tmp"
    pointer.write_text(name + "\n")
    os.replace(pointer, folder / LATEST)
    _fsync_dir(folder)
    for old in sorted(folder.glob("iter_*"))[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def find(target: str | Path, out_dir: Path | None) -> Path | None:
    """The checkpoint for ``--resume``: 'auto' (newest in the run), a run, or a checkpoint."""
    if str(target) == "auto":
        if out_dir is None:
            return None
        return _latest(out_dir / "checkpoints")
    path = Path(target)
    if (path / "state.pt").is_file():
        return path
    for candidate in (path / "checkpoints", path):
        found = _latest(candidate)
        if found is not None:
            return found
    raise CheckpointError(
        f"--resume {target}: no checkpoint there (expected a run folder, "
        "its checkpoints/ folder, or a checkpoints/iter_N folder)"
    )


def _latest(folder: Path) -> Path | None:
    pointer = folder / LATEST
    if pointer.is_file():
        candidate = folder / pointer.read_text().strip()
        if (candidate / "state.pt").is_file():
            return candidate
    complete = sorted(p for p in folder.glob("iter_*") if (p / "state.pt").is_file())
    return complete[-1] if complete else None


def load(path: Path, networks: dict[str, torch.nn.Module]) -> dict[str, Any]:
    """Read a checkpoint after checking it belongs to these networks."""
    meta = json.loads((path / "meta.json").read_text())
    mine = shapes_of(networks)
    theirs = meta.get("shapes", {})
    problems = []
    for name in sorted(set(mine) | set(theirs)):
        if name not in theirs:
            problems.append(f"network '{name}' is not in the checkpoint")
        elif name not in mine:
            problems.append(f"the checkpoint has a network '{name}' this spec does not")
        elif mine[name] != theirs[name]:
            diff = [
                k
                for k in sorted(set(mine[name]) | set(theirs[name]))
                if mine[name].get(k) != theirs[name].get(k)
            ]
            problems.append(
                f"network '{name}' differs in {len(diff)} tensors (e.g. {', '.join(diff[:3])})"
            )
    if problems:
        raise CheckpointError(
            f"{path} was written by a different spec and cannot be resumed: "
            + "; ".join(problems)
            + ". Use the spec that wrote it, or start a new run (another --out) and load weights "
            "with pretrained weights instead."
        )
    state: dict[str, Any] = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    return state

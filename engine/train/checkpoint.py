"""Resumable checkpoints, written atomically and checked before use.

A checkpoint is a folder ``RUN/checkpoints/iter_00001000/`` holding ``state.pt``
(weights, EMA, optimizers, schedules, image pools, RNG of every generator, iteration,
phase, data position, counters) and ``meta.json`` (the spec's name, hash and resolved
text, each network's parameter shapes, and the sha256 and size of every file beside
it, the run's exported weights included). It is written to a temporary folder and
renamed into place, then ``latest`` (a text file naming the folder) is replaced
atomically, so a crash at any moment leaves the previous checkpoint intact and
``latest`` pointing at a complete one. Pruning never removes the checkpoint just
written.

Reading checks before trusting: ``meta.json`` must parse, every file must have its
recorded size and sha256, and ``state.pt`` is read without running pickled code.
``find`` for ``--resume auto`` skips a damaged newest checkpoint, saying which and why,
and takes the newest intact one.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from engine.compile.weights import WeightsError, load_pickled

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


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(path: Path) -> dict[str, Any]:
    """What ``meta.json`` records of a file: its size and sha256."""
    return {"bytes": path.stat().st_size, "sha256": sha256(path)}


def iteration_of(path: Path) -> int:
    """``iter_00001000`` → 1000 (-1 for a name that is not a checkpoint's)."""
    digits = path.name.removeprefix("iter_")
    return int(digits) if path.name.startswith("iter_") and digits.isdigit() else -1


def checkpoints(folder: Path) -> list[Path]:
    """The checkpoint folders, newest (highest iteration) first."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.glob("iter_*") if p.is_dir() and iteration_of(p) >= 0]
    return sorted(found, key=iteration_of, reverse=True)


def save(
    folder: Path,
    iteration: int,
    state: dict[str, Any],
    meta: dict[str, Any],
    keep: int,
) -> Path:
    """Write ``iter_<N>`` atomically, point ``latest`` at it, keep the newest ``keep``.

    On any failure the temporary folder is removed and the previous checkpoints and
    ``latest`` are as they were; the error is raised for the caller to tell.
    """
    folder.mkdir(parents=True, exist_ok=True)
    name = f"iter_{iteration:08d}"
    final = folder / name
    temp = folder / f".tmp-{name}-{os.getpid()}"
    try:
        shutil.rmtree(temp, ignore_errors=True)
        temp.mkdir()
        torch.save(state, temp / "state.pt")
        files = {"state.pt": fingerprint(temp / "state.pt")}
        record = {**meta, "iteration": iteration, "files": files}
        (temp / "meta.json").write_text(json.dumps(record, indent=1))
        _fsync_dir(temp)
        if final.exists():
            # The same iteration saved again (a resume that stopped where it started):
            # the new one replaces it only once complete.
            old = folder / f".tmp-old-{name}-{os.getpid()}"
            os.replace(final, old)
            os.replace(temp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(temp, final)
        point_latest(folder, name)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        (folder / f".{LATEST}.tmp").unlink(missing_ok=True)
        raise
    prune(folder, keep, final)
    return final


def point_latest(folder: Path, name: str) -> None:
    pointer = folder / f".{LATEST}.tmp"
    pointer.write_text(name + "\n")
    os.replace(pointer, folder / LATEST)
    _fsync_dir(folder)


def prune(folder: Path, keep: int, current: Path) -> list[Path]:
    """Keep ``current`` and the ``keep - 1`` newest others; never the one just written."""
    if keep <= 0:
        return []
    others = [p for p in checkpoints(folder) if p != current]
    removed = others[keep - 1 :]
    for old in removed:
        shutil.rmtree(old, ignore_errors=True)
    return removed


def bytes_of(path: Path) -> int:
    """A checkpoint folder's size on disk (for the free-space check of the next save)."""
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file()) if path.is_dir() else 0


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


# --------------------------------------------------------------------- reading
def read_meta(path: Path) -> dict[str, Any]:
    """``meta.json``, or :class:`CheckpointError` saying what is wrong with it."""
    meta_file = path / "meta.json"
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: damaged: meta.json is missing") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{path}: damaged: meta.json cannot be read ({exc})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: damaged: meta.json holds no object")
    return meta


def verify(path: Path) -> str | None:
    """What is wrong with a checkpoint folder (None: it is intact).

    A checkpoint written before checksums existed is checked for its files only.
    """
    try:
        meta = read_meta(path)
    except CheckpointError as exc:
        return str(exc).removeprefix(f"{path}: ")
    if not (path / "state.pt").is_file():
        return "damaged: state.pt is missing"
    files = meta.get("files")
    if not isinstance(files, dict):
        return None
    for name, want in sorted(files.items()):
        file = path / name
        if not file.is_file():
            return f"damaged: {name} is missing"
        size = file.stat().st_size
        if size != want.get("bytes"):
            return f"damaged: {name} has {size} bytes, {want.get('bytes')} were written"
        if sha256(file) != want.get("sha256"):
            return f"damaged: {name} does not match its sha256 (the file was altered or corrupted)"
    return None


def find(
    target: str | Path, out_dir: Path | None, *, note: Callable[[str], None] | None = None
) -> Path | None:
    """The checkpoint for ``--resume``: 'auto' (newest intact in the run), a run folder
    (the same), or one checkpoint folder (which must be intact)."""
    if str(target) == "auto":
        if out_dir is None:
            return None
        return newest_intact(out_dir / "checkpoints", note=note, explicit="--resume auto")
    path = Path(target)
    if (path / "meta.json").exists() or (path / "state.pt").exists():
        problem = verify(path)
        if problem is None:
            return path
        try:
            other = newest_intact(path.parent, note=None, explicit=None)
        except CheckpointError:
            other = None
        offer = (
            f"; the newest intact checkpoint beside it is {other}: resume that one with "
            f"--resume {other}"
            if other is not None and other != path
            else ""
        )
        raise CheckpointError(f"--resume {target}: {path} is {problem}{offer}")
    for candidate in (path / "checkpoints", path):
        if checkpoints(candidate):
            return newest_intact(candidate, note=note, explicit=f"--resume {target}")
    raise CheckpointError(
        f"--resume {target}: no checkpoint there (expected a run folder, "
        "its checkpoints/ folder, or a checkpoints/iter_N folder)"
    )


def newest_intact(
    folder: Path, *, note: Callable[[str], None] | None, explicit: str | None
) -> Path | None:
    """The newest checkpoint that verifies; each damaged newer one is told to ``note``.

    The one ``latest`` names comes first (a checkpoint newer than it belongs to a run
    that was resumed from an older one); then the others, newest first. None when the
    folder holds no checkpoint; :class:`CheckpointError` when it holds only damaged ones.
    """
    candidates = checkpoints(folder)
    if not candidates:
        return None
    named = _named_latest(folder)
    if named in candidates:
        candidates = [named, *(c for c in candidates if iteration_of(c) < iteration_of(named))]
    damaged: list[str] = []
    for candidate in candidates:
        problem = verify(candidate)
        if problem is None:
            if damaged and note is not None:
                note(
                    f"{'; '.join(damaged)}; resuming from the newest intact checkpoint, "
                    f"{candidate.name}"
                )
            return candidate
        damaged.append(f"{candidate} is {problem}")
    raise CheckpointError(
        f"{explicit or folder}: no intact checkpoint: "
        + "; ".join(damaged)
        + ". Start a new run with --overwrite (the damaged run is moved aside, not deleted)"
    )


def _named_latest(folder: Path) -> Path | None:
    try:
        name = (folder / LATEST).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return folder / name if name else None


def load(path: Path, networks: dict[str, torch.nn.Module]) -> dict[str, Any]:
    """Read a checkpoint after checking it is intact and belongs to these networks."""
    meta = read_meta(path)
    check_shapes(path, meta, networks)
    problem = verify(path)
    if problem is not None:
        raise CheckpointError(f"{path} is {problem}")
    try:
        state = load_pickled(path / "state.pt")
    except WeightsError as exc:
        raise CheckpointError(str(exc)) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path / 'state.pt'}: holds no checkpoint state")
    return state


def check_shapes(path: Path, meta: dict[str, Any], networks: dict[str, torch.nn.Module]) -> None:
    """Refuse a checkpoint whose networks differ from these, before loading anything."""
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

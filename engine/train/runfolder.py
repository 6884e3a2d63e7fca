"""One writer per run folder, and a folder that holds one run.

``open_run`` is entered before anything writes into ``--out``. It takes the folder's
lock (``RUN/.lock``: the owner's pid, host and start time, created with ``O_EXCL`` so
two runs cannot both take it; a lock whose pid is gone on this host is stale and taken
over), refuses a fresh run into a folder that already holds a run unless it resumes or
``--overwrite`` moves the old run aside (never deleted), and removes what a crash left
half-written (``.tmp-*`` folders and files) before the run writes anything new.

Disk faults are told here too: ``disk_error`` turns ``OSError`` (read-only, full,
no permission) into one message naming the folder and what was kept.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

LOCK = ".lock"
#: What shows that a folder holds a run (besides the lock, and a run that failed
#: before its first iteration: its train.log and spec.resolved.yaml alone).
TRACES = ("checkpoints", "models", "metrics.jsonl", "samples")
#: Headroom over the last save's size required before the next save.
FREE_MARGIN = 1.10


class RunFolderError(Exception):
    """The run folder cannot be used; the message names it and says what to do."""


@dataclass
class RunFolder:
    """An opened run folder: what opening it did, for train.log."""

    path: Path
    notes: list[str] = field(default_factory=list)
    lock: Path | None = None


def _owner() -> dict[str, object]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def read_lock(path: Path) -> dict[str, object] | None:
    """The lock's owner, or None when the file is unreadable (a crash while writing it)."""
    try:
        owner = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None


def _stale(owner: dict[str, object] | None) -> bool:
    """A lock nobody holds: unreadable, or its pid is gone on this host."""
    if owner is None:
        return True
    pid = owner.get("pid")
    if owner.get("host") != socket.gethostname() or not isinstance(pid, int):
        return False  # another machine's run: this one cannot tell
    return pid != os.getpid() and not _alive(pid)


def acquire(run_dir: Path) -> tuple[Path, str | None]:
    """Take ``RUN/.lock``; returns it and a note when a stale lock was taken over."""
    path = run_dir / LOCK
    note = None
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = read_lock(path)
            if not _stale(owner):
                assert owner is not None
                raise RunFolderError(
                    f"{run_dir} is in use by another run (pid {owner.get('pid')} on "
                    f"{owner.get('host')}, started {owner.get('started')}): one run writes a "
                    f"folder at a time. Wait for it, choose another --out, or, if that run "
                    f"is gone, delete {path}"
                ) from None
            note = f"took over a stale lock {path} (" + (
                f"pid {owner.get('pid')} on {owner.get('host')} is gone)"
                if owner
                else "unreadable)"
            )
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(_owner(), handle)
        return path, note
    raise RunFolderError(f"{run_dir}: another run took the lock {path} at the same moment")


def release(lock: Path) -> None:
    """Remove the lock if it is still ours."""
    owner = read_lock(lock)
    if owner is not None and owner.get("pid") == os.getpid():
        lock.unlink(missing_ok=True)


def traces(run_dir: Path) -> list[str]:
    """What in the folder belongs to an earlier run (empty: the folder can be used)."""
    found = []
    for name in TRACES:
        path = run_dir / name
        if path.is_dir() and any(p for p in path.iterdir() if not p.name.startswith(".")):
            found.append(f"{name}/")
        elif path.is_file() and path.stat().st_size > 0:
            found.append(name)
    return found


def move_aside(run_dir: Path) -> Path:
    """Move everything but the lock into a new sibling ``RUN.previous-N``; return it."""
    n = 1
    while (aside := run_dir.with_name(f"{run_dir.name}.previous-{n}")).exists():
        n += 1
    aside.mkdir()
    for entry in sorted(run_dir.iterdir()):
        if entry.name != LOCK:
            os.replace(entry, aside / entry.name)
    return aside


def clean_leftovers(run_dir: Path) -> list[str]:
    """Remove temporary files and folders a crashed save left (under the lock, so no
    live run is writing them)."""
    removed = []
    for folder in (run_dir / "checkpoints", run_dir / "models"):
        if not folder.is_dir():
            continue
        for entry in sorted(folder.glob(".*tmp*")):
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(str(entry.relative_to(run_dir)))
    return removed


@contextmanager
def open_run(
    run_dir: Path,
    *,
    resume: str | None,
    overwrite: bool,
    main: bool = True,
) -> Iterator[RunFolder]:
    """The run folder, locked, checked and cleaned for this run (main process only)."""
    folder = RunFolder(run_dir)
    if not main:
        yield folder
        return
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        folder.lock, note = acquire(run_dir)
    except OSError as exc:
        raise RunFolderError(disk_error(exc, run_dir, "Nothing was written.")) from None
    try:
        if note:
            folder.notes.append(note)
        _check_contents(folder, resume, overwrite)
        removed = clean_leftovers(run_dir)
        if removed:
            folder.notes.append(
                "removed what an interrupted save left half-written: " + ", ".join(removed)
            )
        yield folder
    finally:
        release(folder.lock)


def _check_contents(folder: RunFolder, resume: str | None, overwrite: bool) -> None:
    run_dir = folder.path
    found = traces(run_dir)
    if not found:
        return
    resumes_here = resume == "auto" or (
        resume is not None and Path(resume).resolve().is_relative_to(run_dir.resolve())
    )
    checkpoints = run_dir / "checkpoints"
    nothing_to_resume = resume == "auto" and not any(checkpoints.glob("iter_*"))
    if overwrite or nothing_to_resume:
        aside = move_aside(run_dir)
        why = "--overwrite" if overwrite else "--resume auto found no checkpoint to continue"
        folder.notes.append(f"{why}: the earlier run in {run_dir} was moved to {aside}")
        return
    if resumes_here:
        return
    raise RunFolderError(
        f"{run_dir} already holds a run ({', '.join(found)}). Continue it with "
        "--resume auto, start over with --overwrite (the old run is moved aside to "
        f"{run_dir.name}.previous-N, never deleted), or choose another --out"
    )


# ---------------------------------------------------------------- disk faults
_DISK_ERRNOS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
}


def is_disk_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS


def disk_error(exc: OSError, folder: Path, kept: str) -> str:
    """One message for a failed write: the folder, what went wrong, what was kept."""
    what = _DISK_ERRNOS.get(exc.errno or 0, exc.strerror or str(exc))
    return f"cannot write to {folder}: {what}. {kept}"


def check_free_space(folder: Path, needed: int, kept: str) -> None:
    """Refuse to start a save that the disk cannot hold (``needed``: the last save's bytes)."""
    if needed <= 0:
        return
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if free < needed * FREE_MARGIN:
        raise RunFolderError(
            f"cannot save in {folder}: {_mb(free)} free, the last save took {_mb(needed)}. {kept}"
        )


def _mb(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"

"""Pretrained files fetched on first use, into torch's hub cache, hash checked.

Feature networks (VGG19 for perceptual, content and structure losses) use weights that
torchvision publishes. :func:`cached` returns the file from torch's hub cache
(``torch.hub.get_dir()/checkpoints``, moved with ``TORCH_HOME``) and downloads it there
first when it is missing, as torchvision does: a progress bar on a terminal, plain
lines otherwise, and the sha256 checked before the file takes its final name, so a
broken or tampered download never lands in the cache.

Offline: ``LOOM_OFFLINE=1`` (or ``HF_HUB_OFFLINE=1``, which offline clusters already
set; torch.hub itself has no offline switch) makes :func:`cached` never touch the
network; a missing file is then :class:`Offline`, whose message says where to put it.
The test suite runs offline.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

#: Environment variables that turn downloads off, when set to 1/true/yes/on.
OFFLINE_VARIABLES = ("LOOM_OFFLINE", "HF_HUB_OFFLINE")
CHUNK = 1 << 20
TIMEOUT_S = 60.0
#: torchvision's file names end in the first hex digits of the file's sha256.
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.[^.]+$")


class DownloadError(Exception):
    """A file could not be fetched, or what came does not have the published hash."""


class Offline(DownloadError):
    """A file is missing and downloads are turned off."""


def offline() -> bool:
    """Whether downloads are turned off (see the module's description)."""
    return any(
        os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")
        for name in OFFLINE_VARIABLES
    )


def cache_dir() -> Path:
    """torch.hub's checkpoint folder: where torchvision keeps (and looks for) weights."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def hash_in_name(name: str) -> str | None:
    """The sha256 prefix in a torchvision-style name (``vgg19-dcbb9e9d.pth``), if any."""
    found = _HASH_IN_NAME.search(name)
    return found[1] if found else None


def cached(url: str, *, sha256: str | None = None, progress: bool = True) -> Path:
    """The file at ``url`` in torch's hub cache, downloaded first when it is missing.

    ``sha256`` is the file's hash or a prefix of it (default: the one in the name). A
    file already in the cache is trusted as it is: it may be one the user put there.
    Raises :class:`Offline` when the file is missing and downloads are off, and
    :class:`DownloadError` when the download fails or its hash differs.
    """
    name = url.rsplit("/", 1)[-1]
    path = cache_dir() / name
    if path.is_file():
        return path
    if offline():
        set_by = next(v for v in OFFLINE_VARIABLES if os.environ.get(v))
        raise Offline(
            f"{path} is missing and downloads are off ({set_by}={os.environ[set_by]}); "
            f"put {name} from {url} there, or unset {set_by} to download it on first use"
        )
    download(url, path, sha256=sha256 or hash_in_name(name), progress=progress)
    return path


def download(
    url: str,
    dest: Path,
    *,
    sha256: str | None,
    progress: bool = True,
    timeout: float = TIMEOUT_S,
) -> Path:
    """Fetch ``url`` into ``dest`` through a temporary file beside it; the temporary
    file is renamed into place only when its sha256 starts with ``sha256``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    temp = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
    digest = hashlib.sha256()
    try:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                total = int(response.headers.get("Content-Length") or 0) or None
                with temp.open("wb") as out, _Progress(dest.name, url, total, progress) as bar:
                    while chunk := response.read(CHUNK):
                        out.write(chunk)
                        digest.update(chunk)
                        bar.advance(len(chunk))
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise DownloadError(
                f"cannot download {url} ({reason}); fetch it by hand into {dest}, or set "
                "the loss's weights to a file path"
            ) from None
        got = digest.hexdigest()
        if sha256 and not got.startswith(sha256.lower()):
            raise DownloadError(
                f"{url}: the downloaded file has sha256 {got}, not the published "
                f"{sha256}…; it was discarded (a broken or tampered download). Try again, "
                f"or fetch it by hand into {dest}"
            )
        os.replace(temp, dest)
    finally:
        temp.unlink(missing_ok=True)
    return dest


class _Progress:
    """A rich progress bar on a terminal; otherwise one line at the start and the end."""

    def __init__(self, name: str, url: str, total: int | None, enabled: bool) -> None:
        self.name, self.url, self.total, self.enabled = name, url, total, enabled
        self.done, self.started = 0, time.monotonic()
        self.bar: object | None = None
        self.task: object | None = None

    def __enter__(self) -> _Progress:
        if not self.enabled:
            return self
        if sys.stderr.isatty():
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            bar = Progress(
                "[bold]downloading[/] {task.description}",
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                transient=True,
            )
            bar.start()
            self.task = bar.add_task(self.name, total=self.total)
            self.bar = bar
        else:
            size = f" ({self.total / 2**20:.1f} MiB)" if self.total else ""
            print(f"downloading {self.url}{size}", file=sys.stderr, flush=True)
        return self

    def advance(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.advance(self.task, n)  # type: ignore[attr-defined]

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()  # type: ignore[attr-defined]
        if self.enabled and exc[0] is None:
            seconds = time.monotonic() - self.started
            print(
                f"downloaded {self.name}: {self.done / 2**20:.1f} MiB in {seconds:.1f} s",
                file=sys.stderr,
                flush=True,
            )

"""The one exception the data pipeline raises: what is wrong, where, and what to change;
its one warning; and the words for a DataLoader worker that failed or was killed."""

from __future__ import annotations

import re
import signal
from collections.abc import Sequence


class DataError(Exception):
    """A problem with a dataset's files or settings.

    The message names the file (or the ``data.<split>.<key>`` option) and says what
    to change, e.g. ``data.train.hr: folder 'x/y' does not exist``. ``key`` is the
    spec key inside the dataset section that the error is about (``"crop_size"``,
    ``"A"``), so ``validate`` can point at its line; None when the error is about the
    section as a whole (a folder key it lacks) or about a file. An error about a
    section's settings may gather several problems (``problems``), each with its key.
    """

    def __init__(
        self, message: str, *, key: str | None = None, problems: Sequence[DataError] = ()
    ) -> None:
        super().__init__(message)
        self.key = key
        #: Each problem this error reports, with its own key: itself, unless it gathers
        #: several (:meth:`gather`).
        self.problems: tuple[DataError, ...] = tuple(problems) or (self,)

    @classmethod
    def gather(cls, problems: Sequence[DataError]) -> DataError:
        """One error for ``problems`` (at least one): their messages, one per line."""
        if len(problems) == 1:
            return problems[0]
        return cls("\n".join(map(str, problems)), key=problems[0].key, problems=problems)


class DataWarning(UserWarning):
    """Something about a dataset's files that does not stop the run (a symlink loop in a
    folder); a run logs it to train.log and the console."""


def clean_worker_message(message: str) -> str:
    """The original message of a DataError re-raised by a DataLoader worker.

    torch re-raises worker exceptions with the worker's traceback prepended; users
    need only the last line's text.
    """
    marker = "DataError: "
    if "Original Traceback" not in message or marker not in message:
        return message
    return message.rsplit(marker, 1)[1].strip()


_KILLED = re.compile(r"DataLoader worker \(pid [^)]*\) is killed by signal: ([^.]+)")
#: What a signal that killed a worker usually means, by its name as torch reports it.
_LIKELY = {"Killed": "often out of memory", "Bus error": "often too little shared memory"}


def worker_killed(exc: BaseException, where: str = "data.train") -> DataError | None:
    """A DataError for torch's report that a DataLoader worker died (killed by a signal,
    or exited without a word); None when ``exc`` is not such a report."""
    text = str(exc)
    advice = f"lower {where}.workers or batch_size"
    if isinstance(exc, ConnectionResetError | BrokenPipeError | EOFError):
        # A worker killed while it handed over a batch: its end of the queue is gone
        # before torch notices the death itself.
        return DataError(f"a data worker exited unexpectedly (often out of memory): {advice}")
    if not isinstance(exc, RuntimeError) or "DataLoader worker" not in text:
        return None
    killed = _KILLED.search(text)
    if killed:
        name = killed.group(1).strip()
        number = next((int(s) for s in signal.Signals if signal.strsignal(s) == name), None)
        shown = f"signal {number}" if number is not None else f"signal '{name}'"
        return DataError(
            f"a data worker was killed by the operating system ({shown}, "
            f"{_LIKELY.get(name, name)}): {advice}"
        )
    if "exited unexpectedly" in text:
        return DataError(f"a data worker exited unexpectedly (often out of memory): {advice}")
    return None


def loading_failure(exc: Exception, where: str = "data.train") -> DataError:
    """What to tell the user when loading a batch raised ``exc`` (in a DataLoader worker,
    which torch re-raises with the worker's traceback in the message, or in this process)."""
    killed = worker_killed(exc, where)
    if killed is not None:
        return killed
    if isinstance(exc, DataError):
        return DataError(clean_worker_message(str(exc)))
    text = str(exc)
    in_worker = "Original Traceback" in text
    if in_worker:  # the traceback's last line: "ValueError: the message"
        lines = [line for line in text.splitlines() if line.strip()]
        text = lines[-1].strip() if lines else type(exc).__name__
    else:
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    place = "in a data worker" if in_worker else "while loading a batch"
    if isinstance(exc, MemoryError):
        return DataError(
            f"out of memory {place} ({text}): lower {where}.workers or {where}.batch_size, "
            f"or lower {where}.max_megapixels to refuse huge images"
        )
    return DataError(f"loading a batch failed {place}: {text}")

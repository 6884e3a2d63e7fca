"""The one exception the data pipeline raises: what is wrong, where, and what to change."""

from __future__ import annotations

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


def clean_worker_message(message: str) -> str:
    """The original message of a DataError re-raised by a DataLoader worker.

    torch re-raises worker exceptions with the worker's traceback prepended; users
    need only the last line's text.
    """
    marker = "DataError: "
    if "Original Traceback" not in message or marker not in message:
        return message
    return message.rsplit(marker, 1)[1].strip()

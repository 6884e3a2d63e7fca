"""The one exception the data pipeline raises: what is wrong, where, and what to change."""

from __future__ import annotations


class DataError(Exception):
    """A problem with a dataset's files or settings.

    The message names the file (or the ``data.<split>.<key>`` option) and says what
    to change, e.g. ``data.train.hr: folder 'x/y' does not exist``.
    """


def clean_worker_message(message: str) -> str:
    """The original message of a DataError re-raised by a DataLoader worker.

    torch re-raises worker exceptions with the worker's traceback prepended; users
    need only the last line's text.
    """
    marker = "DataError: "
    if "Original Traceback" not in message or marker not in message:
        return message
    return message.rsplit(marker, 1)[1].strip()

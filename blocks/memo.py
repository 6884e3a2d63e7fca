"""Work shared between blocks inside one training step.

Two losses of one step often compute the same thing from the same tensor — White-box
Cartoonization's structure and content losses both take VGG19 features of the
generator's output. The step program opens a :func:`step_memo` around each optimizer
step; a block that can share work looks its result up with :func:`shared`. Outside a
memo (a block used on its own, validation) nothing is shared and nothing is kept.

A memo lives for one step only: every loss of a step is summed and back-propagated
once, so a result computed with gradients there is never reused after its graph has
been freed.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

_MEMO: ContextVar[dict[Hashable, Any] | None] = ContextVar("loom_step_memo", default=None)


@contextmanager
def step_memo() -> Iterator[dict[Hashable, Any]]:
    """Share work between the blocks run inside this ``with`` block."""
    memo: dict[Hashable, Any] = {}
    token = _MEMO.set(memo)
    try:
        yield memo
    finally:
        _MEMO.reset(token)
        memo.clear()


def shared() -> dict[Hashable, Any] | None:
    """The open step memo, or None outside one."""
    return _MEMO.get()

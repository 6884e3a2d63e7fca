"""What a resume may take from the spec it is given, compared with the checkpoint's.

A checkpoint records the resolved spec that wrote it. On resume the two are compared
key by key (``optimizers.G.lr: 0.0001 → 0.1``):

* another spec's checkpoint (its name differs) is refused, naming both names and
  hashes, unless ``--resume-from-other``;
* keys that only change when things happen (``logging``, ``checkpoints``,
  ``validation.every`` / ``samples`` / ``tile``) are taken and logged;
* every other difference changes the computation and is refused unless the user names
  it with ``--resume-changes KEY`` (globs like ``optimizers.*.lr``; ``allow`` takes
  them all); a taken change is applied after the checkpoint is restored;
* a few can never be honoured (a new optimizer type or parameter list: its saved
  state belongs to the old one; fewer iterations than the checkpoint has done).
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: Changes that alter when things happen, not what is computed.
CADENCE = (
    "logging.*",
    "checkpoints.*",
    "validation.every",
    "validation.samples",
    "validation.tile",
)
#: Changes that a restored state cannot follow, and why.
NEVER = {
    "optimizers.*.type": "the saved optimizer state belongs to the old optimizer type",
    "optimizers.*.params*": "the saved optimizer state holds the old parameter list",
    "optimizers.*.groups.*.params*": "the saved optimizer state holds the old parameter groups",
    "train.seed": "the restored random state already continues the old seed's streams",
}
ALL = "allow"


class _Absent:
    """A key one of the two specs does not have (a sentinel no YAML value equals)."""

    def __repr__(self) -> str:
        return "(absent)"


ABSENT = _Absent()


class ResumeRefused(Exception):
    """The spec changed in ways the resume was not told to take."""


@dataclass(frozen=True)
class ResumePolicy:
    """What the user allowed: ``changes`` (keys or globs; ``allow`` = any), another spec."""

    changes: tuple[str, ...] = ()
    from_other: bool = False

    @classmethod
    def parse(cls, written: Sequence[str], from_other: bool = False) -> ResumePolicy:
        """``--resume-changes`` values: repeatable, each a comma-separated list."""
        keys = tuple(k.strip() for item in written for k in item.split(",") if k.strip())
        return cls(keys, from_other)

    def takes(self, key: str) -> bool:
        return self.from_other or any(
            k in (ALL, key) or fnmatch.fnmatchcase(key, k) or key.startswith(k + ".")
            for k in self.changes
        )


@dataclass(frozen=True)
class Change:
    key: str
    old: Any
    new: Any

    def __str__(self) -> str:
        return f"{self.key}: {_show(self.old)} → {_show(self.new)}"


@dataclass
class Decision:
    """The differences, sorted into what was taken (and how) and what was not."""

    cadence: list[Change] = field(default_factory=list)
    taken: list[Change] = field(default_factory=list)
    other_spec: str | None = None  # how the checkpoint's spec differs in identity

    @property
    def changed(self) -> bool:
        return bool(self.cadence or self.taken or self.other_spec)

    def lines(self) -> list[str]:
        out = [self.other_spec] if self.other_spec else []
        out += [
            f"resume takes {c} (when things happen, not what is computed)" for c in self.cadence
        ]
        out += [f"resume takes {c} (--resume-changes)" for c in self.taken]
        return out


def _show(value: Any) -> str:
    if value is ABSENT:
        return repr(value)
    text: str = json.dumps(value, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "…"


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Every leaf by dotted key (list items by index); empty containers are leaves."""
    if isinstance(data, Mapping) and data:
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    if isinstance(data, list) and data:
        out = {}
        for i, value in enumerate(data):
            out.update(flatten(value, f"{prefix}{i}."))
        return out
    return {prefix[:-1]: data}


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Change]:
    a, b = flatten(dict(old)), flatten(dict(new))
    return [
        Change(k, a.get(k, ABSENT), b.get(k, ABSENT))
        for k in sorted(set(a) | set(b))
        if a.get(k, ABSENT) != b.get(k, ABSENT)
    ]


def _matches(key: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(key, p) for p in patterns)


def decide(
    *,
    checkpoint: str,
    old: Mapping[str, Any] | None,
    old_name: str,
    old_hash: str,
    new: Mapping[str, Any],
    new_name: str,
    new_hash: str,
    iteration: int,
    iterations: int,
    policy: ResumePolicy,
) -> Decision:
    """Sort the differences, or raise :class:`ResumeRefused` listing what was not taken."""
    decision = Decision()
    if old_name != new_name:
        if not policy.from_other:
            raise ResumeRefused(
                f"{checkpoint} was written by another spec: '{old_name}' "
                f"(sha256 {old_hash[:12]}), not '{new_name}' (sha256 {new_hash[:12]}). "
                "Resume it with the spec that wrote it, or pass --resume-from-other to "
                "continue its state under this spec"
            )
        decision.other_spec = (
            f"resuming the state of another spec '{old_name}' (sha256 {old_hash[:12]}) "
            f"under '{new_name}' (--resume-from-other)"
        )
    refused: list[str] = []
    if iterations < iteration:
        refused.append(
            f"train.iterations is {iterations} but the checkpoint is already at iteration "
            f"{iteration} (give at least {iteration})"
        )
    if old is None or old_hash == new_hash:
        if refused:
            raise ResumeRefused(f"cannot resume {checkpoint}: " + "; ".join(refused))
        return decision
    for change in differences(old, new):
        if change.key == "name":
            continue
        never = next((why for p, why in NEVER.items() if fnmatch.fnmatchcase(change.key, p)), None)
        if never is not None:
            refused.append(f"{change} cannot be taken on resume: {never}")
        elif _matches(change.key, CADENCE):
            decision.cadence.append(change)
        elif policy.takes(change.key):
            decision.taken.append(change)
        else:
            refused.append(str(change))
    if refused:
        raise ResumeRefused(
            f"cannot resume {checkpoint}: the spec changed since it was written "
            f"(sha256 {old_hash[:12]} → {new_hash[:12]}) in what it computes:\n  "
            + "\n  ".join(refused)
            + "\nTo take such changes, name them: --resume-changes KEY[,KEY] (globs such as "
            "'optimizers.*.lr'; 'allow' takes every one that can be taken), or start a "
            "new run (another --out, or --overwrite)"
        )
    return decision

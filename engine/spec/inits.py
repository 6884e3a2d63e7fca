"""``init:`` on a node: how its weights start (the rules; the compiler applies them).

A node's ``init`` sets the starting values of the weights of what it runs: for a
leaf with parameters, every weight of two or more dimensions (convolution and linear
kernels; a norm's 1-D scale keeps its ones) and, with ``bias: v``, every bias; for a
``parameter`` or ``buffer`` node, the tensor itself; for a composite or a chain, every
leaf inside that has weights and no ``init`` of its own (the innermost ``init`` wins).
``scale`` multiplies the weights after they are drawn, as ESRGAN scales Kaiming
initialisation by 0.1 in its residual blocks. ``zeros`` zeroes the biases too unless
``bias`` says otherwise (a residual branch that starts as nothing).

Written as a type name (``init: zeros``) or a mapping (``init: {type: kaiming_normal,
scale: 0.1}``); values may be ``$expressions``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.spec.diagnostics import Diagnostics, Loc, did_you_mean, quote_list

_COMMON = ("scale", "bias")
#: Each type and the keys it reads besides ``type``.
INIT_TYPES: dict[str, tuple[str, ...]] = {
    "zeros": ("bias",),
    "ones": ("bias",),
    "constant": ("value", *_COMMON),
    "normal": ("mean", "std", *_COMMON),
    "trunc_normal": ("mean", "std", "low", "high", *_COMMON),
    "uniform": ("low", "high", *_COMMON),
    "kaiming_normal": ("a", "mode", "nonlinearity", *_COMMON),
    "kaiming_uniform": ("a", "mode", "nonlinearity", *_COMMON),
    "xavier_normal": ("gain", *_COMMON),
    "xavier_uniform": ("gain", *_COMMON),
    "orthogonal": ("gain", *_COMMON),
}
#: Types that need a tensor of at least two dimensions (they read fan-in and fan-out).
NEEDS_MATRIX = frozenset(
    {"kaiming_normal", "kaiming_uniform", "xavier_normal", "xavier_uniform", "orthogonal"}
)
MODES = ("fan_in", "fan_out")
NONLINEARITIES = ("relu", "leaky_relu", "linear", "sigmoid", "tanh", "selu", "conv2d")
INIT_KEYS = ("type", *sorted({k for keys in INIT_TYPES.values() for k in keys}))


@dataclass(frozen=True)
class Init:
    """A parsed ``init:``; ``explicit`` is false when it was inherited from a composite."""

    type: str
    options: tuple[tuple[str, Any], ...] = ()
    explicit: bool = True

    def get(self, key: str, default: Any = None) -> Any:
        return dict(self.options).get(key, default)

    def inherited(self) -> Init:
        return Init(self.type, self.options, explicit=False)

    def __str__(self) -> str:
        extra = ", ".join(f"{k}: {v}" for k, v in self.options)
        return f"{{type: {self.type}{', ' + extra if extra else ''}}}"


def parse_init(raw: Any, at: Loc | None, diags: Diagnostics) -> Init | None:
    """An ``init:`` value (expressions already substituted) → :class:`Init`; problems are
    reported at ``at`` and give None."""
    if isinstance(raw, str):
        raw = {"type": raw}
    if not isinstance(raw, dict):
        diags.error(at, f"'init' must be a type name or a mapping with 'type', got {raw!r}")
        return None
    kind = raw.get("type")
    if kind not in INIT_TYPES:
        diags.error(
            at,
            f"unknown init type {kind!r}{did_you_mean(str(kind), INIT_TYPES)}; "
            f"types: {quote_list(INIT_TYPES)}",
        )
        return None
    allowed = INIT_TYPES[kind]
    ok = True
    for key, value in raw.items():
        if key == "type":
            continue
        if key not in allowed:
            diags.error(
                at,
                f"init type '{kind}' takes {quote_list(allowed)}; not '{key}'"
                f"{did_you_mean(key, allowed)}",
            )
            ok = False
        elif key == "mode" and value not in MODES:
            diags.error(at, f"init 'mode' must be one of {quote_list(MODES)}, got {value!r}")
            ok = False
        elif key == "nonlinearity" and value not in NONLINEARITIES:
            diags.error(
                at,
                f"init 'nonlinearity' must be one of {quote_list(NONLINEARITIES)}, got {value!r}",
            )
            ok = False
        elif key not in ("mode", "nonlinearity") and (
            isinstance(value, bool) or not isinstance(value, int | float)
        ):
            diags.error(at, f"init '{key}' must be a number, got {value!r}")
            ok = False
        elif key == "std" and value <= 0:
            diags.error(at, f"init 'std' must be above 0, got {value}")
            ok = False
    if ok and "low" in raw and "high" in raw and raw["low"] >= raw["high"]:
        diags.error(at, f"init 'low' must be below 'high', got {raw['low']} and {raw['high']}")
        ok = False
    if not ok:
        return None
    return Init(kind, tuple((k, v) for k, v in raw.items() if k != "type"))

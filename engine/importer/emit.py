"""Write a spec as YAML that reads like the shipped specs.

Sections are blocks separated by blank lines; small mappings and lists of scalars are
written on one line in flow style (``{call: G, in: data.lr}``), as a person writes
them. Only plain data goes in (dicts, lists, str, int, float, bool, None), so the
text loads back to exactly the dict that was written (a test checks it).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

WIDTH = 96
_PLAIN = re.compile(r"^[A-Za-z_$][A-Za-z0-9_.$/\-]*$")
_RESERVED = {"true", "false", "null", "yes", "no", "on", "off", "y", "n", "~"}


def scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise ValueError(f"cannot write {value!r} in a spec")
        text = repr(value)
        if "e" in text and "." not in text.split("e")[0]:
            mantissa, exponent = text.split("e")
            text = f"{mantissa}.0e{exponent}"  # 1e-05 → 1.0e-05: a float in YAML 1.1 and 1.2
        return text
    text = str(value)
    if _PLAIN.match(text) and text.lower() not in _RESERVED:
        return text
    return json.dumps(text, ensure_ascii=False)


def _key(key: Any) -> str:
    text = str(key)
    return text if _PLAIN.match(text) and text.lower() not in _RESERVED else json.dumps(text)


def flow(value: Any) -> str | None:
    """``value`` on one line, or None when it holds a list of mappings or is nested deeply."""
    if isinstance(value, dict):
        parts = []
        for k, v in value.items():
            inner = flow(v)
            if inner is None:
                return None
            parts.append(f"{_key(k)}: {inner}")
        return "{" + ", ".join(parts) + "}"
    if isinstance(value, list):
        parts = []
        for item in value:
            inner = flow(item)
            if inner is None or isinstance(item, dict):
                return None
            parts.append(inner)
        return "[" + ", ".join(parts) + "]"
    return scalar(value)


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def block(value: Any, indent: int = 0) -> list[str]:
    """Lines of a mapping or list in block style, children in flow style where they fit."""
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            one = flow(v) if _depth(v) <= 2 else None
            if not isinstance(v, dict | list) or (
                one is not None and len(pad) + len(str(k)) + len(one) + 2 <= WIDTH
            ):
                lines.append(f"{pad}{_key(k)}: {one if one is not None else scalar(v)}")
            else:
                lines.append(f"{pad}{_key(k)}:")
                lines.extend(block(v, indent + 2))
        return lines
    for item in value:
        one = flow(item) if _depth(item) <= 2 else None
        if one is not None and len(pad) + len(one) + 2 <= WIDTH:
            lines.append(f"{pad}- {one}")
        elif isinstance(item, dict):
            inner = block(item, indent + 2)
            lines.append(f"{pad}- {inner[0].lstrip()}")
            lines.extend(inner[1:])
        else:
            lines.append(f"{pad}-")
            lines.extend(block(item, indent + 2))
    return lines


def spec_text(spec: dict[str, Any], header: list[str]) -> str:
    """The spec file: ``header`` as comment lines, then each section (a blank line
    before every section that is a mapping or a list)."""
    out = [f"# {line}".rstrip() for line in header]
    for key, value in spec.items():
        if isinstance(value, dict | list) or key == next(iter(spec)):
            out.append("")
        out.extend(block({key: value}))
    return "\n".join(out) + "\n"

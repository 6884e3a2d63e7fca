"""Turn jsonschema's findings into diagnostics at the right file:line:col.

jsonschema reports *which* rule failed; users need *where* and *what to write
instead*. Unknown keys point at the key itself, with a did-you-mean from the keys
that are allowed there; wrong values point at the value and say what is expected.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from engine.spec.diagnostics import Diagnostics, did_you_mean, quote_list
from engine.spec.yamlio import Doc, Path

#: How to call the thing at a path in messages, e.g. "parameter 'out' of block 'conv'".
Namer = Callable[[Path], str]


def dotted(path: Path) -> str:
    """``('train', 'phases', 0, 'until')`` → ``train.phases[0].until``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def default_namer(path: Path) -> str:
    return f"'{dotted(path)}'" if path else "the spec"


def check_schema(
    validator: Draft202012Validator,
    data: Any,
    doc: Doc,
    diags: Diagnostics,
    *,
    base: Path = (),
    namer: Namer = default_namer,
    key_word: str = "key",
) -> int:
    """Validate ``data`` (found at ``base`` in ``doc``); return the number of errors."""
    count = 0
    for error in validator.iter_errors(data):
        count += _report(error, data, doc, diags, base, namer, key_word)
    return count


def _report(
    error: ValidationError,
    data: Any,
    doc: Doc,
    diags: Diagnostics,
    base: Path,
    namer: Namer,
    key_word: str,
) -> int:
    rel = tuple(error.absolute_path)
    path = base + rel
    kind = error.validator
    # Errors from iter_errors always carry the instance and the rule's value; the stubs
    # also allow jsonschema's "unset" marker, which only a hand-made error has.
    instance: Any = error.instance
    rule_value: Any = error.validator_value
    schema: Mapping[str, Any] = error.schema if isinstance(error.schema, Mapping) else {}
    if kind == "additionalProperties" and isinstance(instance, dict):
        allowed = list(schema.get("properties", {}))
        extras = [k for k in instance if k not in allowed]
        preposition = "for" if key_word == "parameter" else "in"
        # Keys every node has ('in', 'repeat', ...) are offered as what they are, never
        # as a block's parameters.
        reserved = [a for a in allowed if a in _RESERVED]
        params = [a for a in allowed if a not in _RESERVED]
        for key in extras:
            where = namer(path)
            hint = did_you_mean(key, params)
            if not hint and did_you_mean(key, reserved):
                close = did_you_mean(key, reserved).removeprefix(" (did you mean ").rstrip("?)")
                hint = f" (did you mean the node key {close}?)"
            msg = f"unknown {key_word} '{key}' {preposition} {where}{hint}"
            if not hint:
                msg += f"; allowed: {quote_list(params)}"
            diags.error(doc.key_loc((*path, key)), msg)
        return len(extras)
    if kind == "required":
        missing = [k for k in rule_value if k not in instance]
        for key in missing:
            diags.error(doc.key_loc(path), f"missing required {key_word} '{key}' in {namer(path)}")
        return len(missing)
    if "propertyNames" in error.relative_schema_path and "enum" in schema:
        name = instance
        choices = [str(c) for c in schema["enum"]]
        hint = did_you_mean(str(name), choices) or f"; allowed: {quote_list(choices)}"
        diags.error(doc.key_loc((*path, name)), f"'{name}' is not allowed in {namer(path)}{hint}")
        return 1
    if "propertyNames" in error.relative_schema_path:
        name = instance
        diags.error(
            doc.key_loc((*path, name)),
            f"invalid name '{name}' in {namer(path)}: names hold only letters, digits and '_'",
        )
        return 1
    if kind in ("minProperties", "minItems") and not instance:
        diags.error(doc.loc(path), f"{namer(path)} must not be empty")
        return 1
    if kind in ("anyOf", "oneOf") and error.context:
        if all(e.validator == "required" and not e.relative_path for e in error.context):
            # {block} or {chain}: one key of several is needed
            keys = [k for e in error.context for k in list(e.validator_value)]  # type: ignore[arg-type]
            diags.error(
                doc.key_loc(path),
                f"{namer(path)} needs "
                + " or ".join([", ".join(f"'{k}'" for k in keys[:-1]), f"'{keys[-1]}'"]),
            )
            return 1
        deeper = _matching_branch(error)
        if deeper:
            return sum(_report(e, data, doc, diags, base, namer, key_word) for e in deeper)
    expected = describe(error.schema)
    got = _show(instance)
    message = f"{namer(path)} must be {expected}, got {got}"
    if isinstance(instance, str) and "$" in instance and not instance.startswith("$"):
        # `when: not $flag` is text that mentions a parameter, not an expression
        message += f"; an expression starts with '$': write '${instance}'"
    diags.error(doc.loc(path), message)
    return 1


def _matching_branch(error: ValidationError) -> list[ValidationError]:
    """The errors of the one alternative whose type fit, when there is exactly one.

    ``layers: {conv5_5: 1}`` fails ``mapping of known names | $expression``; the useful
    message is about the mapping's bad key, not "must be a mapping or an expression".
    """
    shallow = ("type", "const", "enum", "pattern")
    branches: dict[object, list[ValidationError]] = {}
    for sub in error.context or []:
        branches.setdefault(sub.schema_path[0], []).append(sub)
    fitting = [
        errs
        for errs in branches.values()
        if all(len(e.schema_path) > 2 or e.validator not in shallow for e in errs)
    ]
    return fitting[0] if len(fitting) == 1 else []


_HIDDEN = {"block", "op", "loss", "in", "repeat", "init", "chain", "share"}
#: Keys of a node that are not its block's parameters.
_RESERVED = {*_HIDDEN, "when"}


def _show(value: Any) -> str:
    if isinstance(value, str):
        return f"'{value}'"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    return repr(value)


_PATTERNS = {
    r"^\$": "an expression starting with '$'",
    r"^[A-Za-z0-9_]+$": "a name (letters, digits, '_')",
    r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$": "a reference like 'node' or 'node.port'",
}


def describe(schema: Any) -> str:
    """A short English description of what ``schema`` accepts."""
    if schema is True or schema == {}:
        return "any value"
    if not isinstance(schema, dict):
        return "nothing"
    if "const" in schema:
        return _show(schema["const"])
    if "enum" in schema:
        return "one of " + ", ".join(_show(v) for v in schema["enum"])
    if "anyOf" in schema or "oneOf" in schema:
        parts = [
            describe(s)
            for s in (schema["anyOf"] if "anyOf" in schema else schema["oneOf"])
            if not (isinstance(s, dict) and s.get("pattern") == r"^\$")
        ]
        unique = list(dict.fromkeys(parts))
        return " or ".join(unique)
    kind = schema.get("type")
    if isinstance(kind, list):
        return " or ".join(describe({**schema, "type": k}) for k in kind)
    bounds = _bounds(schema)
    if kind == "integer":
        return "an integer" + bounds
    if kind == "number":
        return "a number" + bounds
    if kind == "boolean":
        return "true or false"
    if kind == "null":
        return "null"
    if kind == "string":
        pattern = schema.get("pattern")
        if pattern in _PATTERNS:
            return _PATTERNS[pattern]
        return "a non-empty string" if schema.get("minLength") else "a string"
    if kind == "array":
        if "prefixItems" in schema:
            return f"a list of {len(schema['prefixItems'])} items"
        items = schema.get("items")
        size = ""
        if schema.get("minItems") == schema.get("maxItems") and schema.get("minItems"):
            size = f" of {schema['minItems']}"
        if isinstance(items, dict) and items:
            return f"a list{size} of {_plural(describe(items))}"
        return f"a list{size}"
    if kind == "object":
        return "a mapping"
    return "a valid value"


def _bounds(schema: dict[str, Any]) -> str:
    parts = []
    for key, sign in (
        ("minimum", "≥"),
        ("exclusiveMinimum", ">"),
        ("maximum", "≤"),
        ("exclusiveMaximum", "<"),
    ):
        if key in schema:
            parts.append(f"{sign} {_num(schema[key])}")
    return " " + " and ".join(parts) if parts else ""


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _plural(text: str) -> str:
    text = re.sub(r"^an? ", "", text)
    return re.sub(r"^(integer|number|name|reference|string|list|mapping)", r"\1s", text)

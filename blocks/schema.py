"""JSON Schemas for blocks, derived from their constructors' typed signatures.

``block_schema(info)`` is the single source of a block's parameter schema: the
committed files under ``schemas/blocks/`` are its output (``python cli.py schema``)
and ``validate`` reads those files, so validation never imports torch.
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from blocks.registry import INFERRED_PARAMS, BlockInfo, Range

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

#: Node keys that are not block parameters; the spec skeleton owns their schemas.
RESERVED_NODE_KEYS = ("block", "op", "loss", "in", "repeat", "when", "init", "chain", "share", "as")

#: A parameter value may be a ``$expression`` inside a composite block.
EXPRESSION = {"type": "string", "pattern": r"^\$"}


class SchemaError(Exception):
    """A constructor annotation has no JSON Schema equivalent."""


def type_schema(annotation: Any) -> dict[str, Any]:
    """The JSON Schema of one Python type annotation."""
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is Annotated:
        schema = type_schema(args[0])
        for extra in args[1:]:
            if isinstance(extra, Range):
                schema.update(_range_keywords(extra))
        return schema
    if origin is Literal:
        return {"enum": list(args)}
    if origin in (Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        schemas = [type_schema(a) for a in members]
        if len(members) < len(args):
            schemas.append({"type": "null"})
        return schemas[0] if len(schemas) == 1 else {"anyOf": schemas}
    if origin in (list, tuple) or annotation in (list, tuple):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return {
                "type": "array",
                "prefixItems": [type_schema(a) for a in args],
                "minItems": len(args),
                "maxItems": len(args),
            }
        return {"type": "array", "items": type_schema(args[0])} if args else {"type": "array"}
    if origin is dict or annotation is dict:
        value = type_schema(args[1]) if args else {}
        schema = {"type": "object", "additionalProperties": value}
        if args and get_origin(args[0]) is Literal:
            schema["propertyNames"] = {"enum": list(get_args(args[0]))}
        return schema
    simple = {bool: "boolean", int: "integer", float: "number", str: "string"}
    if annotation in simple:
        return {"type": simple[annotation]}
    if annotation is Any:
        return {}
    raise SchemaError(f"no JSON Schema for annotation {annotation!r}")


def _range_keywords(r: Range) -> dict[str, float]:
    names = {"ge": "minimum", "gt": "exclusiveMinimum", "le": "maximum", "lt": "exclusiveMaximum"}
    return {names[k]: getattr(r, k) for k in names if getattr(r, k) is not None}


def _param_docs(doc: str) -> dict[str, str]:
    """Parameter descriptions from a Google-style ``Args:`` section."""
    docs: dict[str, str] = {}
    section = re.split(r"^\s*Args:\s*$", doc, maxsplit=1, flags=re.M)
    if len(section) < 2:
        return docs
    current = None
    for line in section[1].splitlines():
        if not line.strip():
            continue
        m = re.match(r"^\s{0,8}(\w+)(?: \([^)]*\))?:\s*(.*)$", line)
        if m and not line.startswith(" " * 9):
            current = m.group(1)
            docs[current] = m.group(2).strip()
        elif current and line.startswith(" "):
            docs[current] = f"{docs[current]} {line.strip()}".strip()
        else:
            break
    return docs


def _summary(doc: str) -> str:
    return re.split(r"^\s*Args:\s*$", doc, maxsplit=1, flags=re.M)[0].strip()


def block_schema(info: BlockInfo) -> dict[str, Any]:
    """The JSON Schema of a block's node: its parameters plus the reserved keys."""
    factory = info.factory
    target = factory.__init__ if inspect.isclass(factory) else factory
    hints = typing.get_type_hints(target, include_extras=True)
    docs = _param_docs(info.doc)
    properties: dict[str, Any] = {key: True for key in RESERVED_NODE_KEYS}
    required: list[str] = []
    for name, param in inspect.signature(factory).parameters.items():
        if name in INFERRED_PARAMS:
            continue
        schema = type_schema(hints[name])
        if name in docs:
            schema["description"] = docs[name]
        if param.default is inspect.Parameter.empty:
            required.append(name)
        else:
            default = param.default
            schema["default"] = list(default) if isinstance(default, tuple) else default
        properties[name] = (
            {"anyOf": [schema, EXPRESSION]} if _accepts_expression(schema) else schema
        )
    return {
        "$schema": SCHEMA_DIALECT,
        "$id": f"blocks/{info.name}.json",
        "title": info.name,
        "description": _summary(info.doc),
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
        "x-loom": {
            "kind": info.kind,
            "inputs": list(info.inputs),
            "outputs": list(info.outputs),
            "variadic": info.variadic,
            "min_inputs": info.min_inputs,
            "grad": info.grad,
            "trainable": info.trainable,
            **({"invertible": True} if info.invertible else {}),
        },
    }


def _accepts_expression(schema: dict[str, Any]) -> bool:
    """Every parameter except plain strings may be written as a ``$expression``."""
    return schema.get("type") != "string"

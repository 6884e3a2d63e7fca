"""The small, safe expression language of parameter values.

A string that starts with ``$`` is an expression: ``$nf``, ``$nf * 2``,
``$gc // 2 + 1``, ``max($nf, 16)``, ``$nf if $wide else 32``. Names are written with a
leading ``$`` and refer to block parameters (and, in repeated nodes, ``$index``).
It is parsed with :mod:`ast` and evaluated by walking a whitelist of node types:
numbers, strings, booleans, ``+ - * / // % **``, comparisons, ``and or not``,
conditional expressions, lists, and the functions below. Nothing is ever ``eval``-ed.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Callable, Mapping
from typing import Any

_NAME = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")

_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type, Callable[[Any], Any]] = {
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
    ast.Not: operator.not_,
}
_COMPARE: dict[type, Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}
FUNCTIONS: dict[str, Callable[..., Any]] = {
    "min": min,
    "max": max,
    "abs": abs,
    "int": int,
    "float": float,
    "round": round,
    "floor": math.floor,
    "ceil": math.ceil,
    "log2": math.log2,
}
_MAX_POWER = 64
#: Limits that keep any expression fast and small, whoever wrote it: its text, its
#: syntax tree, and every value computed on the way (int bits, str and list lengths).
MAX_TEXT = 2000
MAX_NODES = 500
MAX_INT_BITS = 256
MAX_LENGTH = 10_000


class ExprError(ValueError):
    """An expression that cannot be parsed or evaluated; the message says why."""


def is_expression(value: object) -> bool:
    return isinstance(value, str) and value.startswith("$")


def evaluate(text: str, scope: Mapping[str, Any]) -> Any:
    """Evaluate the expression ``text`` (with its leading ``$``) in ``scope``."""
    source = _NAME.sub(r"\1", text[1:] if text.startswith("$") else text).strip()
    if not source:
        raise ExprError("empty expression")
    if len(source) > MAX_TEXT:
        raise ExprError(f"expression of {len(source)} characters is too long (at most {MAX_TEXT})")
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as exc:
        raise ExprError(f"cannot parse expression '{_short(text)}': {exc.msg}") from None
    except (RecursionError, MemoryError):
        raise ExprError(f"expression '{_short(text)}' is nested too deeply") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise ExprError(f"expression '{_short(text)}' is too large (more than {MAX_NODES} parts)")
    try:
        return _Evaluator(text, scope).visit(tree.body)
    except RecursionError:
        raise ExprError(f"expression '{_short(text)}' is nested too deeply") from None


def _short(text: str) -> str:
    return text if len(text) <= 60 else text[:57] + "..."


def _size(value: Any) -> tuple[str, int] | None:
    """What may grow without bound: (what, how big), or None for values of fixed size."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return "bits", value.bit_length()
    if isinstance(value, str | list | tuple):
        return "length", len(value)
    return None


def _too_big(left: Any, op: ast.operator, right: Any) -> str | None:
    """Whether ``left op right`` would exceed the limits, judged before computing it."""
    ints = isinstance(left, int) and isinstance(right, int)
    power_bits = left.bit_length() * right if ints and abs(left) > 1 and right > 0 else 0
    if isinstance(op, ast.Pow) and power_bits > MAX_INT_BITS:
        return f"a power of more than {MAX_INT_BITS} bits"
    sequences = (str, list, tuple)
    if isinstance(op, ast.Mult):
        for seq, n in ((left, right), (right, left)):
            grown = len(seq) * n if isinstance(seq, sequences) and isinstance(n, int) else 0
            if grown > MAX_LENGTH:
                return f"a result of length {grown} (at most {MAX_LENGTH})"
    if isinstance(op, ast.Add) and isinstance(left, str | list) and isinstance(right, str | list):
        grown = len(left) + len(right)
        if grown > MAX_LENGTH:
            return f"a result of length {grown} (at most {MAX_LENGTH})"
    return None


class _Evaluator:
    def __init__(self, text: str, scope: Mapping[str, Any]) -> None:
        self.text = text
        self.scope = scope

    def fail(self, why: str) -> ExprError:
        return ExprError(f"in expression '{_short(self.text)}': {why}")

    def visit(self, node: ast.AST) -> Any:
        method = getattr(self, f"_{type(node).__name__}", None)
        if method is None:
            raise self.fail(f"'{type(node).__name__}' is not allowed")
        try:
            return method(node)
        except ExprError:
            raise
        except (ArithmeticError, TypeError, ValueError) as exc:
            raise self.fail(str(exc)) from None

    def _Constant(self, node: ast.Constant) -> Any:
        if isinstance(node.value, bool | int | float | str) or node.value is None:
            return node.value
        raise self.fail(f"constant {node.value!r} is not allowed")

    def _Name(self, node: ast.Name) -> Any:
        literals = {"True": True, "False": False, "None": None, "true": True, "false": False}
        if node.id in literals and node.id not in self.scope:  # YAML's words too
            return literals[node.id]
        if node.id not in self.scope:
            from engine.spec.diagnostics import did_you_mean

            hint = did_you_mean(
                f"${node.id}", [f"${name}" for name in self.scope if name.isidentifier()]
            )
            raise self.fail(f"unknown parameter '${node.id}'{hint}")
        return self.scope[node.id]

    def _BinOp(self, node: ast.BinOp) -> Any:
        op = _BINARY.get(type(node.op))
        if op is None:
            raise self.fail(f"operator '{type(node.op).__name__}' is not allowed")
        left, right = self.visit(node.left), self.visit(node.right)
        if (
            isinstance(node.op, ast.Pow)
            and isinstance(right, int | float)
            and abs(right) > _MAX_POWER
        ):
            raise self.fail(f"exponent {right} is too large")
        why = _too_big(left, node.op, right)
        if why:
            raise self.fail(f"too large: {why}")
        result = op(left, right)
        size = _size(result)
        if size is not None and size[1] > (MAX_INT_BITS if size[0] == "bits" else MAX_LENGTH):
            raise self.fail(f"too large: a result of {size[1]} {size[0]}")
        return result

    def _UnaryOp(self, node: ast.UnaryOp) -> Any:
        op = _UNARY.get(type(node.op))
        if op is None:
            raise self.fail(f"operator '{type(node.op).__name__}' is not allowed")
        return op(self.visit(node.operand))

    def _BoolOp(self, node: ast.BoolOp) -> Any:
        values = [self.visit(v) for v in node.values]
        if isinstance(node.op, ast.And):
            return all(values)
        return any(values)

    def _Compare(self, node: ast.Compare) -> bool:
        left = self.visit(node.left)
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            fn = _COMPARE.get(type(op))
            if fn is None:
                raise self.fail(f"comparison '{type(op).__name__}' is not allowed")
            right = self.visit(comparator)
            if not fn(left, right):
                return False
            left = right
        return True

    def _IfExp(self, node: ast.IfExp) -> Any:
        return self.visit(node.body) if self.visit(node.test) else self.visit(node.orelse)

    def _List(self, node: ast.List) -> list[Any]:
        return [self.visit(e) for e in node.elts]

    _Tuple = _List

    def _Subscript(self, node: ast.Subscript) -> Any:
        """``$depths[$index]``: one item of a list (negative counts from the end)."""
        value, index = self.visit(node.value), self.visit(node.slice)
        if not isinstance(value, list | tuple | str):
            raise self.fail(f"only a list can be indexed, not {value!r}")
        if isinstance(index, bool) or not isinstance(index, int):
            raise self.fail(f"an index must be an integer, got {index!r}")
        if not -len(value) <= index < len(value):
            raise self.fail(f"index {index} is outside a list of {len(value)}")
        return value[index]

    def _Call(self, node: ast.Call) -> Any:
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            name = getattr(node.func, "id", "?")
            allowed = ", ".join(sorted(FUNCTIONS))
            raise self.fail(f"function '{name}' is not allowed (allowed: {allowed})")
        if node.keywords:
            raise self.fail("keyword arguments are not allowed")
        return FUNCTIONS[node.func.id](*[self.visit(a) for a in node.args])


def substitute(value: Any, scope: Mapping[str, Any]) -> Any:
    """Evaluate every expression inside ``value`` (recursing into lists and dicts)."""
    if is_expression(value):
        return evaluate(value, scope)
    if isinstance(value, list):
        return [substitute(v, scope) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, scope) for k, v in value.items()}
    return value

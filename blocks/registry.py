"""The one registry of built-in blocks.

A block is a class (usually an ``nn.Module``) with a keyword-only, typed constructor.
Registering it records how the graph talks to it (its input and output ports, whether
gradients flow through it, whether it may hold trainable parameters); everything else
— its JSON Schema, its docs, the parameter checks of ``validate`` — is derived from the
constructor's signature and docstring, so there is no second list to keep in sync.

This module imports no torch: the schema generator and the docs generator use it.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

BlockKind = Literal["module", "loss", "op"]

#: A block class or factory function; registering it returns it unchanged.
Factory = TypeVar("Factory", bound=Callable[..., Any])

#: Constructor parameters that the compiler fills from the shapes of the inputs;
#: they never appear in a spec.
INFERRED_PARAMS = frozenset({"in_ch", "in_chs"})


@dataclass(frozen=True)
class Range:
    """Bounds for a numeric parameter, used as ``Annotated[int, Range(ge=1)]``."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None


@dataclass(frozen=True)
class BlockInfo:
    """What the engine knows about one registered block."""

    name: str
    kind: BlockKind
    factory: Callable[..., Any]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    variadic: bool
    grad: bool
    trainable: bool
    min_inputs: int
    doc: str = field(repr=False)
    #: An invertible block of a normalizing flow: ``forward`` also returns the
    #: log-determinant, and ``reverse`` inverts it (see blocks/builtin/flow.py).
    invertible: bool = False

    @property
    def signature(self) -> inspect.Signature:
        return inspect.signature(self.factory)

    def param_names(self) -> list[str]:
        return [n for n in self.signature.parameters if n not in INFERRED_PARAMS]


class ParamError(ValueError):
    """A parameter value that fails only when the block is built (a file that is
    missing or holds the wrong thing). ``param`` names the parameter, so the engine can
    report the error at that parameter's place in the spec."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


class ParamFileNotFound(ParamError, FileNotFoundError):
    """A parameter names a file that does not exist."""


class RegistryError(Exception):
    """A block was registered twice or looked up under an unknown name."""


class Registry:
    """Maps block names to :class:`BlockInfo`; rejects duplicates."""

    def __init__(self) -> None:
        self._blocks: dict[str, BlockInfo] = {}

    def register(
        self,
        name: str,
        *,
        kind: BlockKind = "module",
        inputs: tuple[str, ...] = ("x",),
        outputs: tuple[str, ...] = ("out",),
        variadic: bool = False,
        min_inputs: int | None = None,
        grad: bool = True,
        trainable: bool = True,
        invertible: bool = False,
    ) -> Callable[[Factory], Factory]:
        """Class decorator that adds a block under ``name``.

        ``variadic`` blocks take any number of inputs (at least ``min_inputs``) on
        their single port; ``grad=False`` marks blocks that stop gradients (detach,
        superpixels); ``trainable=False`` marks blocks that never hold parameters;
        ``invertible`` marks the steps of a normalizing flow, whose outputs after the
        first are latents the flow splits off.
        """

        def add(factory: Factory) -> Factory:
            if name in self._blocks:
                raise RegistryError(f"block {name!r} is registered twice")
            _check_keyword_only(name, factory)
            self._blocks[name] = BlockInfo(
                name=name,
                kind=kind,
                factory=factory,
                inputs=inputs,
                outputs=outputs,
                variadic=variadic,
                grad=grad,
                trainable=trainable and kind == "module",
                min_inputs=min_inputs if min_inputs is not None else len(inputs),
                doc=inspect.getdoc(factory) or "",
                invertible=invertible,
            )
            return factory

        return add

    def get(self, name: str) -> BlockInfo:
        try:
            return self._blocks[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._blocks, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise RegistryError(f"unknown block {name!r}{hint}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._blocks

    def __iter__(self) -> Iterator[BlockInfo]:
        return iter(sorted(self._blocks.values(), key=lambda b: b.name))

    def __len__(self) -> int:
        return len(self._blocks)


def _check_keyword_only(name: str, factory: Callable[..., Any]) -> None:
    for p in inspect.signature(factory).parameters.values():
        if p.kind is not inspect.Parameter.KEYWORD_ONLY:
            raise RegistryError(
                f"block {name!r}: constructor parameter {p.name!r} must be keyword-only"
            )
        if p.annotation is inspect.Parameter.empty:
            raise RegistryError(
                f"block {name!r}: constructor parameter {p.name!r} needs a type hint"
            )


REGISTRY = Registry()
register = REGISTRY.register

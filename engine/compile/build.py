"""``build``: a spec into its networks, as ``nn.Module``s ready to train or run."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import fx

from engine.compile.guard import SizeGuard
from engine.compile.network import CompiledNetwork, Inference, Padding, materialize
from engine.compile.probe import ProbeKind
from engine.compile.shapes import SpecShapes, infer_spec
from engine.compile.sizes import size_text
from engine.load import Spec, load_spec
from engine.spec.diagnostics import Diagnostics, SpecError


def resolve(spec_or_path: Spec | str | Path, overrides: Sequence[str] = ()) -> Spec:
    if isinstance(spec_or_path, Spec):
        if overrides:
            raise ValueError("overrides apply when loading; pass a path, or load_spec(...) first")
        return spec_or_path
    return load_spec(spec_or_path, tuple(overrides))


def check_shapes(spec: Spec, batch: int | None = None, *, probe: ProbeKind = "meta") -> SpecShapes:
    """Shape inference of the whole spec; :class:`SpecError` on any shape problem.

    ``probe="meta"`` (the default) gives exact shapes at ``batch``, as ``inspect``
    reports them; ``"cpu"`` runs CPU kernels, on empty batches where that saves
    arithmetic: every layer's channels at a fraction of the cost (see
    :mod:`engine.compile.probe`).
    """
    diags = Diagnostics()
    shapes = infer_spec(spec, diags, batch, probe)
    if diags.errors:
        raise SpecError(diags)
    return shapes


def build(
    spec_or_path: Spec | str | Path,
    overrides: Sequence[str] = (),
    *,
    device: torch.device | str = "cpu",
) -> dict[str, fx.GraphModule]:
    """Compile every network of a spec into a ``torch.fx.GraphModule``.

    Input channels of every layer come from shape inference over the training graph
    (a discriminator after a flatten gets the linear size of the configured crop).
    Raises :class:`SpecError` for an invalid spec or a shape problem, with places.
    """
    spec = resolve(spec_or_path, overrides)
    shapes = check_shapes(spec, batch=1, probe="cpu")
    return {name: compile_network(shapes.networks[name], device) for name in spec.networks}


def compile_network(inference: Inference, device: torch.device | str = "cpu") -> CompiledNetwork:
    """One network from its finished shape pass, refusing input sizes it cannot take.

    The module :func:`~engine.compile.network.materialize` builds, with the size guard
    (:mod:`engine.compile.guard`) attached: an input the network would silently answer
    at the wrong size raises instead. ``build`` and the trainer both compile this way.
    """
    module = materialize(inference, device)
    guard = SizeGuard(inference.network, inference)
    module.check_inputs(guard)
    if inference.network.pad is not None:
        rule = guard.rule()
        if rule.fixed is not None or not rule.proportional:
            diags = Diagnostics()
            diags.error(
                inference.network.loc,
                f"network '{inference.network.name}': 'pad' needs a network whose output "
                f"scales with its input ({size_text(rule)})",
            )
            raise SpecError(diags)
        module.padding = Padding(inference.network.pad, rule.multiple or 1, guard.ratios)
    return module

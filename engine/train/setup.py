"""A run's set-up: networks (with their pretrained weights), the graph's ops and
losses, optimizers with their schedules, and the data loaders.

Each builder takes the spec's settings and graphs, never the spec dict. Problems
found while building (a weights file that does not fit, a loss whose weights file is
missing) are collected and raised together as a :class:`SpecError` at their keys.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn

from blocks.registry import REGISTRY
from engine.compile.build import compile_network
from engine.compile.shapes import SpecShapes
from engine.compile.weights import load_weights
from engine.graph.select import parameter_nodes, unowned_parameters
from engine.graph.select import parameter_selector as graph_selector
from engine.load import Spec
from engine.spec.diagnostics import Diagnostics
from engine.train.optim import build_optimizer
from engine.train.schedules import Schedule

Log = Callable[[str], None]


@dataclass
class OptimizerRun:
    """One optimizer as the loop uses it: what it owns, its schedule, its clip."""

    name: str
    optimizer: torch.optim.Optimizer
    params: list[str]  # qualified parameter names it owns
    networks: frozenset[str]
    schedule: Schedule
    clip_norm: float | None
    clip_value: float | None
    micro: int = 0  # batches accumulated toward the next step


def build_networks(
    spec: Spec, shapes: SpecShapes, device: torch.device, log: Log, problems: Diagnostics
) -> dict[str, nn.Module]:
    """Every network, compiled, with its pretrained weights; frozen ones in eval mode."""
    train = spec.settings.train
    networks: dict[str, nn.Module] = {}
    for name, net in spec.networks.items():
        module: nn.Module = compile_network(shapes.networks[name], device)
        pretrained = spec.settings.pretrained.get(name)
        if pretrained is not None:
            try:
                report = load_weights(
                    module, pretrained.path, strict=pretrained.strict, key_map=pretrained.key_map
                )
            except Exception as exc:  # any failure to read or fit the file is about this key
                hint = (
                    f"\n(to load only the keys that fit: networks.{name}.pretrained.strict: false)"
                    if pretrained.strict
                    else ""
                )
                where = spec.doc.loc(("networks", name, "pretrained", "path"))
                problems.error(where, f"network {name}: pretrained weights not loaded: {exc}{hint}")
            else:
                log(
                    f"network {name}: pretrained weights from {pretrained.path}: {report.summary()}"
                )
        if not net.trainable:
            module.requires_grad_(False).eval()
        if train is not None and train.channels_last:
            module = module.to(memory_format=torch.channels_last)
        if train is not None and train.compile:
            module = torch.compile(module)  # type: ignore[assignment]  # a module, typed as callable
        networks[name] = module
    return networks


def build_graph_modules(
    spec: Spec, shapes: SpecShapes, device: torch.device, log: Log, problems: Diagnostics
) -> tuple[dict[str, nn.Module], dict[str, nn.Module]]:
    """The training graph's ops and losses. A block that fails to build (a weights file
    it cannot find) is reported at its parameter in the spec, with every other such
    failure; warnings are logged to train.log."""
    ops: dict[str, nn.Module] = {}
    losses: dict[str, nn.Module] = {}
    for name, attrs in spec.training.graph.nodes(data=True):
        if attrs["kind"] not in ("op", "loss"):
            continue
        info = REGISTRY.get(attrs["target"])
        kwargs = dict(attrs["params"])
        if "in_ch" in info.signature.parameters:
            first = next(iter(attrs["ports"].values()))[0]
            kwargs["in_ch"] = sum(shapes.values[s][1] for s in first)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                module = info.factory(**kwargs).to(device)
            except (OSError, ValueError) as exc:
                _node_problem(spec, name, attrs, exc, problems)
                continue
        for warning in caught:
            log(
                f"warning: graph node '{name}' ({attrs['target']}, {attrs['loc']}): "
                f"{warning.message}"
            )
        (ops if attrs["kind"] == "op" else losses)[name] = module
    return ops, losses


def _node_problem(
    spec: Spec, name: str, attrs: dict[str, Any], exc: Exception, problems: Diagnostics
) -> None:
    param = getattr(exc, "param", None)
    path = ("graph", name, param) if param else ("graph", name)
    message = f"graph node '{name}' ({attrs['target']}): {exc}"
    written = spec.expressions.get(path, "")
    variable = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", written.strip())
    if variable:
        message += (
            f"\n(here {param} is {written}: set it from the command line with the "
            f"override params.{variable[1]}=VALUE)"
        )
    problems.error(spec.doc.loc(path) or attrs["loc"], message)


def parameter_selector(spec: Spec, params: dict[str, nn.Parameter]) -> Callable[[str], list[str]]:
    """Selector → the parameter names it names, by the rule ``validate`` checks: a
    selector names leaf nodes, and a parameter goes with the node that holds it."""
    nodes = parameter_nodes(spec.networks)
    unowned = unowned_parameters(params, nodes)
    if unowned:  # no selector could reach them: they would silently go untrained
        raise RuntimeError(
            f"parameters held by no parameterized node: {', '.join(unowned[:5])}; the block "
            "catalog must mark their block trainable"
        )
    return graph_selector(params, nodes)


def build_optimizers(
    spec: Spec, params: dict[str, nn.Parameter], select: Callable[[str], list[str]]
) -> dict[str, OptimizerRun]:
    total = spec.settings.train.iterations if spec.settings.train is not None else 1
    found: dict[str, OptimizerRun] = {}
    for name, settings in spec.settings.optimizers.items():
        optimizer, owned = build_optimizer(settings, params, select)
        found[name] = OptimizerRun(
            name=name,
            optimizer=optimizer,
            params=owned,
            networks=frozenset(n.split(".", 1)[0] for n in owned),
            schedule=Schedule(settings.scheduler, total),
            clip_norm=settings.clip.norm,
            clip_value=settings.clip.value,
        )
    return found


def build_datasets(
    spec: Spec, *, seed: int, val_multiple: Callable[[], int]
) -> tuple[Any, Any | None]:
    """The training and validation datasets of the data section."""
    from engine.data import make_dataset

    data = spec.settings.data
    assert data.train is not None, "validated specs that train have data.train"
    make = partial(make_dataset, scale=spec.settings.scale, seed=seed, spec_dir=spec.path.parent)
    train = make(data.train, train=True)
    val = None
    if data.val is not None:
        val = make(data.val, train=False, multiple=val_multiple())
    return train, val

"""``run``'s memory check before the networks are built: ``inspect``'s figures at the
configured batch as training memory, against what the device has free. Kept apart from
:mod:`engine.compile.budget` (the declared-size check ``validate`` runs), because this
one needs ``inspect`` and ``engine.load`` imports ``budget``."""

from __future__ import annotations

import os

import torch

from engine.compile import budget
from engine.compile.budget import BYTES, ENV_MEMORY_CHECK, MOMENTS, Part, count, size
from engine.compile.inspect import inspect_spec
from engine.load import Spec
from engine.spec.diagnostics import Diagnostics, SpecError


def estimate(spec: Spec) -> list[Part]:
    """``inspect``'s figures (a meta pass at the configured batch) as training memory:
    weights, gradients, optimizer moments and EMA copies per parameter, plus every
    node's output kept for the backward pass, for each call of a network."""
    reports = inspect_spec(spec, probe_sizes=False)
    train = spec.settings.train
    half = train is not None and train.precision in ("fp16", "bf16")
    ema = set(train.ema.networks) if train is not None and train.ema is not None else set()
    moments: dict[str, int] = {}
    for opt in spec.settings.optimizers.values():
        kind = opt.type.lower()
        options = dict(opt.options)
        keeps = MOMENTS.get(kind, 0 if kind == "sgd" and not options.get("momentum") else 1)
        for selector in opt.params:
            root = selector.split(".", 1)[0]
            moments[root] = max(moments.get(root, 0), keeps)
    calls: dict[str, int] = {}
    for _, attrs in spec.training.graph.nodes(data=True):
        if attrs.get("kind") == "call":
            calls[attrs["target"]] = calls.get(attrs["target"], 0) + 1
    parts = []
    for report in reports:
        network = spec.networks[report.name]
        trained = network.trainable and report.name in moments
        per_param = BYTES * (1 + (1 + moments[report.name] if trained else 0))
        per_param += BYTES if report.name in ema else 0
        activations = report.memory * max(calls.get(report.name, 0), 1)
        if half:
            activations //= 2
        locs = {leaf: network.graph.nodes[leaf].get("loc") for leaf in network.leaves()}
        big = max(report.rows, key=lambda r: r.params, default=None)
        busy = max(report.rows, key=lambda r: r.memory, default=None)
        parts.append(
            Part(
                report.name,
                report.params,
                per_param,
                activations,
                (big.name, big.params, locs.get(big.name), big.block) if big else ("", 0, None, ""),
                (busy.name, busy.memory, locs.get(busy.name), busy.block)
                if busy
                else ("", 0, None, ""),
            )
        )
    return parts


def check_memory(spec: Spec, device: torch.device, processes: int = 1) -> None:
    """``run``'s check before the networks are built: raise :class:`SpecError` at the
    node that dominates when the estimate (``processes`` runs sharing this device's
    memory, as CPU processes share the RAM) exceeds what the device has free."""
    room = budget.available_memory(device)
    if room is None or os.environ.get(ENV_MEMORY_CHECK, "1").strip().lower() in ("0", "off"):
        return
    free, what = room
    parts = estimate(spec)
    need = sum(p.total for p in parts) * processes
    if need <= free:
        return
    weights = sum(p.params * p.bytes_per_param for p in parts)
    activations = sum(p.activations for p in parts)
    batch = spec.settings.data.train.batch_size if spec.settings.data.train else 1
    if weights >= activations:
        part = max(parts, key=lambda p: p.biggest[1])
        node, figure, loc, block = part.biggest
        detail = f"{count(figure)} parameters ({size(figure * BYTES)} of fp32 weights)"
        advice = "lower its sizes"
    else:
        part = max(parts, key=lambda p: p.busiest[1])
        node, figure, loc, block = part.busiest
        detail = f"{size(figure)} of activations at batch {batch}"
        advice = "lower data.train.batch_size or crop_size, or the network's sizes"
    per = ", ".join(
        f"'{p.network}' {count(p.params)} parameters × {p.bytes_per_param} bytes "
        f"+ {size(p.activations)} of activations"
        for p in parts
    )
    shared = f", {processes} processes" if processes > 1 else ""
    diags = Diagnostics()
    diags.error(
        loc or spec.networks[part.network].loc,
        f"the networks do not fit in memory: training needs about {size(need)} (an "
        f"estimate from inspect's figures at batch {batch}{shared}: {per}; the bytes per "
        f"parameter are weights, gradients and optimizer moments), more than the "
        f"{size(free)} {what}; the largest part is node '{node}' ({block}) of network "
        f"'{part.network}': {detail}; {advice} ({ENV_MEMORY_CHECK}=0 starts it anyway)",
    )
    raise SpecError(diags)

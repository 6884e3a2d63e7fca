"""Checks that span sections: optimizers, phases, validation, EMA.

* every trainable parameter belongs to exactly one optimizer (at the granularity of
  leaf nodes, ``G.body.3.rdb1.conv2``; selectors are network names, node-path prefixes
  or globs);
* phases are contiguous and cover ``train.iterations``; everything they name exists;
* every loss a step minimizes has a gradient path to that step's optimizer.
"""

from __future__ import annotations

from typing import Any

import networkx as nx

from engine.graph.model import Network, TrainingGraph
from engine.graph.select import parameter_nodes, select
from engine.graph.training import gradient_networks
from engine.settings import Settings
from engine.settings.base import iteration_of
from engine.spec.diagnostics import Diagnostics, Loc, did_you_mean, quote_list
from engine.spec.skeleton import OPTIMIZERS
from engine.spec.yamlio import Doc, Path, as_dict, as_list


def _selectors(value: Any) -> list[tuple[int | None, str]]:
    if isinstance(value, str):
        return [(None, value)]
    if isinstance(value, list):
        return [(i, v) for i, v in enumerate(value) if isinstance(v, str)]
    return []


def check_optimizers(
    spec: dict[str, Any], doc: Doc, networks: dict[str, Network | None], diags: Diagnostics
) -> dict[str, set[str]]:
    """Check parameter ownership; return each optimizer's networks."""
    optimizers = spec.get("optimizers")
    if optimizers is None and "train" not in spec:
        return {}  # nothing trains: a spec of networks only (inference, export, a library test)
    params = parameter_nodes(networks)
    all_networks = set(as_dict(spec.get("networks")))
    owner: dict[str, str] = {}
    opt_networks: dict[str, set[str]] = {}
    if not isinstance(optimizers, dict):
        optimizers = {}
    for opt_name, opt in optimizers.items():
        if not isinstance(opt, dict):
            continue
        base = ("optimizers", opt_name)
        kind = opt.get("type")
        if isinstance(kind, str) and kind.lower() not in OPTIMIZERS:
            diags.error(
                doc.loc((*base, "type")),
                f"unknown optimizer '{kind}'"
                f"{did_you_mean(kind.lower(), OPTIMIZERS)}; torch.optim has "
                f"{quote_list(OPTIMIZERS, limit=20)}",
            )
        chosen: set[str] = set()
        for index, selector in _selectors(opt.get("params")):
            path = (*base, "params") if index is None else (*base, "params", index)
            root = selector.split(".", 1)[0]
            if root in all_networks and root not in params and networks.get(root) is not None:
                diags.error(
                    doc.loc(path),
                    f"optimizer '{opt_name}': network '{root}' is not "
                    "trainable ('trainable: false')",
                )
                continue
            matched = select(selector, params)
            if not matched:
                if root in all_networks and networks.get(root) is None:
                    continue  # that network failed to expand; already reported
                names = [*params, *(leaf for leaves in params.values() for leaf in leaves)]
                hint = did_you_mean(selector, names)
                diags.error(
                    doc.loc(path),
                    f"optimizer '{opt_name}': '{selector}' matches no trainable parameters{hint}",
                )
            chosen.update(matched)
        for leaf in sorted(chosen):
            if leaf in owner and owner[leaf] != opt_name:
                clash = sorted(x for x in chosen if owner.get(x) == owner[leaf])
                diags.error(
                    doc.key_loc((*base, "params")),
                    f"parameters in two optimizers "
                    f"('{owner[leaf]}' and '{opt_name}'): {quote_list(clash, limit=3)}"
                    f" ({len(clash)} nodes)",
                )
                break
        for leaf in chosen:
            owner.setdefault(leaf, opt_name)
        _check_groups(opt, opt_name, base, chosen, params, doc, diags)
        opt_networks[opt_name] = {leaf.split(".", 1)[0] for leaf in chosen}
    for net_name, leaves in params.items():
        orphans = [leaf for leaf in leaves if leaf not in owner]
        if orphans:
            diags.error(
                doc.key_loc(("networks", net_name)),
                f"network '{net_name}': "
                f"{len(orphans)} of {len(leaves)} parameterized nodes are in no optimizer "
                f"(e.g. {quote_list(orphans, limit=3)}); add them to an optimizer's "
                "'params' or set 'trainable: false'",
            )
    return opt_networks


def _check_groups(
    opt: dict[str, Any],
    opt_name: str,
    base: Path,
    chosen: set[str],
    params: dict[str, list[str]],
    doc: Doc,
    diags: Diagnostics,
) -> None:
    groups = opt.get("groups")
    if not isinstance(groups, list):
        return
    for g, group in enumerate(groups):
        if not isinstance(group, dict):
            continue
        for index, selector in _selectors(group.get("params")):
            path = (*base, "groups", g, "params") + (() if index is None else (index,))
            matched = set(select(selector, params))
            if not matched:
                diags.error(
                    doc.loc(path),
                    f"optimizer '{opt_name}': group selector "
                    f"'{selector}' matches no trainable parameters",
                )
            elif not matched <= chosen:
                diags.error(
                    doc.loc(path),
                    f"optimizer '{opt_name}': group selector '{selector}'"
                    f" reaches parameters outside this optimizer's 'params'",
                )


def check_phases(
    spec: dict[str, Any],
    doc: Doc,
    tg: TrainingGraph | None,
    networks: dict[str, Network | None],
    opt_networks: dict[str, set[str]],
    diags: Diagnostics,
) -> None:
    train = spec.get("train")
    if not isinstance(train, dict) or not isinstance(train.get("phases"), list):
        return
    total = train.get("iterations") if isinstance(train.get("iterations"), int) else None
    phases = train["phases"]
    optimizers = as_dict(spec.get("optimizers"))
    graph = tg.graph if tg is not None else None
    losses = tg.losses() if tg is not None else []
    reach = gradient_networks(tg, networks) if tg is not None else {}
    params = parameter_nodes(networks)
    seen_names: dict[str, Loc | None] = {}
    previous_end = 0
    for p, phase in enumerate(phases):
        if not isinstance(phase, dict):
            continue
        base = ("train", "phases", p)
        name = phase.get("name")
        if isinstance(name, str):
            if name in seen_names:
                diags.error(
                    doc.loc((*base, "name")),
                    f"phase name '{name}' is used twice (also at {seen_names[name]})",
                )
            seen_names[name] = doc.loc((*base, "name"))
        label = f"phase '{name}'" if isinstance(name, str) else f"phase {p}"
        previous_end = _check_until(
            phase, p, len(phases), base, label, total, previous_end, doc, diags
        )
        for i, glob in enumerate(as_list(phase.get("frozen"))):
            if isinstance(glob, str) and not select(glob, params):
                diags.error(
                    doc.loc((*base, "frozen", i)),
                    f"{label}: 'frozen' entry '{glob}' matches no trainable parameters",
                )
        for opt_name in as_dict(phase.get("lr")):
            if opt_name not in optimizers:
                diags.error(
                    doc.key_loc((*base, "lr", opt_name)),
                    f"{label}: unknown optimizer '{opt_name}'{did_you_mean(opt_name, optimizers)}",
                )
        for s, step in enumerate(as_list(phase.get("steps"))):
            if isinstance(step, dict):
                _check_step(
                    step,
                    (*base, "steps", s),
                    label,
                    optimizers,
                    losses,
                    graph,
                    reach,
                    opt_networks,
                    doc,
                    diags,
                )


def _check_until(
    phase: dict[str, Any],
    p: int,
    count: int,
    base: Path,
    label: str,
    total: int | None,
    previous_end: int,
    doc: Doc,
    diags: Diagnostics,
) -> int:
    last = p == count - 1
    if "until" not in phase:
        if not last:
            diags.error(
                doc.key_loc((*base, "name")),
                f"{label} needs 'until:' (only the last phase may run to the end of training)",
            )
        elif total is not None and previous_end == total:
            diags.warning(
                doc.key_loc((*base, "name")),
                f"{label} is empty (the phases before it run to train.iterations, "
                f"{total}): it never runs",
            )
        return total or previous_end
    if total is None:
        return previous_end
    end = iteration_of(phase["until"], total)
    if end is None:
        return previous_end
    at = doc.loc((*base, "until"))
    if end > total:
        diags.error(at, f"{label} ends at iteration {end}, after train.iterations ({total})")
    elif end < previous_end:
        diags.error(
            at,
            f"phases must be in order: {label} ends at iteration {end}, not after "
            f"the previous phase's end ({previous_end})",
        )
    elif end == previous_end:
        # ppon_stages-style schedules start later phases at once ([0, 0], [0, N]).
        diags.warning(
            at, f"{label} is empty (it ends where it starts, at iteration {end}): it never runs"
        )
    elif last and end < total:
        diags.error(
            at,
            f"iterations {end}..{total} are in no phase: {label} is the last phase; "
            "end it at train.iterations or remove 'until'",
        )
    return max(end, previous_end)


def _check_step(
    step: dict[str, Any],
    base: Path,
    label: str,
    optimizers: dict[str, Any],
    losses: list[str],
    graph: Any,
    reach: dict[str, set[str]],
    opt_networks: dict[str, set[str]],
    doc: Doc,
    diags: Diagnostics,
) -> None:
    opt_name = step.get("optimizer")
    known_opt = isinstance(opt_name, str) and opt_name in optimizers
    if isinstance(opt_name, str) and not known_opt:
        diags.error(
            doc.loc((*base, "optimizer")),
            f"{label}: unknown optimizer '{opt_name}'{did_you_mean(opt_name, optimizers)}",
        )
    minimize = step.get("minimize")
    if not isinstance(minimize, dict) or graph is None:
        return
    for loss in minimize:
        at = doc.key_loc((*base, "minimize", loss))
        if loss not in graph:
            diags.error(at, f"{label}: unknown loss '{loss}'{did_you_mean(loss, losses)}")
            continue
        if graph.nodes[loss]["kind"] == "invalid":
            continue
        if graph.nodes[loss]["kind"] != "loss":
            diags.error(at, f"{label}: '{loss}' is a {graph.nodes[loss]['kind']} node, not a loss")
            continue
        upstream = nx.ancestors(graph, loss) | {loss}
        if any(
            graph.nodes[n].get("broken") or graph.nodes[n]["kind"] == "invalid" for n in upstream
        ):
            continue  # an input of this loss is already reported as wrong
        if known_opt and opt_name in opt_networks:
            targets = opt_networks[opt_name]
            if targets and not reach.get(loss, set()) & targets:
                nets = quote_list(sorted(targets))
                diags.error(
                    at,
                    f"{label}: loss '{loss}' has no gradient path to the parameters "
                    f"of optimizer '{opt_name}' (networks {nets}); minimizing it there "
                    "changes nothing",
                )


def check_references(
    spec: dict[str, Any], doc: Doc, tg: TrainingGraph | None, diags: Diagnostics
) -> None:
    """``validation:`` and ``train.ema`` name things that exist."""
    networks = as_dict(spec.get("networks"))
    ema = as_dict(spec.get("train")).get("ema")
    if isinstance(ema, dict):
        for i, name in enumerate(as_list(ema.get("networks"))):
            if isinstance(name, str) and name not in networks:
                diags.error(
                    doc.loc(("train", "ema", "networks", i)),
                    f"ema: unknown network '{name}'{did_you_mean(name, networks)}",
                )
    validation = spec.get("validation")
    refs: list[tuple[Path, str]] = [
        (("validation", key), f"validation.{key}") for key in ("output", "input", "target")
    ]
    for p, phase in enumerate(as_list(as_dict(spec.get("train")).get("phases"))):
        if not isinstance(as_dict(phase).get("validation"), dict):
            continue
        where: Path = ("train", "phases", p, "validation", "output")
        refs.append((where, f"train.phases[{p}].validation.output"))
        if not isinstance(validation, dict):
            diags.error(
                doc.loc(where),
                f"train.phases[{p}].validation.output names what validation evaluates in "
                "this phase, but the spec has no 'validation:' section; add one (with "
                "every, output, input and target)",
            )
    if not isinstance(validation, dict) or tg is None:
        return
    for where, label in refs:
        ref = _at(spec, where)
        if not isinstance(ref, str):
            continue
        base = ref.split(".", 1)[0] if not ref.startswith("data.") else ref
        if base not in tg.graph:
            if ref.startswith("data."):
                continue  # unused data keys are checked with the dataset
            names = [n for n in tg.graph if not n.startswith("data.")]
            diags.error(
                doc.loc(where),
                f"{label}: unknown graph node '{base}'{did_you_mean(base, names)}",
            )
            continue
        if "heats" in validation and where[-1] == "output":
            _check_sampled(tg, ref, doc.loc(where), label, diags)
        attrs = tg.graph.nodes[base]
        if validation.get("tile") and attrs.get("kind") == "call" and attrs.get("reverse"):
            diags.error(
                doc.loc(("validation", "tile")),
                f"validation.tile runs networks on tiles of their input, but {label} "
                f"'{base}' is a reverse call of a normalizing flow, whose latents span the "
                "whole image; remove validation.tile (or validate smaller images: "
                "data.val.crop_size)",
            )


def _check_sampled(
    tg: TrainingGraph, ref: str, where: Loc | None, label: str, diags: Diagnostics
) -> None:
    """``validation.heats`` samples an invertible network backwards: the output
    validated must be a reverse call's (``{call: G, reverse: true}``)."""
    node = ref.split(".", 1)[0]
    attrs = tg.graph.nodes[node] if node in tg.graph else {}
    if attrs.get("kind") == "call" and attrs.get("reverse"):
        return
    reverse = [
        n for n, a in tg.graph.nodes(data=True) if a.get("kind") == "call" and a.get("reverse")
    ]
    hint = (
        f"; the reverse calls here: {quote_list(reverse)}"
        if reverse
        else "; add a node such as {call: G, reverse: true, in: {lr: data.lr}, heat: 0.0} "
        "for a network with 'flow: INPUT'"
    )
    diags.error(
        where,
        f"{label}: validation.heats samples a reverse call's output at each heat, but "
        f"'{node}' is not a reverse call{hint} (or remove validation.heats)",
    )


def _at(spec: dict[str, Any], path: Path) -> Any:
    """The value at ``path`` in the spec, or None where any step of it is missing."""
    value: Any = spec
    for key in path:
        if isinstance(key, int):
            value = value[key] if isinstance(value, list) and key < len(value) else None
        else:
            value = value.get(key) if isinstance(value, dict) else None
    return value


def unused_graph_nodes(
    spec: dict[str, Any], doc: Doc, tg: TrainingGraph | None, diags: Diagnostics
) -> None:
    """Warn about graph nodes that no step and no validation uses."""
    if tg is None:
        return
    g = tg.graph
    used: set[str] = set()
    train = as_dict(spec.get("train"))
    for phase in as_list(train.get("phases")):
        for step in as_list(as_dict(phase).get("steps")):
            if isinstance(step, dict) and isinstance(step.get("minimize"), dict):
                used.update(k for k in step["minimize"] if k in g)
    validation = as_dict(spec.get("validation"))
    refs = [validation.get(key) for key in ("output", "input", "target")]
    for phase in as_list(train.get("phases")):
        refs.append(as_dict(as_dict(phase).get("validation")).get("output"))
    for ref in refs:
        if isinstance(ref, str) and ref.split(".", 1)[0] in g:
            used.add(ref.split(".", 1)[0])
    alive = set(used)
    for name in used:
        alive |= nx.ancestors(g, name)
    for name, attrs in g.nodes(data=True):
        if attrs["kind"] in ("data", "invalid") or name in alive:
            continue
        what = "loss" if attrs["kind"] == "loss" else "graph node"
        diags.warning(attrs["loc"], f"{what} '{name}' is not used by any step or by validation")


def flow_batch(
    settings: Settings, networks: dict[str, Network | None], doc: Doc, diags: Diagnostics
) -> None:
    """A normalizing flow trained on batches of one image: SRFlow gives NaN there (its
    actnorms initialize from the statistics of the first batch)."""
    train = settings.data.train
    if settings.train is None or train is None or train.batch_size != 1:
        return
    flows = [name for name, net in networks.items() if net is not None and net.flow is not None]
    if flows:
        at = doc.loc(("data", "train", "batch_size")) or doc.key_loc(("data", "train"))
        diags.warning(
            at,
            f"batch_size 1 trains the normalizing flow of network '{flows[0]}' on one image "
            "a batch: SRFlow is known to give NaN there (its actnorms initialize from the "
            "first batch's statistics); use batch_size 2 or more, with train.accumulate "
            "for a larger batch than memory holds",
        )

"""The spec pipeline up to a proven-consistent spec: load, resolve, check, expand.

``load_spec(path, overrides)`` returns a :class:`Spec` or raises :class:`SpecError`
carrying every diagnostic found. Nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

from jsonschema import Draft202012Validator

from engine import checks
from engine.compile import budget
from engine.data.kinds import FOLDER_KEYS
from engine.graph.expand import Expander
from engine.graph.model import Network, TrainingGraph
from engine.graph.training import TrainingGraphBuilder
from engine.settings import Settings, parse_settings
from engine.spec.catalog import Catalog, default_catalog
from engine.spec.diagnostics import Diagnostics, Loc, SpecError
from engine.spec.library import BlockTable
from engine.spec.paths import PathPolicy
from engine.spec.resolve import apply_overrides, find_file, load_with_extends, strip_replace_markers
from engine.spec.schema_check import check_schema
from engine.spec.skeleton import DATASET_PROVIDES, SPEC
from engine.spec.yamlio import Doc, Path, as_dict, as_list, load_yaml

_SPEC_VALIDATOR = Draft202012Validator(SPEC)


@dataclass
class Spec:
    """A resolved, validated spec: its data, where it came from, and its graphs."""

    path: FsPath
    data: dict[str, Any]
    doc: Doc
    networks: dict[str, Network]
    training: TrainingGraph
    settings: Settings
    diagnostics: Diagnostics = field(default_factory=Diagnostics)
    #: Where a graph parameter or loss weight was a ``$expression``: its path in the
    #: spec → the expression as written (``data`` holds its value).
    expressions: dict[tuple[Any, ...], str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.data.get("name", self.path.stem))

    @property
    def hash(self) -> str:
        """sha256 of the resolved spec (canonical JSON), to tell runs apart."""
        text = json.dumps(self.data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def warnings(self) -> list[Any]:
        return self.diagnostics.warnings


def check_spec(
    path: str | FsPath,
    overrides: list[str] | tuple[str, ...] = (),
    catalog: Catalog | None = None,
    *,
    allow: Sequence[str | FsPath] = (),
    strict: bool = False,
) -> tuple[Spec | None, Diagnostics]:
    """Run every check; return the spec (None when it has errors) and all diagnostics.

    ``allow`` names folders outside the spec's project that its references may reach
    (see engine/spec/paths.py). ``strict`` (CI on specs from strangers) also refuses
    data and weights paths that are absolute or lead outside the project."""
    diags = Diagnostics()
    catalog = catalog or default_catalog()
    found = find_file(str(path), None)
    if found is None:
        diags.error(Loc(str(path)), "spec file not found")
        return None, diags
    policy = PathPolicy.for_spec(found, allow)
    doc = load_with_extends(found, diags, policy)
    if doc is None:
        return None, diags
    doc.data = strip_replace_markers(doc.data)
    apply_overrides(doc, overrides, diags)
    data = doc.data
    check_schema(_SPEC_VALIDATOR, data, doc, diags)
    networks, training, expressions = _expand_all(data, doc, found, catalog, diags, policy)
    settings = parse_settings(data, doc, diags, found.parent)
    checks.flow_batch(settings, networks, doc, diags)
    if strict:
        _strict_paths(data, doc, policy, found.parent, diags)
    if diags.errors:
        return None, diags
    assert training is not None
    nets = {k: v for k, v in networks.items() if v is not None}
    spec = Spec(found, data, doc, nets, training, settings, diags, expressions)
    return spec, diags


def is_library(path: str | FsPath) -> bool:
    """A block library (``blocks:`` and no ``networks:``) rather than a runnable spec."""
    found = find_file(str(path), None)
    if found is None:
        return False
    doc = load_yaml(found, Diagnostics())  # the same limits as every spec read
    data = doc.data if doc is not None else None  # a broken file is reported in full later
    return (
        isinstance(data, dict)
        and "blocks" in data
        and "networks" not in data
        and "name" not in data
    )


def check_library(
    path: str | FsPath, catalog: Catalog | None = None, *, allow: Sequence[str | FsPath] = ()
) -> Diagnostics:
    """Check a library file: its schema, then every block that needs no parameters,
    expanded with its defaults (references, ports, cycles, parameter values)."""
    diags = Diagnostics()
    catalog = catalog or default_catalog()
    table = BlockTable(catalog, diags, PathPolicy.for_spec(FsPath(path), allow))
    found = table.import_file(str(path), None, Loc(str(path)))
    if not found:
        return diags
    expander = Expander(catalog, table, diags, {}, FsPath(path).parent)
    for name, block in found.items():
        declared = as_dict(block.data.get("params"))
        if any(
            isinstance(d, dict) and "type" in d and "default" not in d for d in declared.values()
        ):
            continue  # needs parameters from its user; checked where it is used
        loc = block.loc
        doc = Doc({"use": name}, {(): loc, ("use",): loc} if loc is not None else {}, {})
        expander.network(name, {"use": name}, doc, block_alone=True)
    return diags


def load_spec(
    path: str | FsPath,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    allow: Sequence[str | FsPath] = (),
) -> Spec:
    """Load, resolve and validate a spec; raise :class:`SpecError` listing every error."""
    spec, diags = check_spec(path, overrides, allow=allow)
    if spec is None:
        raise SpecError(diags)
    return spec


def _expand_all(
    data: dict[str, Any],
    doc: Doc,
    path: FsPath,
    catalog: Catalog,
    diags: Diagnostics,
    policy: PathPolicy,
) -> tuple[dict[str, Network | None], TrainingGraph | None, dict[tuple[Any, ...], str]]:
    table = BlockTable(catalog, diags, policy)
    for i, name in enumerate(as_list(data.get("imports"))):
        if isinstance(name, str):
            table.import_file(name, path.parent, doc.loc(("imports", i)))
    table.add_from(doc)
    scope = _global_scope(data, doc, diags)
    expressions = _substitute_globals(data, doc, scope, diags)
    origins = {key: doc.loc(("params", key)) for key in as_dict(data.get("params"))}
    expander = Expander(catalog, table, diags, scope, path.parent, origins)
    networks: dict[str, Network | None] = {}
    for name, net in as_dict(data.get("networks")).items():
        networks[name] = (
            expander.network(name, net, doc.subtree(("networks", name)))
            if isinstance(net, dict)
            else None
        )
    training = None
    graph = data.get("graph")
    if isinstance(graph, dict):
        builder = TrainingGraphBuilder(
            catalog, networks, list(as_dict(data.get("networks"))), _data_keys(data), diags
        )
        training = builder.build(graph, doc.subtree(("graph",)))
    elif isinstance(data.get("train"), dict):
        diags.error(
            doc.key_loc(("train",)),
            "'train:' needs a training graph: add 'graph:' with the network calls and losses",
        )
    budget.check_declared(networks, diags)
    opt_networks = checks.check_optimizers(data, doc, networks, diags)
    checks.check_phases(data, doc, training, networks, opt_networks, diags)
    checks.check_references(data, doc, training, diags)
    checks.unused_graph_nodes(data, doc, training, diags)
    return networks, training or TrainingGraph(), expressions


def _global_scope(data: dict[str, Any], doc: Doc, diags: Diagnostics) -> dict[str, Any]:
    """Names every ``$expression`` can use: ``scale`` and the top-level ``params:``."""
    from engine.spec.expr import ExprError, substitute

    scope: dict[str, Any] = {}
    if isinstance(data.get("scale"), int):
        scope["scale"] = data["scale"]
    params = data.get("params")
    if isinstance(params, dict):
        for key, value in params.items():
            try:
                scope[key] = substitute(value, scope)
            except ExprError as exc:
                diags.error(doc.loc(("params", key)), str(exc))
    return scope


def _substitute_globals(
    data: dict[str, Any], doc: Doc, scope: dict[str, Any], diags: Diagnostics
) -> dict[tuple[Any, ...], str]:
    """Evaluate ``$expressions`` in graph-node parameters and loss weights, in place;
    return the expressions replaced, by path.

    Networks keep theirs: they are evaluated per instance during expansion.
    """
    from engine.spec.expr import ExprError, substitute

    expressions: dict[tuple[Any, ...], str] = {}

    def visit(container: dict[str, Any] | list[Any], key: Any, path: Path) -> None:
        written = container[key]
        try:
            container[key] = substitute(written, scope)
        except ExprError as exc:
            diags.error(doc.loc(path), str(exc))
        if isinstance(written, str) and container[key] != written:
            expressions[path] = written

    graph = data.get("graph")
    for name, node in graph.items() if isinstance(graph, dict) else ():
        if isinstance(node, dict):
            for key in [k for k in node if k not in ("call", "op", "loss", "in")]:
                visit(node, key, ("graph", name, key))
    train = as_dict(data.get("train"))
    for p, phase in enumerate(as_list(train.get("phases"))):
        for s, step in enumerate(as_list(as_dict(phase).get("steps"))):
            minimize = as_dict(as_dict(step).get("minimize"))
            for loss in minimize:
                visit(minimize, loss, ("train", "phases", p, "steps", s, "minimize", loss))
    return expressions


def _data_keys(data: dict[str, Any]) -> tuple[str, ...] | None:
    """The ``data.<key>`` tensors the training dataset provides (every type's, once
    each, when its type is not one: the schema reports that); None without one."""
    section = data.get("data")
    if not isinstance(section, dict) or not isinstance(section.get("train"), dict):
        return None
    kind = section["train"].get("type")
    keys = DATASET_PROVIDES.get(kind) if isinstance(kind, str) else None
    if keys is not None:
        return keys
    return tuple(dict.fromkeys(k for ks in DATASET_PROVIDES.values() for k in ks))


def _strict_paths(
    data: dict[str, Any], doc: Doc, policy: PathPolicy, spec_dir: FsPath, diags: Diagnostics
) -> None:
    """``validate --strict``: data folders, subset lists and pretrained weights stay
    inside the project too (``run`` allows them anywhere: data is often kept elsewhere)."""
    from engine.data.paths import BUILTIN, candidates

    def check(value: Any, path: Path) -> None:
        if not isinstance(value, str) or value.startswith(BUILTIN):
            return
        written = FsPath(value)
        places = candidates(value, spec_dir)[:1]  # next to the spec, as the run looks first
        if written.is_absolute() or value.startswith("~") or "$" in value:
            diags.error(
                doc.loc(path) or Loc("?"),
                f"--strict: '{value}' is an absolute path (or names the environment); write "
                "it relative to the spec, inside its project",
            )
        elif places and not policy.allows(places[0]):
            diags.error(doc.loc(path) or Loc("?"), f"--strict: {policy.refusal(value)}")

    sections = as_dict(data.get("data"))
    for split in ("train", "val"):
        section = as_dict(sections.get(split))
        for key in (*FOLDER_KEYS, "subset"):
            value = section.get(key)
            for i, item in enumerate(value) if isinstance(value, list) else [(None, value)]:
                check(item, ("data", split, key) if i is None else ("data", split, key, i))
    for name, network in as_dict(data.get("networks")).items():
        pretrained = as_dict(as_dict(network).get("pretrained"))
        check(pretrained.get("path"), ("networks", name, "pretrained", "path"))

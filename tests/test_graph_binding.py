"""One rule for `in:` (networks and the training graph), for cycles, and for selectors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from engine.graph.model import Source
from engine.graph.select import (
    owning_node,
    parameter_nodes,
    parameter_selector,
    select,
    select_parameters,
    unowned_parameters,
)
from engine.load import check_spec

BASE = Path(__file__).resolve().parent / "broken" / "_base.yaml"


def _check(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "s.yaml"
    path.write_text(f"extends: {BASE}\n" + textwrap.dedent(text), encoding="utf-8")
    return check_spec(path)


def _errors(tmp_path: Path, text: str) -> list[str]:
    _, diags = _check(tmp_path, text)
    return [f"{d.loc.line}:{d.loc.col}: {d.message}" for d in diags.errors if d.loc]


# --------------------------------------------------------------- binding `in:`
def test_a_list_fills_several_ports_in_order_in_networks_and_in_the_graph(
    tmp_path: Path,
) -> None:
    spec, diags = _check(
        tmp_path,
        """\
        networks:
          G:
            nodes:
              mix: {block: residual, in: [head, head]}
              up: {block: pixel_shuffle, in: mix, scale: 2}
        graph:
          pix: {loss: l1, in: [fake.sr, data.hr]}
        """,
    )
    assert spec is not None, [str(d) for d in diags]
    assert spec.networks["G"].node("mix")["ports"] == {
        "x": [[Source("head")]],
        "y": [[Source("head")]],
    }
    assert spec.training.graph.nodes["pix"]["ports"] == {
        "pred": [[Source("fake", "sr")]],
        "target": [[Source("data.hr")]],
    }


def test_too_many_positional_inputs_is_the_same_error_in_the_graph(tmp_path: Path) -> None:
    errors = _errors(tmp_path, "graph:\n  pix: {loss: l1, in: [fake.sr, data.hr, data.lr]}\n")
    assert errors == ["3:23: loss 'l1' takes 2 inputs (pred, target), got 3"]


def test_a_misspelt_port_says_which_port_was_meant(tmp_path: Path) -> None:
    errors = _errors(tmp_path, "graph:\n  pix: {loss: l1, in: {pred: fake.sr, targt: data.hr}}\n")
    # The misspelling explains the unconnected 'target': one message, not two.
    assert errors == [
        "3:39: loss 'l1' has no input port 'targt' (did you mean 'target'?); ports: pred, target"
    ]


def test_a_required_port_left_out_is_reported_at_in(tmp_path: Path) -> None:
    errors = _errors(
        tmp_path,
        """\
        networks:
          G:
            nodes:
              mix: {block: residual, in: {x: head}}
              up: {block: pixel_shuffle, in: mix, scale: 2}
        """,
    )
    assert errors == ["5:34: node 'mix': input port 'y' of block 'residual' is not connected"]


def test_a_variadic_loss_in_the_graph_needs_its_minimum_of_inputs(tmp_path: Path) -> None:
    errors = _errors(tmp_path, "graph:\n  fm: {loss: feature_matching, in: [fake.sr]}\n")
    assert errors == ["3:36: loss 'feature_matching' needs at least 2 inputs, got 1"]


def test_every_bad_reference_of_one_list_is_reported(tmp_path: Path) -> None:
    errors = _errors(
        tmp_path,
        """\
        networks:
          G:
            nodes:
              both: {block: conv, in: [haed, lr, uup], out: 12}
              up: {block: pixel_shuffle, in: both, scale: 2}
        """,
    )
    assert errors == [
        "5:32: node 'both': unknown reference 'haed' (did you mean 'head'?)",
        "5:42: node 'both': unknown reference 'uup' (did you mean 'up'?)",
    ]


# ----------------------------------------------------------------------- cycles
def test_a_graph_node_reading_itself_is_a_cycle(tmp_path: Path) -> None:
    errors = _errors(tmp_path, "graph:\n  loop: {op: detach, in: loop}\n")
    assert errors == ["3:26: cycle in the training graph: loop → loop"]


def test_a_cycle_in_the_graph_prints_its_path_from_the_first_node(tmp_path: Path) -> None:
    errors = _errors(
        tmp_path,
        """\
        graph:
          a: {op: detach, in: c}
          b: {op: detach, in: a}
          c: {op: detach, in: b}
        """,
    )
    assert errors == ["3:23: cycle in the training graph: a → b → c → a"]


# -------------------------------------------------------------------- selectors
NODES = {
    "G": ["G.head", "G.body.0.conv", "G.body.1.conv", "G.body_tail", "G.conv", "G.conv_2"],
    "D": ["D.d1", "D.d2", "D.d10"],
}


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("D", ["D.d1", "D.d2", "D.d10"]),  # a network: all its nodes
        ("G.body", ["G.body.0.conv", "G.body.1.conv"]),  # a prefix, at dot boundaries
        ("G.body.1.conv", ["G.body.1.conv"]),  # one node
        ("G.conv", ["G.conv"]),  # not G.conv_2
        ("D.d?", ["D.d1", "D.d2"]),  # a glob over node names
        ("G.body.*", ["G.body.0.conv", "G.body.1.conv"]),  # '*' crosses dots
        ("G.*.bias", []),  # selectors name nodes, never single parameters
        ("G.bod", []),
    ],
)
def test_a_selector_names_leaf_nodes(selector: str, expected: list[str]) -> None:
    assert select(selector, NODES) == expected


def test_a_parameter_goes_with_the_longest_node_that_holds_it() -> None:
    leaves = {leaf for names in NODES.values() for leaf in names}
    assert owning_node("D.d1.parametrizations.weight.original", leaves) == "D.d1"
    assert owning_node("D.d10.bias", leaves) == "D.d10"
    assert owning_node("G.conv_2.weight", leaves) == "G.conv_2"
    assert owning_node("G.body.0.conv.norm.weight", leaves) == "G.body.0.conv"
    assert owning_node("G.nowhere.weight", leaves) is None
    assert unowned_parameters(["G.nowhere.weight", "G.conv.weight", "E.x.w"], NODES) == [
        "G.nowhere.weight"
    ]


def test_a_spectral_norm_conv_trains_all_that_validate_selected(tmp_path: Path) -> None:
    """`D.d?` names node D.d1 at validate time; at run time it must reach the weight
    too, which spectral norm keeps as D.d1.parametrizations.weight.original."""
    torch = pytest.importorskip("torch")
    from torch.nn.utils.parametrizations import spectral_norm

    spec, diags = _check(
        tmp_path,
        """\
        networks:
          D:
            inputs: {x: 3}
            nodes:
              d1: {block: conv, in: x, out: 8, spectral_norm: true}
              d2: {block: conv, in: d1, out: 1}
        graph:
          judge: {call: D, in: fake.sr}
          adv: {loss: gan, in: judge, type: lsgan, target: generator}
        optimizers:
          D: {type: adam, params: ["D.d?"], lr: 1.0e-4}
        """,
    )
    assert spec is not None, [str(d) for d in diags]
    nodes = parameter_nodes(spec.networks)
    assert select("D.d?", nodes) == ["D.d1", "D.d2"]

    conv = spectral_norm(torch.nn.Conv2d(3, 8, 3))
    names = [f"D.d1.{name}" for name, _ in conv.named_parameters()]
    assert "D.d1.parametrizations.weight.original" in names
    names += ["D.d2.weight", "D.d2.bias", "G.head.weight"]

    chosen = select_parameters("D.d?", names, nodes)
    assert sorted(chosen) == sorted(n for n in names if n.startswith("D."))
    assert parameter_selector(names, nodes)("D.d1") == [n for n in names if n.startswith("D.d1.")]
    assert unowned_parameters(names, nodes) == []

"""The spec language: expressions, repeat, composite blocks, extends, overrides, API."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine import SpecError, load_spec
from engine.graph.model import Source
from engine.spec.expr import ExprError, evaluate

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "tests" / "broken" / "_base.yaml"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def spec_with_nodes(tmp_path: Path, nodes: str, extra: str = "") -> Path:
    body = textwrap.indent(textwrap.dedent(nodes), " " * 6)
    return write(tmp_path, "s.yaml", f"extends: {BASE}\n{extra}networks:\n  G:\n    nodes:\n{body}")


# ------------------------------------------------------------------ expressions
@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("$nf", 64),
        ("$nf * 2 + $gc", 160),
        ("$gc // 3", 10),
        ("$max($nf, 100)", 100),
        ("$nf if $wide else 8", 64),
        ("-$gc ** 2", -1024),
        ("[$nf, $gc]", [64, 32]),
        ("$nf > 32 and $gc < 64", True),
    ],
)
def test_expressions_evaluate(text: str, value: object) -> None:
    assert evaluate(text, {"nf": 64, "gc": 32, "wide": True}) == value


@pytest.mark.parametrize(
    ("text", "gist"),
    [
        ("$nf.__class__", "'Attribute' is not allowed"),
        ("$__import__('os')", "function '__import__' is not allowed"),
        ("$open('x')", "function 'open' is not allowed"),
        ("$[x for x in (1, 2)]", "'ListComp' is not allowed"),
        ("$lambda: 1", "'Lambda' is not allowed"),
        ("$2 ** 1000", "too large"),
        ("$nf +", "cannot parse"),
        ("$nff", "did you mean '$nf'"),
    ],
)
def test_expressions_refuse_what_is_not_arithmetic(text: str, gist: str) -> None:
    with pytest.raises(ExprError, match=re.escape(gist)):
        evaluate(text, {"nf": 64})


# ------------------------------------------------------------ networks, repeat
def test_esrgan_generator_has_the_canonical_node_names() -> None:
    spec = load_spec(ROOT / "specs" / "esrgan.yaml")
    g = spec.networks["G"]
    convs = [n for n in g.leaves() if g.node(n)["block"] == "conv"]
    assert len(convs) == 23 * 3 * 5 + 6
    for name in (
        "conv_first",
        "body.0.rdb1.conv1",
        "body.22.rdb3.conv5",
        "conv_body",
        "conv_up1",
        "conv_up2",
        "conv_hr",
        "conv_last",
    ):
        assert g.node(name)["block"] == "conv", name
    assert "body.23.rdb1.conv1" not in g.graph
    # Dense connections: conv3 of an RDB sees the block input and conv1, conv2, concatenated.
    assert g.node("body.1.rdb2.conv3")["ports"]["x"] == [
        [Source("body.1.rdb1.out"), Source("body.1.rdb2.conv1"), Source("body.1.rdb2.conv2")]
    ]
    assert g.node("body.0.rdb1.conv1")["params"]["out"] == 32  # $gc substituted
    assert g.outputs == {"out": [Source("conv_last")]}


def test_repeat_chains_instances_and_exposes_index(tmp_path: Path) -> None:
    path = spec_with_nodes(
        tmp_path,
        """
        head: {block: conv, in: lr, out: 12}
        stack: {block: conv, in: head, out: $4 + $index, repeat: 3}
        up: {block: pixel_shuffle, in: stack, scale: 2}
        tail: {block: conv, in: up, out: 3}
    """,
    )
    g = load_spec(path).networks["G"]
    assert [g.node(f"stack.{i}")["params"]["out"] for i in range(3)] == [4, 5, 6]
    assert g.node("stack.1")["ports"]["x"] == [[Source("stack.0")]]
    assert g.node("up")["ports"]["x"] == [[Source("stack.2")]]


def test_list_input_is_concat_for_one_port_and_positional_for_several(tmp_path: Path) -> None:
    path = spec_with_nodes(
        tmp_path,
        """
        a: {block: conv, in: head, out: 12}
        both: {block: conv, in: [head, a], out: 12}
        mix: {block: residual, in: [head, both], scale: 0.2}
        sum: {block: add, in: [mix, head, a]}
        up: {block: pixel_shuffle, in: sum, scale: 2}
    """,
    )
    g = load_spec(path).networks["G"]
    assert g.node("both")["ports"] == {"x": [[Source("head"), Source("a")]]}
    assert g.node("mix")["ports"] == {"x": [[Source("head")]], "y": [[Source("both")]]}
    assert g.node("sum")["ports"] == {"x": [[Source("mix")], [Source("head")], [Source("a")]]}


def test_library_blocks_nest_and_keep_their_defaults(tmp_path: Path) -> None:
    lib = ROOT / "tests" / "specs" / "lib_tiny.yaml"
    path = spec_with_nodes(
        tmp_path,
        """
        head: {block: conv, in: lr, out: 12}
        trunk: {block: Body, in: head, nf: 12, repeat: 2}
        up: {block: pixel_shuffle, in: trunk, scale: 2}
    """,
        extra=f"imports: [{lib}]\n",
    )
    g = load_spec(path).networks["G"]
    assert g.node("trunk.1.layer.1")["params"] == {"out": 12, "act": "lrelu"}
    assert g.node("trunk.0.out")["ports"]["y"] == [[Source("trunk.0.layer.1")]]
    assert g.node("trunk.1.layer.0")["ports"]["x"] == [[Source("trunk.0.out")]]


def test_network_from_a_qualified_library_block(tmp_path: Path) -> None:
    lib = ROOT / "tests" / "specs" / "lib_tiny.yaml"
    path = write(
        tmp_path,
        "s.yaml",
        f"""
        extends: {BASE}
        networks:
          T: {{use: "{lib}#Body", params: {{nf: 3, depth: 1}}, trainable: false}}
    """,
    )
    net = load_spec(path).networks["T"]
    assert net.inputs == {"x": 3}
    assert set(net.leaves()) == {"layer.0", "out"}  # repeated nodes are always indexed
    assert not net.trainable


# ------------------------------------------------------------- extends, overrides
def test_extends_merges_maps_and_replaces_lists_and_marked_maps(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "child.yaml",
        f"""
        extends: {BASE}
        name: child
        optimizers:
          G: {{lr: 2.0e-4, betas: [0.5, 0.999]}}
        data:
          train: {{_replace: true, type: sr, hr: "builtin:photos"}}
    """,
    )
    spec = load_spec(path)
    assert spec.data["name"] == "child"
    assert spec.data["optimizers"]["G"] == {
        "type": "adam",
        "params": "G",
        "lr": 2e-4,
        "betas": [0.5, 0.999],
    }
    assert spec.data["data"]["train"] == {"type": "sr", "hr": "builtin:photos"}
    assert spec.networks["G"].leaves() == ["head", "up", "tail"]


def test_overrides_set_values_parsed_as_yaml() -> None:
    spec = load_spec(
        BASE,
        [
            "train.iterations=2000",
            "optimizers.G.lr=3e-4",
            "+optimizers.G.betas=[0.5, 0.999]",
            "train.phases.0.name=warm",
        ],
    )
    assert spec.data["train"]["iterations"] == 2000
    assert spec.data["optimizers"]["G"]["lr"] == 3e-4
    assert spec.data["optimizers"]["G"]["betas"] == [0.5, 0.999]
    assert spec.data["train"]["phases"][0]["name"] == "warm"


def test_override_errors_name_the_override() -> None:
    with pytest.raises(SpecError) as info:
        load_spec(BASE, ["train.iterations=-3", "train.itrations=5", "optimizers.G.lr"])
    text = str(info.value)
    assert (
        "<override train.iterations=-3>:1:18: error: 'train.iterations' must be an integer ≥ 1"
        in text
    )
    assert "<override train.itrations=5>:1:7: error: override: no key 'itrations'" in text
    assert "<override optimizers.G.lr>:1:1: error: an override is written key.path=value" in text


def test_spec_hash_is_stable_and_follows_overrides() -> None:
    assert load_spec(BASE).hash == load_spec(BASE).hash
    assert load_spec(BASE).hash != load_spec(BASE, ["train.iterations=7"]).hash


def test_all_errors_are_reported_together(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "s.yaml",
        f"""
        extends: {BASE}
        train:
          itrations: 5
        networks:
          G:
            nodes:
              head: {{block: conv, in: lr, out: 12, kernal: 3}}
        graph:
          pix: {{loss: l1, in: [fake.hr, data.hr]}}
    """,
    )
    with pytest.raises(SpecError) as info:
        load_spec(path)
    messages = [d.message for d in info.value.diagnostics.errors]
    assert len(messages) == 3, messages
    assert any("'itrations'" in m for m in messages)
    assert any("'kernal'" in m and "did you mean 'kernel'" in m for m in messages)
    assert any("no output 'hr'" in m for m in messages)


def test_a_missing_spec_file_is_an_error() -> None:
    with pytest.raises(SpecError, match="spec file not found"):
        load_spec("no/such/spec.yaml")


def test_validation_does_not_import_torch() -> None:
    code = (
        "import sys; from engine import check_spec; "
        "spec, d = check_spec('specs/esrgan.yaml'); assert spec is not None; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_when_false_leaves_a_node_out_and_passes_its_input_through(tmp_path: Path) -> None:
    path = spec_with_nodes(
        tmp_path,
        """
        pre: {block: pixel_unshuffle, in: lr, scale: 2, when: $scale < 2}
        head: {block: conv, in: pre, out: 12}
        extra: {block: conv, in: head, out: 12, when: $scale == 2}
        up: {block: pixel_shuffle, in: extra, scale: 2}
        """,
    )
    g = load_spec(path).networks["G"]
    assert "pre" not in g.graph and "extra" in g.graph
    assert g.node("head")["ports"]["x"] == [[Source("lr")]]
    g1 = load_spec(path, ["scale=1"]).networks["G"]
    assert "pre" in g1.graph and "extra" not in g1.graph
    assert g1.node("up")["ports"]["x"] == [[Source("head")]]


def test_digit_node_names_give_torch_sequential_style_keys(tmp_path: Path) -> None:
    path = spec_with_nodes(
        tmp_path,
        """
        head: {block: conv, in: lr, out: 12}
        body: {block: Seq, in: head}
        up: {block: pixel_shuffle, in: body, scale: 2}
        """,
        extra="""blocks:
  Seq:
    inputs: [x]
    nodes:
      0: {block: conv, in: x, out: 12}
      1: {block: act, in: "0", type: prelu}
""",
    )
    g = load_spec(path).networks["G"]
    assert {"body.0", "body.1"} <= set(g.leaves())

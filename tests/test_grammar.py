"""The grammar of today's architectures: chains, tensors as nodes, init, sharing,
interleaved composites.

Each test writes a small spec, builds it as a user would (``engine.build``) and checks
what a user would notice: the state_dict keys a published checkpoint has, the values
the weights start at, the errors and where they point.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

import engine
from engine.spec.diagnostics import SpecError


def spec(tmp_path: Path, networks: str, blocks: str = "") -> Path:
    text = "spec: 1\nname: grammar\n"
    if blocks:
        text += "blocks:\n" + textwrap.indent(textwrap.dedent(blocks), "  ")
    text += "networks:\n" + textwrap.indent(textwrap.dedent(networks), "  ")
    path = tmp_path / "grammar.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def build(tmp_path: Path, networks: str, blocks: str = "") -> nn.Module:
    return engine.build(spec(tmp_path, networks, blocks))["G"]


def errors(tmp_path: Path, networks: str, blocks: str = "") -> list[str]:
    with pytest.raises(SpecError) as info:
        engine.build(spec(tmp_path, networks, blocks))
    return [f"{d.loc.line}:{d.loc.col}: {d.message}" for d in info.value.diagnostics.errors]


# ------------------------------------------------------------------------ chain
CHAIN = """
G:
  inputs: {x: 3}
  params: {n: 3}
  nodes:
    feats:
      in: x
      chain:
        - {block: conv, out: 8}
        - {block: conv, out: 8, act: relu, repeat: $n}
        - {block: conv, out: 8, when: false}
        - {block: dropout, p: 0.0}
        - {block: conv, out: 3}
    out: {block: add, in: [x, feats]}
  output: out
"""


def test_a_chain_is_numbered_as_nn_sequential_numbers_its_layers(tmp_path: Path) -> None:
    net = build(tmp_path, CHAIN).eval()
    # conv, three repeated convs, the switched-off conv takes no index, dropout takes 4
    reference = nn.Sequential(
        *(nn.Conv2d(c, 8, 3, padding=1) for c in (3, 8, 8, 8)),
        nn.Dropout(0.0),
        nn.Conv2d(8, 3, 3, padding=1),
    )
    state = {k.removeprefix("feats."): v for k, v in net.state_dict().items()}
    reference.load_state_dict(state)  # strict: the same keys and shapes
    x = torch.rand(1, 3, 8, 8)
    y = reference[0](x)
    for i in (1, 2, 3):
        y = torch.relu(reference[i](y))
    with torch.no_grad():
        assert torch.allclose(net(x), x + reference[5](y), atol=1e-6)


def test_chain_mistakes_are_reported_at_their_key(tmp_path: Path) -> None:
    found = errors(
        tmp_path,
        """
        G:
          inputs: {x: 3}
          nodes:
            a: {in: x, chain: [{block: conv, out: 3, in: x}]}
            b: {in: x, block: conv, chain: [{block: conv, out: 3}]}
            c: {in: x, chain: [{block: grid_sample}, {block: conv, out: 3}]}
            d: {in: x, chain: [{block: conv, out: 3, when: false}]}
            e: {in: x}
            f: {in: x, chain: [{block: conv, out: 3}], repeat: 2}
            out: {block: concat, in: [a, b, c, d, e, f]}
        """,
    )
    assert found == EXPECTED_CHAIN_ERRORS


EXPECTED_CHAIN_ERRORS = [
    "12:7: 'networks.G.nodes.e' needs 'block', 'chain' or 'share'",
    "8:48: an item of chain 'a' takes the previous item's output on 'x'; remove its 'in:'",
    "9:18: node 'b': 'block' beside 'chain:'; 'block' and parameters belong to the items "
    "of the chain",
    "10:34: an item of chain 'c' reads the item before on its first input; block "
    "'grid_sample' takes x, grid: bind 'grid' with 'in: {port: ref}'",
    "11:25: every item of chain 'd' is switched off",
    "13:50: node 'f': 'repeat' beside 'chain:'; put 'repeat' on an item of the chain",
]


# ---------------------------------------------------------------------- tensors
TENSORS_BLOCKS = """
Gated:
  params: {c: 8}
  inputs: [x]
  nodes:
    conv: {block: conv, in: x, out: $c}
    beta: {block: parameter, shape: [1, $c, 1, 1]}
    gamma: {block: parameter, shape: [1, $c, 1, 1], init: ones}
    mean: {block: constant, value: [0.25, 0.5, 0.75, 1.0, 0.0, 0.0, 0.0, 0.0], shape: [1, $c, 1, 1]}
    index: {block: buffer, value: [[0, 1], [1, 0]], integer: true}
    centred: {block: sub, in: [conv, mean]}
    y: {block: multiply, in: [centred, beta]}
    z: {block: multiply, in: [x, gamma]}
    out: {block: add, in: [y, z]}
  outputs: {out: out, index: index}
"""

TENSORS = """
G:
  inputs: {x: 8}
  nodes:
    body: {block: Gated, in: x, repeat: 2}
    table: {block: Gated, in: body}
  outputs: {out: table.out, index: table.index}
"""


def test_tensor_nodes_are_saved_under_their_node_names(tmp_path: Path) -> None:
    net = build(tmp_path, TENSORS, TENSORS_BLOCKS)
    state = net.state_dict()
    assert {k for k in state if "conv" not in k} == {
        "body.0.beta", "body.0.gamma", "body.0.index",
        "body.1.beta", "body.1.gamma", "body.1.index",
        "table.beta", "table.gamma", "table.index",
    }  # fmt: skip
    assert isinstance(net.get_parameter("body.0.beta"), nn.Parameter)
    assert "body.0.mean" not in state  # a constant is moved with the network, never saved
    assert torch.equal(state["body.1.gamma"], torch.ones(1, 8, 1, 1))
    assert torch.equal(state["table.beta"], torch.zeros(1, 8, 1, 1))
    assert state["table.index"].dtype == torch.int64
    trainable = {n for n, p in net.named_parameters() if "conv" not in n}
    assert trainable == {
        f"{p}.{t}" for p in ("body.0", "body.1", "table") for t in ("beta", "gamma")
    }


def test_tensor_nodes_compute_and_learn(tmp_path: Path) -> None:
    net = build(tmp_path, TENSORS, TENSORS_BLOCKS)
    x = torch.rand(2, 8, 5, 5)
    out = net(x)
    # beta is zero, gamma one: each Gated block passes its input through at the start
    assert torch.allclose(out["out"], x)
    assert torch.equal(out["index"], torch.tensor([[0, 1], [1, 0]]))
    net(x)["out"].square().sum().backward()
    assert net.get_parameter("table.beta").grad.abs().sum() > 0


def test_tensor_node_mistakes_are_reported_at_the_node(tmp_path: Path) -> None:
    assert errors(
        tmp_path,
        """
        G:
          inputs: {x: 3}
          nodes:
            a: {block: parameter, shape: [1, 3, 1, 1], in: x}
            out: {block: add, in: [x, a]}
        """,
    ) == ["8:54: block 'parameter' takes no inputs"]
    assert errors(
        tmp_path,
        """
        G:
          inputs: {x: 3}
          nodes:
            b: {block: constant, value: [1, 2, 3], shape: [1, 4, 1, 1]}
            out: {block: add, in: [x, b]}
        """,
    ) == [
        "8:10: node 'b' (constant) cannot be built: constant: value has 3 numbers, which "
        "do not fill shape [1, 4, 1, 1]"
    ]


# ------------------------------------------------------------------------- init
def test_init_draws_the_weights_a_published_model_starts_from(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = build(
        tmp_path,
        """
        G:
          inputs: {x: 16}
          nodes:
            a: {block: conv, in: x, out: 64, init: {type: kaiming_normal, scale: 0.1, bias: 0}}
            b: {block: conv, in: a, out: 16, init: zeros}
            c: {block: conv, in: b, out: 16, init: {type: constant, value: 0.5, bias: 1.5}}
            d: {block: conv, in: c, out: 16, init: {type: trunc_normal, std: 0.02}}
            out: {block: conv, in: d, out: 16, init: {type: normal, std: $0.1 * 2}}
        """,
    )
    state = net.state_dict()
    # kaiming fan-in for a 3x3 conv of 16 channels: std sqrt(2 / 144), scaled by 0.1
    assert state["a.weight"].std().item() == pytest.approx(0.1 * (2 / 144) ** 0.5, rel=0.05)
    assert not state["a.bias"].any()
    assert not state["b.weight"].any() and not state["b.bias"].any()
    assert torch.all(state["c.weight"] == 0.5) and torch.all(state["c.bias"] == 1.5)
    assert state["d.weight"].std().item() == pytest.approx(0.02, rel=0.05)
    assert state["out.weight"].std().item() == pytest.approx(0.2, rel=0.05)


def test_a_composite_init_reaches_every_leaf_without_its_own(tmp_path: Path) -> None:
    net = build(
        tmp_path,
        """
        G:
          inputs: {x: 4}
          nodes:
            body: {block: Pair, in: x, repeat: 2, init: {type: constant, value: 2}}
            tail:
              in: body
              init: ones
              chain:
                - {block: conv, out: 4}
                - {block: conv, out: 4, init: zeros}
          output: tail
        """,
        blocks="""
        Pair:
          inputs: [x]
          nodes:
            a: {block: conv, in: x, out: 4}
            b: {block: conv, in: a, out: 4, init: {type: constant, value: 3}}
            c: {block: act, in: b, type: relu}
            n: {block: norm, in: c, type: batch}
          output: n
        """,
    )
    state = net.state_dict()
    for i in (0, 1):
        assert torch.all(state[f"body.{i}.a.weight"] == 2)
        assert torch.all(state[f"body.{i}.b.weight"] == 3)  # the innermost init wins
        assert torch.all(state[f"body.{i}.n.weight"] == 1)  # a norm's 1-D scale keeps its ones
    assert torch.all(state["tail.0.weight"] == 1)
    assert not state["tail.1.weight"].any()


def test_init_mistakes_are_reported_at_the_init(tmp_path: Path) -> None:
    found = errors(
        tmp_path,
        """
        G:
          inputs: {x: 3}
          nodes:
            a: {block: conv, in: x, out: 3, init: kaiming}
            b: {block: conv, in: a, out: 3, init: {type: normal, gain: 2}}
            c: {block: add, in: [x, b], init: zeros}
            d: {block: conv, in: c, out: 3, init: {type: kaiming_normal, mode: fan_up}}
          output: d
        """,
    )
    assert found == EXPECTED_INIT_ERRORS


EXPECTED_INIT_ERRORS = [
    "8:45: unknown init type 'kaiming' (did you mean 'kaiming_normal'?); types: 'zeros', "
    "'ones', 'constant', 'normal', 'trunc_normal', 'uniform', 'kaiming_normal', "
    "'kaiming_uniform', 'xavier_normal', 'xavier_uniform', 'orthogonal'",
    "9:45: init type 'normal' takes 'mean', 'std', 'scale', 'bias'; not 'gain'",
    "11:45: init 'mode' must be one of 'fan_in', 'fan_out', got 'fan_up'",
]


def test_init_on_what_has_no_weights_is_refused(tmp_path: Path) -> None:
    found = errors(
        tmp_path,
        """
        G:
          inputs: {x: 3}
          nodes:
            a: {block: parameter, shape: [3], init: kaiming_normal}
            c: {block: add, in: [x, a], init: zeros}
        """,
    )
    assert found == [
        "8:47: node 'a' (parameter): init 'kaiming_normal' needs a tensor of two or more "
        "dimensions, not (3,)"
    ]
    found = errors(
        tmp_path,
        """
        G:
          inputs: {x: 3}
          nodes:
            c: {block: add, in: [x, x], init: zeros}
        """,
    )
    assert found == ["8:41: node 'c' (add): it has no weights to initialize"]


# ------------------------------------------------------------- interleaving
INTERLEAVED_BLOCKS = """
Levels:
  inputs: [a, b]
  nodes:
    l0: {block: conv, in: a, out: 4}
    l1: {block: conv, in: b, out: 8}
  outputs: {o0: l0, o1: l1}
Downs:
  inputs: [a]
  nodes:
    d0: {block: conv, in: a, out: 8, stride: 2}
  outputs: {o0: d0}
"""


def interleaved(downs_in: str) -> str:
    return f"""
    G:
      inputs: {{x: 3}}
      nodes:
        intro: {{block: conv, in: x, out: 4}}
        encoders: {{block: Levels, in: [intro, downs.o0]}}
        downs: {{block: Downs, in: {downs_in}}}
        out: {{block: conv, in: encoders.o1, out: 3}}
      output: out
    """


def test_composites_whose_instances_interleave_are_no_cycle(tmp_path: Path) -> None:
    """NAFNet's layout: encoders.N feed downs.N, which feed encoders.N+1."""
    net = build(tmp_path, interleaved("encoders.o0"), INTERLEAVED_BLOCKS)
    assert [k for k in net.state_dict() if k.endswith("weight")] == [
        "intro.weight", "encoders.l0.weight", "encoders.l1.weight", "downs.d0.weight", "out.weight",
    ]  # fmt: skip
    x = torch.rand(1, 3, 8, 8)
    s = net.state_dict()
    conv = torch.nn.functional.conv2d
    y = conv(x, s["intro.weight"], s["intro.bias"], padding=1)
    y = conv(y, s["encoders.l0.weight"], s["encoders.l0.bias"], padding=1)
    y = conv(y, s["downs.d0.weight"], s["downs.d0.bias"], stride=2, padding=1)
    y = conv(y, s["encoders.l1.weight"], s["encoders.l1.bias"], padding=1)
    y = conv(y, s["out.weight"], s["out.bias"], padding=1)
    with torch.no_grad():
        assert torch.allclose(net(x), y, atol=1e-6)


def test_a_real_cycle_through_composites_is_found_on_the_expanded_graph(tmp_path: Path) -> None:
    found = errors(tmp_path, interleaved("encoders.o1"), INTERLEAVED_BLOCKS)
    assert found == ["9:11: cycle in network 'G': encoders.l1 → downs.d0 → encoders.l1"]


def test_a_cycle_among_leaves_is_still_reported_where_it_is_written(tmp_path: Path) -> None:
    found = errors(
        tmp_path,
        """
        G:
          inputs: {x: 3}
          nodes:
            a: {block: add, in: [x, b]}
            b: {block: conv, in: a, out: 3}
          output: b
        """,
    )
    assert found == ["8:27: cycle in network 'G': a → b → a"]


# ------------------------------------------------------- run-time axis lengths
def test_windows_are_partitioned_and_put_back_whatever_the_image_size(tmp_path: Path) -> None:
    net = build(
        tmp_path,
        """
        G:
          inputs: {x: 3}
          nodes:
            windows:
              block: rearrange
              in: x
              pattern: "b c (h wh) (w ww) -> (b h w) (wh ww) c"
              axes: {wh: 4, ww: 4}
            scaled: {block: multiply, in: windows, value: 2.0}
            back:
              block: rearrange
              in: {x: scaled, like: x}
              pattern: "(b h w) (wh ww) c -> b c (h wh) (w ww)"
              axes: {wh: 4, ww: 4}
              like_pattern: "b c (h wh) (w ww)"
          output: back
        """,
    )
    for size in ((8, 8), (12, 20)):
        x = torch.rand(2, 3, *size)
        assert torch.equal(net(x), 2 * x)
    with pytest.raises(ValueError, match="cannot take a 8×10 input"):
        net(torch.rand(1, 3, 8, 10))


# --------------------------------------------------------- sizes it cannot take
HALVING = """
G:
  inputs: {{x: 3}}
  {pad}
  nodes:
    down: {{block: conv, in: x, out: 8, stride: 2}}
    down2: {{block: conv, in: down, out: 8, stride: 2}}
    up: {{block: upsample, in: down2, scale: 4}}
    both: {{block: concat, in: [x, up]}}
    out: {{block: conv, in: both, out: 3}}
  output: out
"""


def test_a_size_the_network_cannot_take_is_told_as_such(tmp_path: Path) -> None:
    net = build(tmp_path, HALVING.format(pad=""))
    assert net(torch.rand(1, 3, 12, 16)).shape == (1, 3, 12, 16)
    # 10 is no multiple of 4: the concatenation fails inside torch, the guard says why
    with pytest.raises(
        ValueError, match=r"cannot take a 10×16 input \(input size: a multiple of 4"
    ):
        net(torch.rand(1, 3, 10, 16))


@pytest.mark.parametrize("mode", ["reflect", "replicate", "zeros"])
def test_pad_on_the_network_pads_to_the_multiple_and_crops_back(tmp_path: Path, mode: str) -> None:
    net = build(tmp_path, HALVING.format(pad=f"pad: {mode}")).eval()
    x = torch.rand(1, 3, 10, 13)
    padded = torch.nn.functional.pad(x, (0, 3, 0, 2), mode="constant" if mode == "zeros" else mode)
    with torch.no_grad():
        out = net(x)
        assert out.shape == (1, 3, 10, 13)
        plain = build(tmp_path, HALVING.format(pad="")).eval()
        plain.load_state_dict(net.state_dict())
        assert torch.allclose(out, plain(padded)[..., :10, :13], atol=1e-6)
        assert torch.equal(net(padded[..., :12, :16]), plain(padded[..., :12, :16]))


# ------------------------------------------------------------------ sharing
SHARED = """
G:
  inputs: {x: 3, y: 3}
  nodes:
    enc: {block: Encoder, in: x}
    enc_y: {share: enc, in: y}
    scale: {block: parameter, shape: [1, 8, 1, 1], init: ones}
    scale_y: {share: scale}
    a: {block: multiply, in: [enc, scale]}
    b: {block: multiply, in: [enc_y, scale_y]}
    out: {block: add, in: [a, b]}
  output: out
"""
ENCODER = """
Encoder:
  inputs: [x]
  nodes:
    conv: {block: conv, in: x, out: 8, act: relu}
    body: {block: conv, in: conv, out: 8, repeat: 2}
  output: body
"""


def test_a_shared_node_calls_the_same_modules_with_the_same_weights(tmp_path: Path) -> None:
    net = build(tmp_path, SHARED, ENCODER)
    keys = list(net.state_dict())
    assert not any("enc_y" in k or "scale_y" in k for k in keys)
    assert len([k for k in keys if k.startswith("enc.")]) == 6
    x, y = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)
    out = net(x=x, y=y)
    encoder = build(tmp_path, "G: {inputs: {x: 3}, use: Encoder}", ENCODER)
    encoder.load_state_dict(
        {k.removeprefix("enc."): v for k, v in net.state_dict().items() if k.startswith("enc.")}
    )
    assert torch.allclose(out, encoder(x) + encoder(y), atol=1e-6)
    out.sum().backward()
    grad = net.get_parameter("enc.conv.weight").grad
    assert grad is not None and grad.abs().sum() > 0  # both uses train the one weight


def test_sharing_mistakes_are_reported_at_the_sharer(tmp_path: Path) -> None:
    found = errors(
        tmp_path,
        """
        G:
          inputs: {x: 3}
          nodes:
            enc: {block: conv, in: x, out: 8}
            a: {share: enc, in: x}
            b: {share: encc, in: x}
            c: {share: enc, in: x, out: 4}
            out: {block: concat, in: [a, b, c]}
        """,
    )
    assert found == EXPECTED_SHARE_ERRORS


EXPECTED_SHARE_ERRORS = [
    "10:18: node 'b': 'share' names a node of the same 'nodes:', not 'encc' (did you mean 'enc'?)",
    "11:30: node 'c': 'out' beside 'share:'; a node that shares another's weights takes its "
    "block and parameters too, and only 'in:' of its own",
]


def test_a_shared_node_given_other_channels_is_refused(tmp_path: Path) -> None:
    found = errors(
        tmp_path,
        """
        G:
          inputs: {x: 3, y: 4}
          nodes:
            enc: {block: conv, in: x, out: 8}
            a: {share: enc, in: y}
            out: {block: concat, in: [a, enc]}
        """,
    )
    assert found == [
        "9:10: node 'a' shares the weights of 'enc', which was built for in_ch=3, out=8; "
        "this node's inputs need in_ch=4, out=8"
    ]


def test_expressions_index_lists_and_know_yamls_words(tmp_path: Path) -> None:
    net = build(
        tmp_path,
        """
        G:
          inputs: {x: 3}
          params: {widths: [4, 6, 8]}
          nodes:
            body: {block: conv, in: x, out: "$widths[$index]", repeat: 3, bias: $index > 0 and true}
          output: body
        """,
    )
    state = net.state_dict()
    assert [state[f"body.{i}.weight"].shape[0] for i in range(3)] == [4, 6, 8]
    assert "body.0.bias" not in state and "body.2.bias" in state
    assert errors(
        tmp_path,
        """
        G:
          inputs: {x: 3}
          params: {widths: [4, 6]}
          nodes:
            body: {block: conv, in: x, out: "$widths[$index]", repeat: 3}
          output: body
        """,
    ) == ["9:39: in expression '$widths[$index]': index 2 is outside a list of 2"]


def test_a_tensor_switched_off_is_left_out_and_a_saved_marker_is_no_unused_node(
    tmp_path: Path,
) -> None:
    """SPAN's checkpoints carry `no_norm` only when the model does not normalize."""
    for norm, expected in ((True, False), (False, True)):
        path = spec(
            tmp_path,
            f"""
            G:
              inputs: {{x: 3}}
              params: {{norm: {str(norm).lower()}}}
              nodes:
                no_norm: {{block: buffer, shape: [1], when: $not $norm}}
                out: {{block: conv, in: x, out: 3}}
              output: out
            """,
        )
        spec_ = engine.load_spec(path)
        assert not spec_.diagnostics.warnings
        assert ("no_norm" in engine.build(spec_)["G"].state_dict()) is expected
    assert errors(
        tmp_path,
        """
        G:
          inputs: {x: 3}
          nodes:
            scale: {block: parameter, shape: [1], when: false}
            out: {block: multiply, in: [x, scale]}
        """,
    ) == [
        "9:34: node 'out' reads 'scale', which is switched off by 'when' and has no input to "
        "pass through"
    ]

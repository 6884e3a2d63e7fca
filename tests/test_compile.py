"""Compilation: specs into fx.GraphModules that behave like hand-written modules."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

import engine
from engine import SpecError, load_spec
from engine.compile import lower
from engine.compile.build import check_shapes, compile_network
from engine.compile.network import materialize, unwrap

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "tests" / "broken" / "_base.yaml"
SPECS = sorted((ROOT / "specs").glob("*.yaml"))
SMALL = {
    "srflow.yaml": [
        "networks.G.nodes.RRDB.nf=4",
        "networks.G.nodes.RRDB.gc=2",
        "networks.G.nodes.flowUpsamplerNet.K=2",
        "networks.G.nodes.flowUpsamplerNet.hidden=8",
        "data.train.crop_size=32",
    ],
    "srflow_x8.yaml": [
        "networks.G.nodes.RRDB.nf=4",
        "networks.G.nodes.RRDB.nb=8",
        "networks.G.nodes.RRDB.gc=2",
        "networks.G.nodes.flowUpsamplerNet.K=1",
        "networks.G.nodes.flowUpsamplerNet.hidden=8",
        "data.train.crop_size=32",
    ],
    "esrgan.yaml": [
        "networks.G.params.nb=2",
        "networks.G.params.nf=8",
        "networks.G.params.gc=4",
        "networks.D.params.nf=4",
    ],
}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def tiny_esrgan() -> dict[str, torch.nn.Module]:
    return engine.build(ROOT / "specs" / "esrgan.yaml", SMALL["esrgan.yaml"])


def test_state_dict_keys_follow_node_names() -> None:
    g = tiny_esrgan()["G"]
    keys = list(g.state_dict())
    assert keys[:2] == ["conv_first.weight", "conv_first.bias"]
    assert "body.1.rdb3.conv5.weight" in keys
    assert {
        "conv_body.weight",
        "conv_up1.weight",
        "conv_up2.weight",
        "conv_hr.weight",
        "conv_last.weight",
    } <= set(keys)
    assert not any("out" in k.split(".") for k in keys)  # parameter-free nodes add no keys


def test_generated_code_is_readable_and_frees_values() -> None:
    code = tiny_esrgan()["G"].code
    assert "def forward(self, x):" in code
    assert "conv_first = self.conv_first(x);  x = None" in code
    assert "torch.cat([conv_first, body_0_rdb1_conv1], 1)" in code


def test_stateless_nodes_are_written_as_the_operations_they_perform() -> None:
    """A residual is a multiply and an add in the code, as written by hand: no module."""
    g = tiny_esrgan()["G"]
    assert "body_0_rdb1_out_mul = 0.2 * body_0_rdb1_conv5" in g.code
    assert "body_0_rdb1_out = conv_first + body_0_rdb1_out_mul" in g.code
    assert "trunk = conv_first + conv_body" in g.code
    assert "up1 = torch.nn.functional.interpolate(trunk" in g.code
    names = dict(g.named_modules())
    assert "trunk" not in names and "up1" not in names and "body.0.out" not in names


def test_a_stateless_block_that_depends_on_the_mode_keeps_its_module_call() -> None:
    class Noisy(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + torch.randn_like(x) if self.training else x

    class Branchy(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x if x.sum() > 0 else -x  # control flow on values

    assert lower.record(Noisy(), 1) is None
    assert lower.record(Branchy(), 1) is None
    assert lower.record(torch.nn.LeakyReLU(0.2), 1) is not None


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_cpu_probe_infers_what_the_meta_probe_infers(path: Path) -> None:
    """build infers shapes with CPU kernels; inspect with meta tensors: they agree."""
    spec = load_spec(path)
    cpu, meta = check_shapes(spec, batch=1, probe="cpu"), check_shapes(spec, batch=1)
    assert cpu.values == meta.values
    assert cpu.networks.keys() == meta.networks.keys()
    for name, inference in meta.networks.items():
        assert cpu.networks[name].outputs == inference.outputs
        assert cpu.networks[name].records == inference.records


def test_compiled_network_trains(tmp_path: Path) -> None:
    g = tiny_esrgan()["G"]
    opt = torch.optim.Adam(g.parameters(), lr=1e-3)
    torch.manual_seed(0)
    lr, hr = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 32, 32)
    losses = []
    for _ in range(15):
        loss = torch.nn.functional.l1_loss(g(lr), hr)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] * 0.9


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_inference_agrees_with_a_real_forward(path: Path) -> None:
    spec = load_spec(path, [*SMALL.get(path.name, []), "data.train.batch_size=1"])
    shapes = check_shapes(spec, batch=1)
    nets = engine.build(spec)
    for name, inference in shapes.networks.items():
        inputs = {k: torch.rand(v) for k, v in inference.input_shapes.items()}
        with torch.no_grad():
            out = nets[name].eval()(**inputs)
        outs = out if isinstance(out, dict) else {next(iter(inference.outputs)): out}
        assert {k: tuple(v.shape) for k, v in outs.items()} == inference.outputs
        params = sum(p.numel() for p in nets[name].parameters())
        assert params == inference.params


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_compiles_identically_on_cuda(path: Path) -> None:
    spec = load_spec(path, [*SMALL.get(path.name, []), "data.train.batch_size=1"])
    shapes = check_shapes(spec, batch=1)
    cpu, gpu = engine.build(spec), engine.build(spec, device="cuda")
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    for name, inference in shapes.networks.items():
        assert gpu[name].code == cpu[name].code
        assert all(t.is_cuda for t in gpu[name].state_dict().values())
        gpu[name].load_state_dict(cpu[name].state_dict())  # same keys, same shapes
        inputs = {k: torch.rand(v) for k, v in inference.input_shapes.items()}
        with torch.no_grad():
            want = cpu[name].eval()(**inputs)
            got = gpu[name].eval()(**{k: v.cuda() for k, v in inputs.items()})
        want = want if isinstance(want, dict) else {"out": want}
        got = got if isinstance(got, dict) else {"out": got}
        for port, value in want.items():
            torch.testing.assert_close(got[port].cpu(), value, rtol=1e-4, atol=1e-4)


def test_compiles_identically_twice_with_a_seed() -> None:
    torch.manual_seed(3)
    a = tiny_esrgan()["G"].state_dict()
    torch.manual_seed(3)
    b = tiny_esrgan()["G"].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


CYCLEGAN = ROOT / "specs" / "cyclegan.yaml"
TINY_CYCLEGAN = [
    *(f"networks.{n}.params.nf=4" for n in ("G_A", "G_B", "D_A", "D_B")),
    "networks.G_A.params.n_blocks=1",
    "networks.G_B.params.n_blocks=1",
]


def test_compile_network_is_what_build_gives_and_refuses_sizes_it_cannot_take() -> None:
    # The trainer compiles each network with compile_network; build must agree with it.
    spec = load_spec(CYCLEGAN, TINY_CYCLEGAN)
    inference = check_shapes(spec, batch=1, probe="cpu").networks["G_A"]
    G = compile_network(inference).eval()
    assert G.code == engine.build(spec)["G_A"].code
    with torch.no_grad():
        assert G(x=torch.rand(1, 3, 36, 60)).shape == (1, 3, 36, 60)
        refused = r"cannot take this size \(input size: a multiple of 4,"
        with pytest.raises(ValueError, match=refused):
            G(x=torch.rand(1, 3, 250, 252))
        # The bare second pass answers 252 for 250: the guard is what refuses it.
        assert materialize(inference).eval()(x=torch.rand(1, 3, 250, 252)).shape[2] == 252


class _Parallel(torch.nn.Module):
    """Wraps a network as DDP does: as its ``module``."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module


def test_unwrap_finds_the_network_inside_ddp_and_torch_compile_wrappers() -> None:
    g = tiny_esrgan()["G"]
    assert unwrap(g) is g
    assert unwrap(_Parallel(g)) is g
    assert unwrap(torch.compile(_Parallel(g), backend="eager")) is g
    assert unwrap(_Parallel(torch.compile(g, backend="eager"))) is g


def test_works_under_torch_compile() -> None:
    g = tiny_esrgan()["G"].eval()
    x = torch.rand(1, 3, 8, 8)
    compiled = torch.compile(g, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), g(x))


def test_exports_to_onnx_with_dynamic_height_and_width(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    g = engine.build(BASE)["G"].eval()
    path = tmp_path / "g.onnx"
    dim = torch.export.Dim
    torch.onnx.export(
        g,
        (torch.rand(1, 3, 16, 16),),
        str(path),
        input_names=["lr"],
        output_names=["sr"],
        dynamic_shapes={"lr": {2: dim("h", min=2, max=2048), 3: dim("w", min=2, max=2048)}},
        dynamo=True,
        verbose=False,
    )
    session = ort.InferenceSession(str(path))
    for h, w in [(16, 16), (20, 36)]:
        x = torch.rand(1, 3, h, w)
        [y] = session.run(None, {"lr": x.numpy()})
        with torch.no_grad():
            torch.testing.assert_close(torch.from_numpy(y), g(x), atol=1e-5, rtol=1e-4)


# --------------------------------------------------------------------- shape errors
def shape_error(path: Path, overrides: list[str] | None = None) -> list[str]:
    with pytest.raises(SpecError) as info:
        engine.build(path, overrides or [])
    return [str(d) for d in info.value.diagnostics.errors]


def test_channel_mismatch_is_reported_at_the_node(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""\
        extends: {BASE}
        networks:
          G:
            nodes:
              mix: {{block: add, in: [head, up]}}
            outputs: {{sr: tail, mix: mix}}
    """,
    )
    [message, *_] = shape_error(path)
    assert "s.yaml:5:" in message and "node 'mix' (add) cannot run on inputs" in message
    assert "(1, 12, 16, 16) from 'head', (1, 3, 32, 32) from 'up'" in message


def test_network_fed_the_wrong_channels_is_reported_at_the_call(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""\
        extends: {BASE}
        graph:
          fake: {{call: G, in: [data.lr, data.lr]}}
    """,
    )
    [message] = shape_error(path)
    assert "s.yaml:3:3" in message
    assert "network 'G' input 'lr' takes 3 channels, but gets 6" in message


def test_scale_mismatch_between_output_and_target_is_reported_at_the_loss() -> None:
    [message] = shape_error(BASE, ["scale=4"])
    assert "_base.yaml:15:3" in message
    assert "loss 'pix' (l1): pred has shape (1, 3, 16, 16) but target (1, 3, 32, 32)" in message


def test_crop_not_a_multiple_of_the_scale(tmp_path: Path) -> None:
    [message] = shape_error(BASE, ["data.train.crop_size=33"])
    assert "data.train.crop_size 33 (the HR crop) is not a multiple of the scale 2" in message

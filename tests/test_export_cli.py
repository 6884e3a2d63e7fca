"""``export``: ONNX that onnxruntime runs as PyTorch does at any size, safetensors that
say what they hold, and ``.pth`` in the layout chaiNNer's loader detects."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import safetensors
import torch

import cli
from engine.apply.export import canonical_layout, export_model
from engine.apply.source import ApplyError, Model, open_model
from tests.conftest import randomize

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "specs" / "quickstart.yaml"


def test_onnx_equals_pytorch_at_other_sizes(
    run_dir: Path, model: Model, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    out = tmp_path / "g.onnx"
    assert cli.main(["export", str(run_dir), "--format", "onnx", "--out", str(out)]) == 0
    assert "max abs diff" in capsys.readouterr().out
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for shape in [(1, 3, 16, 16), (2, 3, 19, 33)]:
        x = torch.rand(shape, generator=torch.Generator().manual_seed(shape[2]))
        [y] = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        with torch.no_grad():
            want = model.module(lr=x)
        assert (torch.from_numpy(y) - want).abs().max() <= 1e-4


def test_safetensors_carry_the_metadata(model: Model, tmp_path: Path) -> None:
    result = export_model(model, "safetensors", tmp_path / "g.safetensors")
    with safetensors.safe_open(str(result.path), "pt") as f:
        meta = f.metadata()
        keys = set(f.keys())
    assert meta["loom.spec"] == "quickstart" and meta["loom.network"] == "G"
    assert meta["loom.spec_sha256"] == model.spec.hash and len(meta["loom.spec_sha256"]) == 64
    assert (meta["loom.scale"], meta["loom.input_channels"], meta["loom.size_multiple"]) == (
        "2",
        "3",
        "1",
    )
    assert keys == set(model.module.state_dict())


def test_pth_in_esrgans_layout_is_detected_by_spandrel(tmp_path: Path) -> None:
    spandrel = pytest.importorskip("spandrel")
    spec = tmp_path / "esr.yaml"
    spec.write_text(
        "spec: 1\nname: esr\nimports: [lib/esrgan.yaml]\nnetworks:\n"
        "  G: {use: RRDBNet, params: {nf: 8, nb: 1, gc: 32, scale: 4}}\n",
        encoding="utf-8",
    )
    model = open_model(spec, need_weights=False)
    randomize(model.module)
    assert canonical_layout(model.module.state_dict()) == "esrgan"
    result = export_model(model, "pth", tmp_path / "G.pth")
    assert result.layout == "esrgan"
    loaded = spandrel.ModelLoader().load_from_file(str(result.path))
    assert loaded.architecture.id == "ESRGAN" and loaded.scale == 4
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model.eval()(x), model.module(x=x), atol=1e-5, rtol=0)


def test_refusals(model: Model, tmp_path: Path) -> None:
    with pytest.raises(ApplyError, match="--fp16 is for ONNX"):
        export_model(model, "pth", tmp_path / "g.pth", fp16=True)
    code = cli.main(["export", str(QUICKSTART), "--format", "pth"])
    assert code == cli.EXIT_INVALID


def test_untrained_spec_exports_with_json_free_metadata(tmp_path: Path) -> None:
    out = tmp_path / "init.safetensors"
    args = ["export", str(QUICKSTART), "--untrained", "--format", "safetensors", "--out", str(out)]
    assert cli.main(args) == 0
    with safetensors.safe_open(str(out), "pt") as f:
        assert json.dumps(f.metadata())  # plain strings only


@pytest.mark.parametrize("command", ["infer", "export", "interpolate"])
def test_the_new_commands_have_help_with_examples(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main([command, "--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0
    assert "examples:" in out and f"python cli.py {command}" in out


def test_wbc_generator_with_its_guided_filter_exports_and_infers_at_any_size(
    tmp_path: Path,
) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from PIL import Image

    from engine.apply.images import list_inputs
    from engine.apply.infer import InferOptions, infer

    small = ["params.vgg_weights=random", "networks.G.params.nf=4", "networks.G.params.n_blocks=1"]
    wbc = open_model(ROOT / "specs" / "wbc.yaml", need_weights=False, overrides=small)
    randomize(wbc.module, seed=5)
    assert (wbc.port, wbc.multiple) == ("out", 4)  # the filtered output, as G is used
    result = export_model(wbc, "onnx", tmp_path / "wbc.onnx")
    assert result.max_abs_diff is not None and result.max_abs_diff <= 1e-4
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    x = torch.rand(1, 3, 36, 20, generator=torch.Generator().manual_seed(2))
    [y] = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        want = wbc.module(x=x)["out"]
    assert (torch.from_numpy(y) - want).abs().max() <= 1e-4

    # infer on a size that is not a multiple of 4: padded, then cropped back.
    (tmp_path / "in").mkdir()
    Image.fromarray((torch.rand(18, 22, 3).numpy() * 255).astype("uint8")).save(
        tmp_path / "in" / "p.png"
    )
    done = infer(wbc, list_inputs(str(tmp_path / "in")), tmp_path / "o", InferOptions())
    assert not done.failed and Image.open(tmp_path / "o" / "p.png").size == (22, 18)

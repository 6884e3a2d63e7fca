"""``infer`` applies what was trained: a run folder's exported weights, through the
network, to files of every kind the data side reads, whole or in tiles.

The run folder is made here as training makes it (the quick-start spec as
spec.resolved.yaml, its network exported by the trainer's own export), with random
weights; every image is made here too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import cli
from engine.apply.images import Item, list_inputs, write_png16
from engine.apply.infer import InferOptions, Runner, infer
from engine.apply.source import ApplyError, Model, open_model
from engine.data.imageio import read_image, to_tensor
from engine.train.state import export_networks
from tests.conftest import randomize

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "specs" / "quickstart.yaml"


def photo(h: int, w: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    """A smooth, image-like uint8 array (gradients plus a little noise)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = [(x * 7 + y * 3) % 256, (x * 2 + y * 9) % 256, (x * y) % 256, (x * 11) % 256]
    stack = np.stack(base[:channels], axis=2).astype(np.float32)
    return np.clip(stack + rng.normal(0, 8, stack.shape), 0, 255).astype(np.uint8)


def save(path: Path, pixels: np.ndarray, **options: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels).save(path, **options)
    return path


def network_output(model: Model, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.module(**{model.input: x[None]})[0].clamp(0, 1)


def read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_run_folder_infer_reproduces_the_networks_output(
    run_dir: Path, model: Model, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = save(tmp_path / "in" / "photo.png", photo(20, 28))
    code = cli.main(["infer", str(run_dir), "--input", str(src), "--output", str(tmp_path / "o")])
    assert code == 0
    assert model.weights is not None and model.weights.name == "G_iter_00000008.safetensors"
    got = read(tmp_path / "o" / "photo.png")
    want = network_output(model, to_tensor(read_image(src, 3)))
    assert got.shape == (40, 56, 3)
    want8 = (want.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    assert np.array_equal(got, want8)
    assert "1 written" in capsys.readouterr().out


def test_tiled_equals_whole_when_the_overlap_covers_the_receptive_field(model: Model) -> None:
    # Six 3x3 convs (radius 6) and a bicubic upsampling (radius 2) in input pixels.
    x = to_tensor(photo(37, 50))[None]
    whole = Runner(model, InferOptions(), print)(x)
    tiled = Runner(model, InferOptions(tile=12, overlap=8), print)(x)
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=0)
    seams = Runner(model, InferOptions(tile=12, overlap=1), print)(x)
    assert (seams - whole).abs().max() > 1e-3  # too little context shows at the seams


def test_gray_rgba_16_bit_and_exif_rotated_inputs(model: Model, tmp_path: Path) -> None:
    src = tmp_path / "in"
    gray = save(src / "gray.png", photo(12, 16, 1))
    rgba = photo(12, 16, 4)
    rgba[:, :8, 3] = 0  # half transparent
    save(src / "rgba.png", rgba)
    deep = (photo(10, 14).astype(np.uint16) * 257 + 3).astype(np.uint16)
    write_png16(src / "deep.png", deep)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: viewers turn it 90° clockwise
    save(src / "turned.png", photo(10, 18), exif=exif.tobytes())
    result = infer(model, list_inputs(str(src)), tmp_path / "o", InferOptions(alpha="resize"))
    assert not result.failed and len(result.done) == 4

    out = Image.open(tmp_path / "o" / "gray.png")
    assert out.mode == "L" and out.size == (32, 24)
    y = network_output(model, to_tensor(read_image(gray, 3)))
    luma = (y * torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(0)
    assert np.abs(np.asarray(out).astype(int) - (luma.numpy() * 255).round()).max() <= 1

    out = Image.open(tmp_path / "o" / "rgba.png")
    assert out.mode == "RGBA" and out.size == (32, 24)
    alpha = torch.from_numpy(rgba[:, :, 3].astype(np.float32) / 255)[None, None]
    want = F.interpolate(alpha, scale_factor=2, mode="bicubic").clamp(0, 1)[0, 0]
    assert np.abs(np.asarray(out)[:, :, 3] - (want.numpy() * 255).round()).max() <= 1

    back = read_image(tmp_path / "o" / "deep.png", 3)
    assert back.dtype == np.uint16 and back.shape == (20, 28, 3)
    want16 = network_output(model, to_tensor(deep)).permute(1, 2, 0).numpy() * 65535
    assert np.abs(back.astype(np.float64) - want16.round()).max() <= 1

    out = Image.open(tmp_path / "o" / "turned.png")
    assert out.size == (20, 36)  # upright: 10 wide, 18 tall, twice


def test_alpha_through_the_network_as_gray(model: Model, tmp_path: Path) -> None:
    rgba = photo(8, 10, 4)
    save(tmp_path / "in" / "a.png", rgba)
    infer(model, list_inputs(str(tmp_path / "in")), tmp_path / "o", InferOptions())
    alpha = torch.from_numpy(rgba[:, :, 3].astype(np.float32) / 255)
    with torch.no_grad():  # the mean of the unclamped channels, then clamped
        want = model.module(lr=alpha.expand(1, 3, -1, -1))[0].mean(0).clamp(0, 1)
    got = np.asarray(Image.open(tmp_path / "o" / "a.png"))[:, :, 3]
    assert np.abs(got - (want.numpy() * 255).round()).max() <= 1


def test_a_corrupt_file_is_named_and_skipped_and_the_exit_code_counts_failures(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in"
    save(src / "a.png", photo(8, 8))
    save(src / "deeper" / "b.jpg", photo(8, 12))
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (src / "empty.jpg").write_bytes(b"")
    (src / "notes.txt").write_text("not an image")
    out = tmp_path / "o"
    code = cli.main(["infer", str(run_dir), "--input", str(src), "--output", str(out), "--plain"])
    captured = capsys.readouterr()
    assert code == 2  # two images failed
    assert (out / "a.png").is_file() and (out / "deeper" / "b.png").is_file()
    assert "broken.png" in captured.err and "empty.jpg" in captured.err
    assert "2 written" in captured.out and "2 failed" in captured.out

    again = ["infer", str(run_dir), "--input", str(src / "*.png"), "--output", str(out)]
    code = cli.main([*again, "--skip-existing"])
    assert code == 1 and "1 skipped" in capsys.readouterr().out


def test_out_of_memory_retries_with_smaller_tiles(tmp_path: Path) -> None:
    class Hungry(nn.Module):
        """Runs out of memory on inputs over 48 pixels; otherwise upscales x2."""

        output_ports = ("out",)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if max(x.shape[-2:]) > 48:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return F.interpolate(x, scale_factor=2, mode="nearest")

    model = Model(
        spec=None,  # type: ignore[arg-type]
        net="G",
        module=Hungry(),
        weights=None,
        input="x",
        channels=3,
        port="out",
        multiple=1,
        scale=2,  # type: ignore[arg-type]
    )
    said: list[str] = []
    x = torch.rand(1, 3, 70, 90)
    runner = Runner(model, InferOptions(overlap=0), said.append)
    torch.testing.assert_close(runner(x), F.interpolate(x, scale_factor=2))
    assert runner.tile == 45
    assert "out of memory at whole size; retrying with tile 45" in said[0]


def test_cyclegan_second_generator_by_name(tmp_path: Path) -> None:
    small = [
        "networks.G_A.params.nf=4",
        "networks.G_A.params.n_blocks=2",
        "networks.G_B.params.nf=4",
        "networks.G_B.params.n_blocks=1",  # unlike G_A: G_B's weights fit only G_B
        "networks.D_A.params.nf=4",
        "networks.D_B.params.nf=4",
    ]
    spec = ROOT / "specs" / "cyclegan.yaml"
    g_b = open_model(spec, net="G_B", need_weights=False, overrides=small)
    randomize(g_b.module, seed=3)
    weights = tmp_path / "G_B.safetensors"
    export_networks(tmp_path, {"G_B": g_b.module}, 1)
    (tmp_path / "G_B_iter_00000001.safetensors").rename(weights)
    src = save(tmp_path / "in" / "horse.png", photo(16, 20))
    args = ["infer", str(spec), *small, "--weights", str(weights), "--input", str(src)]
    assert cli.main([*args, "--output", str(tmp_path / "o"), "--net", "G_B"]) == 0
    got = read(tmp_path / "o" / "horse.png").astype(int)
    want = network_output(g_b, to_tensor(read_image(src, 3))).permute(1, 2, 0).numpy()
    assert np.abs(got - (want * 255).round()).max() <= 1
    with pytest.raises(ApplyError, match=r"missing|unexpected"):
        open_model(spec, net="G_A", weights=weights, overrides=small)


def test_refusals_name_the_fix(run_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ApplyError, match="give the trained weights with --weights"):
        open_model(QUICKSTART)
    with pytest.raises(ApplyError, match=r"no output port 'sr2' \(did you mean 'sr'\?\)"):
        open_model(run_dir, port="sr2")
    with pytest.raises(ApplyError, match="no network 'D'"):
        open_model(run_dir, net="D")
    with pytest.raises(ApplyError, match="not a run folder"):
        open_model(tmp_path)
    code = cli.main(
        ["infer", str(run_dir), "--input", str(tmp_path / "nothing"), "--output", str(tmp_path)]
    )
    assert code == cli.EXIT_INVALID


def test_inputs_keep_relative_paths_and_globs(tmp_path: Path) -> None:
    save(tmp_path / "a" / "x.png", photo(4, 4))
    save(tmp_path / "a" / "b" / "y.jpg", photo(4, 4))
    assert [i.relative for i in list_inputs(str(tmp_path / "a"))] == [
        Path("b/y.jpg"),
        Path("x.png"),
    ]
    assert list_inputs(str(tmp_path / "a" / "**" / "*.jpg")) == [
        Item(tmp_path / "a" / "b" / "y.jpg", Path("b/y.jpg"))
    ]
    inside = list_inputs(str(tmp_path / "a"), exclude=tmp_path / "a" / "b")  # the output folder
    assert [i.relative for i in inside] == [Path("x.png")]


def test_batches_of_same_sized_images_give_the_same_results(model: Model, tmp_path: Path) -> None:
    src = tmp_path / "in"
    for i in range(3):
        save(src / f"{i}.png", photo(10, 12, seed=i))
    save(src / "3.png", photo(14, 12))  # another size: a batch of its own
    items = list_inputs(str(src))
    infer(model, items, tmp_path / "one", InferOptions(batch=1))
    result = infer(model, items, tmp_path / "two", InferOptions(batch=2))
    assert len(result.done) == 4
    for i in range(4):
        assert np.array_equal(
            read(tmp_path / "one" / f"{i}.png"), read(tmp_path / "two" / f"{i}.png")
        )


def test_bf16_is_close_to_fp32_and_leaves_the_model_as_it_was(model: Model) -> None:
    x = to_tensor(photo(12, 16))[None]
    full = Runner(model, InferOptions(), print)(x)
    half = Runner(model, InferOptions(precision="bf16", channels_last=True), print)(x)
    assert half.dtype == torch.float32 and (half - full).abs().max() < 0.05
    assert next(model.module.parameters()).dtype == torch.float32


def test_a_run_whose_spec_imports_a_library_beside_the_original(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "mylib").mkdir(parents=True)
    (project / "mylib" / "net.yaml").write_text(
        "spec: 1\nblocks:\n  Tiny:\n    params: {nf: 8}\n    inputs: [x]\n    nodes:\n"
        "      a: {block: conv, in: x, out: $nf, act: lrelu}\n"
        "      b: {block: conv, in: a, out: 12}\n"
        "      s: {block: pixel_shuffle, in: b, scale: 2}\n    output: s\n",
        encoding="utf-8",
    )
    text = (
        "spec: 1\nname: mine\nimports: [mylib/net.yaml]\n"
        "networks:\n  G: {use: Tiny, inputs: {x: 3}}\n"
    )
    (project / "spec.yaml").write_text(text, encoding="utf-8")
    run = tmp_path / "run"
    run.mkdir()
    header = f"# resolved from {project / 'spec.yaml'}\n# sha256: 0\n"
    (run / "spec.resolved.yaml").write_text(header + text, encoding="utf-8")
    built = open_model(project / "spec.yaml", need_weights=False)
    randomize(built.module)
    export_networks(run / "models", {"G": built.module}, 1)
    model = open_model(run)
    assert model.scale == 2 and model.weights is not None
    assert sorted(p.name for p in project.iterdir()) == ["mylib", "spec.yaml"]  # no copy left


def test_an_image_over_the_pixel_limit_is_refused_with_infers_advice(
    model: Model, tmp_path: Path
) -> None:
    save(tmp_path / "in" / "big.png", photo(20, 28))
    options = InferOptions(max_megapixels=0.0001)
    result = infer(model, list_inputs(str(tmp_path / "in")), tmp_path / "o", options)
    [(path, why)] = result.failed
    assert path.name == "big.png" and "--max-megapixels" in why and "data section" not in why

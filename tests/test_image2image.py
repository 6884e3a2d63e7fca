"""Image-to-image families: pix2pix's U-Net, CycleGAN and White-box Cartoonization.

Fast tier: the recursive U-Net (shapes, gradients, structure), CycleGAN's identity
weight 0, rectangular inference, size errors and WBC's start-up without VGG weights.
Slow tier (``-m slow``): a short CPU run of each spec that must show learning, by the
measures documented in docs/pix2pix.md, docs/cyclegan.md and docs/wbc.md.
"""

from __future__ import annotations

import copy
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import engine
from engine import SpecError, load_spec
from engine.compile.build import check_shapes
from engine.compile.inspect import inspect_spec, size_rule, size_text
from engine.train.runner import run

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"

UNET_SPEC = """\
spec: 1
name: unet_check
imports: [lib/unet.yaml]
networks:
  G:
    use: UNet
    params: {{nf: {nf}, depth: {depth}, norm: {norm}, dropout: true, upsample: {upsample}}}
graph:
  fake: {{call: G, in: data.A}}
  pix: {{loss: l1, in: [fake, data.B]}}
optimizers:
  G: {{type: adam, params: G, lr: 1.0e-4}}
train:
  iterations: 1
  phases: [{{name: main, steps: [{{optimizer: G, minimize: {{pix: 1.0}}}}]}}]
data:
  train: {{type: paired, A: "builtin:edges", B: "builtin:photos", crop_size: {size}, batch_size: 1}}
"""


def unet_spec(tmp_path: Path, **values: object) -> Path:
    settings = {"nf": 4, "depth": 4, "norm": "batch", "upsample": "deconv", **values}
    settings.setdefault("size", 2 ** int(settings["depth"]))  # type: ignore[call-overload]
    path = tmp_path / "unet_check.yaml"
    path.write_text(UNET_SPEC.format(**settings))
    return path


# --------------------------------------------------------------------- the U-Net
@pytest.mark.parametrize("upsample", ["deconv", "upconv"])
@pytest.mark.parametrize(("depth", "norm"), [(3, "batch"), (4, "instance"), (5, "none")])
def test_unet_keeps_the_size_and_every_parameter_learns(
    tmp_path: Path, depth: int, norm: str, upsample: str
) -> None:
    spec = unet_spec(tmp_path, depth=depth, norm=norm, upsample=upsample)
    G = engine.build(spec)["G"].train()
    torch.manual_seed(0)
    x = torch.rand(2, 3, 2**depth * 2, 2**depth * 3)  # rectangular: H and W multiples of 2^depth
    y = G(x=x)
    assert y.shape == x.shape
    assert float(y.min()) >= 0 and float(y.max()) <= 1  # sigmoid: Loom's images are in [0, 1]
    y.square().mean().backward()
    silent = [n for n, p in G.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not silent, f"parameters without gradient: {silent}"


@pytest.mark.parametrize(("depth", "dropouts"), [(6, 1), (7, 2), (8, 3)])
def test_unet_levels_follow_pix2pix(tmp_path: Path, depth: int, dropouts: int) -> None:
    spec = load_spec(unet_spec(tmp_path, nf=64, depth=depth))
    nodes = dict(spec.networks["G"].graph.nodes(data=True))
    inner = "sub." * (depth - 1)  # the innermost level, depth - 1 levels down
    assert f"{inner}down" in nodes and f"{inner}sub.down" not in nodes  # the recursion ends
    assert f"{inner}down_norm" not in nodes  # no norm on the innermost way down
    assert f"{inner}up.norm" in nodes and "up.norm" in nodes  # the outermost's is 'none'
    assert nodes["up.norm"]["params"]["type"] == "none" and nodes["up.act"]["params"]["type"] == (
        "sigmoid"
    )
    assert "lrelu" not in nodes and "sub.lrelu" in nodes  # the outermost conv is plain
    # Dropout in the middle levels: 8*nf channels in and out, not the innermost.
    assert sum(1 for n in nodes if n.endswith(".drop")) == dropouts


@pytest.mark.parametrize(
    ("depth", "upsample", "params"),
    [(7, "deconv", 41_829_507), (8, "deconv", 54_414_467), (8, "upconv", 39_158_275)],
)
def test_unet_128_and_256_compile(tmp_path: Path, depth: int, upsample: str, params: int) -> None:
    """unet_128 and unet_256 on the meta device (pix2pix reports 41.829 M and 54.414 M)."""
    spec = load_spec(unet_spec(tmp_path, nf=64, depth=depth, upsample=upsample))
    (report,) = inspect_spec(spec, probe_sizes=False)
    assert report.params == params
    assert report.outputs["out"] == [1, 3, 2**depth, 2**depth]


# ------------------------------------------------------------------------ CycleGAN
TINY_CYCLEGAN = [
    "data.train.crop_size=32",
    "train.iterations=3",
    "validation.every=3",
    "checkpoints.every=3",
    "logging.every=1",
    *(f"networks.{n}.params.nf=4" for n in ("G_A", "G_B", "D_A", "D_B")),
    "networks.G_A.params.n_blocks=1",
    "networks.G_B.params.n_blocks=1",
]


def rectangular_images(folder: Path, count: int = 2, size: tuple[int, int] = (256, 360)) -> Path:
    """PNG files of height × width ``size`` (cut from the built-in photographs)."""
    from PIL import Image

    from engine.data import make_dataset

    photos = make_dataset(
        {"type": "single", "folder": "builtin:photos/all"}, scale=1, train=False, seed=0
    )
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image = photos[i]["x"][:, : size[0], : size[1]]
        pixels = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
    return folder


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_cyclegan_identity_weight_0_computes_no_identity_term(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """lambda_idt 0: G_A never runs on data.B nor G_B on data.A; nothing is logged.

    The same run starts G_A from a weights file (networks.G_A.pretrained) and validates
    on 360×256 images with preprocess none (square crops in training).
    """
    from engine.train.program import Program

    computed: list[str] = []
    original = Program._compute

    def spy(self: Program, name: str, *args: object) -> object:
        computed.append(name)
        return original(self, name, *args)

    monkeypatch.setattr(Program, "_compute", spy)
    images = rectangular_images(tmp_path / "rect")
    val = f"{{type: unpaired, A: '{images}', B: '{images}', preprocess: none}}"
    overrides = [*TINY_CYCLEGAN, "params.lambda_idt=0", f"data.val={val}"]
    from safetensors.torch import save_file

    start = engine.build(SPECS / "cyclegan.yaml", overrides)["G_A"]
    save_file(start.state_dict(), tmp_path / "G_A.safetensors")
    overrides.append(f"+networks.G_A.pretrained={{path: '{tmp_path / 'G_A.safetensors'}'}}")
    result = run(SPECS / "cyclegan.yaml", overrides, out=tmp_path / "run", stream=io.StringIO())
    assert "network G_A: pretrained weights from" in (result.run_dir / "train.log").read_text()
    assert computed.count("fake_B") >= 3 and computed.count("rec_B") >= 3
    assert "idt_A" not in computed and "idt_B" not in computed
    records = read_metrics(result.run_dir)
    logged = {k for r in records for k in r}
    assert {"loss/cycle_A", "loss/cycle_B", "loss/gan_A", "loss/d_A"} <= logged
    assert not {k for k in logged if k.startswith("loss/identity")}
    val_records = [r for r in records if "val/psnr" in r]
    assert val_records and np.isfinite(val_records[-1]["val/psnr"])
    from PIL import Image

    sample = sorted((result.run_dir / "samples").iterdir())[0]
    assert Image.open(sample).size == (3 * 360, 256)  # input | output | target, full size


def test_cyclegan_identity_weight_0_plans_no_identity_call() -> None:
    """The G step's plan with lambda_idt 0 leaves out idt_A and idt_B entirely."""
    from engine.train.program import Program

    spec = load_spec(SPECS / "cyclegan.yaml", overrides=["params.lambda_idt=0"])
    step = spec.data["train"]["phases"][0]["steps"][0]
    program = Program(spec.training, {}, {}, {}, {})
    weights = {"gan_A": 1, "gan_B": 1, "cycle_A": 10, "cycle_B": 10}  # the non-zero ones
    assert set(step["minimize"]) - set(weights) == {"identity_A", "identity_B"}
    plan = program.plan("G", weights, frozenset({"G_A", "G_B"}))
    assert "idt_A" not in plan.needed and "idt_B" not in plan.needed
    assert {"fake_B", "rec_A", "fake_A", "rec_B"} <= set(plan.needed)


# ------------------------------------------------------------ rectangular images
TINY_NETS = {
    "cyclegan.yaml": [
        *(f"networks.{n}.params.nf=4" for n in ("G_A", "G_B", "D_A", "D_B")),
        "networks.G_A.params.n_blocks=1",
        "networks.G_B.params.n_blocks=1",
    ],
    "wbc.yaml": [
        "params.vgg_weights=random",
        "networks.G.params.nf=4",
        "networks.G.params.n_blocks=1",
        "networks.D_surface.params.nf=4",
        "networks.D_texture.params.nf=4",
    ],
    "pix2pix.yaml": ["networks.G.params.nf=4", "networks.D.params.nf=4"],
}


@pytest.mark.parametrize(
    ("name", "net", "size"),
    [
        ("cyclegan.yaml", "G_A", (256, 360)),
        ("wbc.yaml", "G", (256, 360)),
        ("pix2pix.yaml", "G", (256, 512)),  # unet_256 needs multiples of 256
    ],
)
def test_trained_on_squares_runs_on_rectangles(name: str, net: str, size: tuple[int, int]) -> None:
    overrides = [*TINY_NETS[name], "data.train.crop_size=64"]
    if name == "pix2pix.yaml":
        overrides += ["data.train.crop_size=256"]
    G = engine.build(SPECS / name, overrides)[net].eval()
    x = torch.rand(1, 3, *size)
    with torch.no_grad():
        out = G(x=x)
    out = out["out"] if isinstance(out, dict) else out
    assert out.shape == x.shape


def test_a_compiled_network_refuses_a_size_it_would_answer_wrongly() -> None:
    nets = engine.build(SPECS / "cyclegan.yaml", TINY_NETS["cyclegan.yaml"])
    G, D = nets["G_A"].eval(), nets["D_A"].eval()
    with torch.no_grad():
        # The transposed convolutions would round 250 up to 252 without complaint.
        with pytest.raises(ValueError) as refused:
            G(x=torch.rand(1, 3, 250, 252))
        assert str(refused.value) == (
            "network G_A: a 250×252 input gives a 252×252 'out' output where 250×252 was "
            "due: it cannot take this size (input size: a multiple of 4, at least 8×8); "
            "crop or pad the input to such a size, or give the network 'pad: reflect'"
        )
        assert G(x=torch.rand(1, 3, 36, 60)).shape == (1, 3, 36, 60)
        # A PatchGAN's map is n/8 - 2 of any size: nothing to refuse.
        assert D(x=torch.rand(1, 3, 100, 72)).shape == (1, 1, 10, 7)
        assert D(x=torch.rand(1, 3, 64, 64)).shape == (1, 1, 6, 6)
    copy.deepcopy(G)(x=torch.rand(1, 3, 32, 32))  # an EMA copy keeps the guard
    with pytest.raises(ValueError, match="cannot take this size"):
        copy.deepcopy(G)(x=torch.rand(1, 3, 30, 30))


def test_wbc_guided_filter_is_part_of_the_exported_generator() -> None:
    from blocks.builtin.image_ops import GuidedFilter

    G = engine.build(SPECS / "wbc.yaml", TINY_NETS["wbc.yaml"])["G"].eval()
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        out = G(x=x)
        expected = GuidedFilter(radius=1, eps=2.5e-3)(out["raw"], x)
    assert torch.allclose(out["out"], expected, atol=1e-6)
    assert not torch.allclose(out["out"], out["raw"], atol=1e-3)


@pytest.mark.parametrize(
    ("name", "size", "words"),
    [
        ("wbc.yaml", 250, ["network 'G' cannot run on x (1, 3, 250, 250)", "unet.skip1"]),
        ("pix2pix.yaml", 250, ["network 'G' cannot run on x (1, 3, 250, 250)"]),
        ("cyclegan.yaml", 250, ["pred has shape (1, 3, 252, 252) but target (1, 3, 250, 250)"]),
    ],
)
def test_sizes_the_generator_cannot_take_are_reported(
    name: str, size: int, words: list[str]
) -> None:
    overrides = [*TINY_NETS[name], f"data.train.crop_size={size}"]
    with pytest.raises(SpecError) as caught:
        engine.build(SPECS / name, overrides)
    text = "\n".join(d.message for d in caught.value.diagnostics.errors)
    for word in words:
        assert word in text


@pytest.mark.parametrize(
    ("name", "crop", "net", "text"),
    [
        ("wbc.yaml", 64, "G", "a multiple of 4, at least 4×4"),
        ("cyclegan.yaml", 64, "G_A", "a multiple of 4, at least 8×8"),
        # Larger than any fixed probe range: unet_256 halves the size eight times.
        ("pix2pix.yaml", 256, "G", "a multiple of 256, at least 256×256"),
        # A PatchGAN runs at any size from 24 on; its patch map is n/8 - 2, not n/8.
        (
            "pix2pix.yaml",
            256,
            "D",
            "a multiple of 1, at least 24×24 (its output does not scale with the input)",
        ),
    ],
)
def test_inspect_reports_the_sizes_a_network_accepts(
    name: str, crop: int, net: str, text: str
) -> None:
    spec = load_spec(SPECS / name, [*TINY_NETS[name], f"data.train.crop_size={crop}"])
    rule = size_rule(spec.networks[net], check_shapes(spec).networks[net])
    assert rule.fixed is None
    assert size_text(rule) == f"input size: {text}"


def test_a_discriminator_with_a_linear_head_has_a_fixed_size() -> None:
    # SRGAN's VGG discriminator flattens 512×4×4 features into a linear layer: sizes
    # 129..135 still give 4×4, but no size from twice the crop on does, so it is fixed.
    spec = load_spec(SPECS / "srgan.yaml", ["networks.G.params.nf=8", "networks.G.params.nb=1"])
    rule = size_rule(spec.networks["D"], check_shapes(spec).networks["D"])
    assert rule.fixed == 128
    assert size_text(rule).startswith("input size: fixed at 128×128")


# ------------------------------------------------------------------------------ WBC
def test_wbc_without_vgg_weights_stops_at_start_up_saying_how(tmp_path: Path) -> None:
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "torch")}  # an empty hub cache
    run_dir = str(tmp_path / "run")
    result = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), "run", str(SPECS / "wbc.yaml"), "--out", run_dir],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode != 0
    assert "VGG19 ImageNet weights not found" in result.stderr
    assert "vgg19-dcbb9e9d.pth" in result.stderr and "random" in result.stderr
    # Reported at the loss's weights, with the override that sets them, no traceback.
    assert "wbc.yaml:" in result.stderr and "graph node 'structure_l'" in result.stderr
    assert "override params.vgg_weights=VALUE" in result.stderr
    assert "Traceback" not in result.stderr
    metrics = tmp_path / "run" / "metrics.jsonl"
    assert not metrics.exists() or not metrics.read_text().strip()  # no step was taken


# ------------------------------------------------------------------ learning (slow)
def luma_dark_share(x: torch.Tensor) -> float:
    """Share of pixels darker than 0.2 (mean of RGB): the cartoons' outlines and shadows."""
    return float((x.mean(1) < 0.2).float().mean())


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / (a - b).square().mean()))


def photo_cartoon_pairs() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every built-in photo (centre 256 crop) with its own built-in cartoon."""
    from engine.data import make_dataset

    ds = make_dataset(
        {
            "type": "unpaired",
            "A": "builtin:photos/all",
            "B": "builtin:cartoon/all",
            "preprocess": "center_crop",
            "crop_size": 256,
        },
        scale=1,
        train=False,
        seed=0,
    )
    return [(ds[i]["A"][None], ds[i]["B"][None]) for i in range(len(ds))]


def domain_report(G: torch.nn.Module, port: str | None) -> dict[str, float]:
    """Dark share of photos, outputs and cartoons; PSNR of the output to its cartoon."""
    rows = []
    with torch.no_grad():
        for photo, cartoon in photo_cartoon_pairs():
            out = G.eval()(x=photo)
            out = out[port] if port else out
            dark = [luma_dark_share(image) for image in (photo, out, cartoon)]
            rows.append([*dark, psnr(out, cartoon)])
    mean = np.mean(rows, axis=0)
    return dict(zip(["dark_photo", "dark_out", "dark_cartoon", "psnr_out"], mean, strict=True))


def falls(records: list[dict], key: str) -> bool:
    values = [r[key] for r in records if key in r]
    n = max(len(values) // 5, 1)
    return float(np.mean(values[-n:])) < float(np.mean(values[:n]))


@pytest.mark.slow
def test_pix2pix_learns_edges_to_photos(tmp_path: Path) -> None:
    """Val PSNR of G(edges) against the photo rises (the six training pairs; ~1 min)."""
    overrides = [
        "networks.G.params.nf=16",
        "networks.G.params.depth=6",
        "networks.D.params.nf=16",
        "data.train.crop_size=64",
        "data.train.load_size=72",
        "data.val.A=builtin:edges/train",
        "data.val.B=builtin:photos/train",
        "data.val.load_size=64",
        "train.iterations=1500",
        "validation.every=100",
        "checkpoints.every=1500",
        "logging.every=1",
    ]
    result = run(SPECS / "pix2pix.yaml", overrides, out=tmp_path / "run", stream=io.StringIO())
    records = read_metrics(result.run_dir)
    val = [r["val/psnr"] for r in records if "val/psnr" in r]
    print(f"pix2pix val/psnr: {val[0]:.2f} → {val[-1]:.2f} dB")  # shown with -s
    assert val[-1] > val[0] + 1.5, val
    assert falls(records, "loss/l1")


@pytest.mark.slow
def test_cyclegan_moves_photos_toward_cartoons(tmp_path: Path) -> None:
    """Losses fall; G_A's dark share moves from the photos' toward the cartoons' (~2.5 min)."""
    overrides = [
        *(f"networks.{n}.params.nf=16" for n in ("G_A", "G_B", "D_A", "D_B")),
        "networks.G_A.params.n_blocks=3",
        "networks.G_B.params.n_blocks=3",
        "data.train.crop_size=128",
        "train.iterations=600",
        "validation.every=600",
        "checkpoints.every=600",
        "logging.every=1",
    ]
    torch.manual_seed(0)
    untrained = engine.build(SPECS / "cyclegan.yaml", overrides)["G_A"]
    before = domain_report(untrained, None)
    result = run(SPECS / "cyclegan.yaml", overrides, out=tmp_path / "run", stream=io.StringIO())
    records = read_metrics(result.run_dir)
    for key in ("loss/cycle_A", "loss/cycle_B", "loss/identity_A", "loss/identity_B"):
        assert falls(records, key), key
    after = domain_report(result.networks["G_A"], None)
    print(f"cyclegan before {before}\ncyclegan after {after}")  # shown with -s
    gap_photo = abs(after["dark_photo"] - after["dark_cartoon"])
    assert abs(after["dark_out"] - after["dark_cartoon"]) < 0.5 * gap_photo, after
    assert after["psnr_out"] > before["psnr_out"] + 2, (before, after)


@pytest.mark.slow
def test_wbc_moves_photos_toward_cartoons(tmp_path: Path) -> None:
    """Warm-up and D losses fall; the output's dark share moves toward the cartoons'.

    No ImageNet VGG19 offline: ``weights: random`` (torchvision's Kaiming init, a fixed
    draw) gives features of a usable scale, and the content scale is raised to match.
    """
    torch.manual_seed(0)
    overrides = [
        "params.vgg_weights=random",
        "params.content=200",
        "data.train.crop_size=64",
        "data.train.batch_size=4",
        "data.val.crop_size=64",
        "train.iterations=300",
        "train.phases.0.until=100",
        "validation.every=100",
        "checkpoints.every=100",
        "logging.every=1",
    ]
    result = run(SPECS / "wbc.yaml", overrides, out=tmp_path / "run", stream=io.StringIO())
    records = read_metrics(result.run_dir)
    for key in ("loss/recon", "loss/surface_d", "loss/texture_d"):
        assert falls(records, key), key
    warm = engine.build(SPECS / "wbc.yaml", overrides)["G"]
    from safetensors.torch import load_file

    warm.load_state_dict(load_file(result.run_dir / "models" / "G_iter_00000100.safetensors"))
    before = domain_report(warm, "out")  # after the warm-up: a filtered reconstruction
    after = domain_report(result.networks["G"], "out")
    print(f"wbc after warm-up {before}\nwbc after {after}")  # shown with -s
    assert after["dark_out"] > before["dark_out"] + 0.1, (before, after)
    gap_photo = abs(after["dark_photo"] - after["dark_cartoon"])
    assert abs(after["dark_out"] - after["dark_cartoon"]) < 0.5 * gap_photo, after
    assert after["psnr_out"] > before["psnr_out"] - 1.0, (before, after)  # no collapse


def test_docs_pages_name_every_spec_option() -> None:
    """Each family's page documents its spec's top-level params."""
    for spec_name, page in [("cyclegan", "cyclegan"), ("wbc", "wbc"), ("pix2pix", "pix2pix")]:
        spec = load_spec(SPECS / f"{spec_name}.yaml")
        text = (ROOT / "docs" / f"{page}.md").read_text()
        for key in spec.data.get("params") or {}:
            assert f"`{key}`" in text, f"docs/{page}.md does not mention `{key}`"

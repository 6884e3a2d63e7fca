"""Degradations declared in the spec: each kind changes the image as it says, and a
seed, epoch and index always give the same result."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from jsonschema import Draft202012Validator
from PIL import Image

from engine.data import DataError, make_dataset
from engine.data.degrade import PARAMS, Pipeline, blur_kernel
from engine.data.kinds import KERNELS
from engine.load import check_spec
from engine.spec.diagnostics import Diagnostics
from engine.spec.skeleton import BLUR_TYPES, DATASET, NOISE_TYPES
from engine.spec.yamlio import parse_yaml

ROOT = Path(__file__).resolve().parents[1]
PRESET = ROOT / "specs" / "lib" / "degradations" / "realesrgan.yaml"


def smooth_image(size: int = 64) -> torch.Tensor:
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    img = torch.stack([x, y, (x + y) / 2])
    img[:, size // 4 : size // 2, size // 4 : size // 2] = 0.9  # an edge to blur
    return img


def run(steps: list[dict], seed: int = 0, image: torch.Tensor | None = None, final=(16, 16)):
    image = smooth_image() if image is None else image
    return Pipeline.parse(steps, where="d").run(
        image, np.random.default_rng(seed), final_size=final
    )


@pytest.mark.parametrize("kind", BLUR_TYPES)
def test_every_blur_kernel_is_normalized_and_blurs(kind: str) -> None:
    params = {**PARAMS["blur"], "type": kind, "size": 9}
    kernel = blur_kernel(params, np.random.default_rng(0))
    assert kernel.shape == (9, 9) and abs(kernel.sum() - 1) < 1e-6
    out = run([{"kind": "blur", "type": kind, "size": 9, "sigma": 2.0}])
    edge = smooth_image()
    assert out.shape == edge.shape
    assert (out - edge).abs().max() > 0.05  # the square's edge is softened
    assert abs(float(out.mean() - edge.mean())) < 0.02  # brightness kept


def test_gaussian_blur_matches_its_definition() -> None:
    impulse = torch.zeros(1, 15, 15)
    impulse[0, 7, 7] = 1.0
    out = run([{"kind": "blur", "type": "iso", "size": 7, "sigma": 1.0}], image=impulse)
    r = torch.arange(7) - 3.0
    g = torch.exp(-(r[:, None] ** 2 + r[None] ** 2) / 2)
    assert torch.allclose(out[0, 4:11, 4:11], g / g.sum(), atol=1e-6)


@pytest.mark.parametrize("kind", NOISE_TYPES)
@pytest.mark.parametrize("gray", [0.0, 1.0])
def test_noise_kinds_add_noise_colour_or_gray(kind: str, gray: float) -> None:
    image = torch.full((3, 32, 32), 0.5)
    out = run(
        [
            {
                "kind": "noise",
                "type": kind,
                "gray_prob": gray,
                "sigma": 20,
                "amount": 0.1,
                "speckle": 0.2,
                "poisson_scale": 1.0,
            }
        ],
        image=image,
    )
    assert out.shape == image.shape and out.min() >= 0 and out.max() <= 1
    changed = (out - image).abs() > 1e-6
    assert changed.float().mean() > 0.05
    same_on_channels = torch.allclose(out[0], out[1]) and torch.allclose(out[1], out[2])
    assert same_on_channels == (gray == 1.0)


def test_salt_and_pepper_sets_pixels_to_black_and_white() -> None:
    out = run(
        [{"kind": "noise", "type": "salt_pepper", "amount": 0.2}],
        image=torch.full((3, 64, 64), 0.5),
    )
    values = set(torch.unique(out).tolist())
    assert values == {0.0, 0.5, 1.0}
    assert 0.1 < float((out != 0.5).float().mean()) < 0.3


def test_jpeg_quality_controls_the_error() -> None:
    image = smooth_image()
    low = run([{"kind": "jpeg", "quality": 10}], image=image)
    high = run([{"kind": "jpeg", "quality": 95}], image=image)
    assert (low - image).abs().mean() > 2 * (high - image).abs().mean() > 0


def test_resize_steps_scale_and_end_at_the_lr_size() -> None:
    out = run([{"kind": "resize", "scale": 0.5, "kernel": "nearest"}])
    assert out.shape == (3, 32, 32)
    assert torch.equal(out, smooth_image()[:, 1::2, 1::2])
    up = run([{"kind": "resize", "scale": [0.2, 1.5], "updown": {"up": 1}, "kernel": "bicubic"}])
    assert up.shape[-1] >= 64
    down = run([{"kind": "resize", "to": "lr", "kernel": {"lanczos": 1, "area": 1}}])
    assert down.shape == (3, 16, 16)


def test_sharpen_raises_contrast_at_edges() -> None:
    image = smooth_image()
    out = run([{"kind": "sharpen", "amount": 1.0, "sigma": 1.0, "threshold": 0}], image=image)
    assert out.std() > image.std()


def test_prob_zero_never_runs_and_kinds_choose_by_weight() -> None:
    image = smooth_image()
    assert torch.equal(run([{"kind": "noise", "prob": 0.0}], image=image), image)
    step = {"kinds": {"jpeg": 1, "resize": 3}, "resize": {"scale": 0.5}}
    sizes = [run([step], seed=s).shape[-1] for s in range(200)]
    assert 0.65 < sizes.count(32) / 200 < 0.85


def test_degradations_are_reproducible_and_vary_between_samples() -> None:
    steps = parse_yaml(PRESET.read_text(), "preset", Diagnostics()).data["data"]["train"][
        "degradations"
    ]
    image = smooth_image(128)
    a = run(steps, seed=5, image=image, final=(32, 32))
    b = run(steps, seed=5, image=image, final=(32, 32))
    c = run(steps, seed=6, image=image, final=(32, 32))
    assert a.shape == (3, 32, 32)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_sr_dataset_degrades_the_lr_reproducibly(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    (tmp_path / "hr").mkdir()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
        tmp_path / "hr" / "a.png"
    )
    section = {
        "type": "sr",
        "hr": "hr",
        "crop_size": 32,
        "flip": False,
        "degradations": [{"kind": "noise", "sigma": 25}, {"kind": "jpeg", "quality": 40}],
    }
    ds = make_dataset(section, scale=2, train=True, seed=1, spec_dir=tmp_path)
    plain = make_dataset(
        {**section, "degradations": []}, scale=2, train=True, seed=1, spec_dir=tmp_path
    )
    s, p = ds[(0, 0)], plain[(0, 0)]
    assert torch.equal(s["hr"], p["hr"])  # the target is untouched
    assert s["lr"].shape == p["lr"].shape == (3, 16, 16)
    assert (s["lr"] - p["lr"]).abs().mean() > 0.02
    assert torch.equal(ds[(0, 0)]["lr"], s["lr"])
    assert not torch.equal(ds[(1, 0)]["lr"], s["lr"])


def test_bad_steps_are_named(tmp_path: Path) -> None:
    for steps, message in [
        ([{"kind": "blur", "sigmaa": 1}], r"unknown parameter 'sigmaa' for blur"),
        ([{"kind": "warp"}], r"unknown degradation kind 'warp'"),
        ([{"kinds": {"blur": 1}, "noise": {}}], r"parameters for 'noise', which is not in kinds"),
        ([{"kind": "noise", "type": "pink"}], r"unknown noise type 'pink'"),
    ]:
        with pytest.raises(DataError, match=message):
            Pipeline.parse(steps, where="data.train.degradations")


def _spec(tmp_path: Path, data: str, extends: str = "") -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(
        f"""spec: 1
name: t
scale: 4
{extends}
networks:
  G:
    inputs: {{lr: 3}}
    nodes:
      up: {{block: conv, in: lr, out: 48}}
      shuf: {{block: pixel_shuffle, in: up, scale: 4}}
    outputs: {{sr: shuf}}
graph:
  fake: {{call: G, in: data.lr}}
  pix: {{loss: l1, in: [fake.sr, data.hr]}}
optimizers:
  G: {{type: adam, params: G, lr: 1.0e-4}}
train:
  iterations: 10
  phases: [{{name: main, steps: [{{optimizer: G, minimize: {{pix: 1.0}}}}]}}]
data:
  train:
{data}
"""
    )
    return path


def test_the_realesrgan_preset_extends_a_spec(tmp_path: Path) -> None:
    path = _spec(
        tmp_path,
        '    type: sr\n    hr: "builtin:photos"\n    crop_size: 128',
        "extends: lib/degradations/realesrgan.yaml",
    )
    spec, diags = check_spec(path)
    assert spec is not None, [str(d) for d in diags]
    section = spec.data["data"]["train"]
    assert len(section["degradations"]) == 9
    ds = make_dataset(section, scale=4, train=True, seed=0)
    assert ds[0]["lr"].shape == (3, 32, 32)


def test_the_schema_rejects_unknown_keys_in_steps(tmp_path: Path) -> None:
    data = """    type: sr
    hr: "builtin:photos"
    preprocess: resize_and_crap
    degradations:
      - {kind: blur, sigmaa: 1}
      - {kinds: {noise: 1}, noise: {gray: 1}}
      - {one_of: [{steps: [{kind: jpeg, quality: [30, 95], level: 3}]}]}"""
    spec, diags = check_spec(_spec(tmp_path, data))
    text = "\n".join(str(d) for d in diags)
    assert spec is None
    assert "unknown key 'sigmaa' in 'data.train.degradations[0]' (did you mean 'sigma'?)" in text
    assert "unknown key 'gray' in 'data.train.degradations[1].noise'" in text
    assert "unknown key 'level' in 'data.train.degradations[2].one_of[0].steps[0]'" in text
    assert "'data.train.preprocess' must be one of" in text


STEPS = Draft202012Validator(DATASET["properties"]["degradations"])


def test_the_schema_takes_exactly_the_kinds_and_parameters_the_pipeline_runs() -> None:
    unset = {"updown": {"up": 1}, "to": "lr"}  # values for parameters whose default is None
    for kind, params in PARAMS.items():
        for name, default in params.items():
            step = {"kind": kind, name: unset.get(name, default)}
            assert not list(STEPS.iter_errors([step])), step
            Pipeline.parse([step], where="d")
        assert list(STEPS.iter_errors([{"kind": kind, "nonsense": 1}]))
    assert list(STEPS.iter_errors([{"kind": "warp"}]))


def test_the_resize_step_takes_every_resize_kernel() -> None:
    for kernel in KERNELS:
        step = {"kind": "resize", "to": "lr", "kernel": kernel}
        assert not list(STEPS.iter_errors([step])), kernel
        assert run([step]).shape == (3, 16, 16)
    assert list(STEPS.iter_errors([{"kind": "resize", "kernel": "lanczoz"}]))

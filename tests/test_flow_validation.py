"""Validation of a sampled output: ``validation.heats`` × ``n_sample`` draws of a
reverse call, their PSNR and diversity per heat, the grid per sample image, non-finite
draws counted and left out, and the refusals of ``validate`` (docs/srflow.md)."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import engine
from engine import check_spec, load_spec
from engine.load import Spec
from engine.train import heats as heats_module
from engine.train import trackers
from engine.train.runner import run
from engine.train.validator import Validator

ROOT = Path(__file__).resolve().parents[1]

#: A conditional flow at x2 small enough to sample a dozen times in a blink: the LR
#: image's features condition one coupling on the squeezed HR image.
FLOW = """\
spec: 1
name: tiny_flow
scale: 2
networks:
  G:
    inputs: {hr: 3, lr: 3}
    flow: hr
    nodes:
      cond: {block: conv, in: lr, out: 4}
      sq: {block: squeeze, in: hr}
      steps:
        in: sq
        chain:
          - {block: actnorm}
          - {block: invconv}
          - {block: affine_coupling, in: {cond: cond}, hidden: 4}
    outputs: {z: steps}
graph:
  flow: {call: G, in: {hr: data.hr, lr: data.lr}}
  nll: {loss: nll, in: {z: flow.z, logdet: flow.logdet, x: data.hr}}
  sr: {call: G, reverse: true, in: {lr: data.lr}, heat: 0.0}
optimizers:
  G: {type: adam, params: G, lr: 1.0e-4}
train:
  iterations: 2
  phases: [{name: main, steps: [{optimizer: G, minimize: {nll: 1.0}}]}]
data:
  train: {type: sr, hr: "builtin:photos", crop_size: 16, batch_size: 2}
  val: {type: sr, hr: "builtin:photos"}
validation:
  every: 2
  output: sr
  input: data.lr
  target: data.hr
  metrics: [psnr]
  samples: 1
  heats: [0.0, 0.5, 1.0]
  n_sample: 3
logging: {every: 1}
"""
H, W = 16, 24  # the validation images (HR)


class Images(torch.utils.data.Dataset):
    """Smooth random HR images, deterministic per index, with their 2x average-pooled LR."""

    def __init__(self, n: int, height: int, width: int) -> None:
        self.n, self.height, self.width = n, height, width

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        index = key[1] if isinstance(key, tuple) else key  # loaders pass (epoch, index)
        gen = torch.Generator().manual_seed(index % self.n)
        coarse = torch.rand(1, 3, 4, 6, generator=gen)
        hr = F.interpolate(coarse, size=(self.height, self.width), mode="bilinear")
        return {"hr": hr[0], "lr": F.avg_pool2d(hr, 2)[0]}


def write(folder: Path, text: str = FLOW) -> Path:
    path = folder / "flow.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Spec, nn.Module]:
    """The spec and its G, actnorms initialized on a batch (as the first training step
    does), so that the flow is no longer the identity."""
    spec = load_spec(write(tmp_path_factory.mktemp("flow")))
    torch.manual_seed(0)
    g = engine.build(spec)["G"]
    batch = Images(2, H, W)
    hr = torch.stack([batch[i]["hr"] for i in range(2)])
    g.train()
    with torch.no_grad():
        g(hr=hr, lr=F.avg_pool2d(hr, 2))
    return spec, g


def validator(spec: Spec, folder: Path, warn: Any = None, images: int = 2) -> Validator:
    assert spec.settings.validation is not None
    return Validator(
        spec, spec.settings.validation, Images(images, H, W), folder,
        multiple=lambda: 1, autocast=contextlib.nullcontext, warn=warn,
    )  # fmt: skip


def validate(v: Validator, g: nn.Module, iteration: int = 2) -> dict[str, float]:
    return v(iteration, {"G": g}, {}, {}, torch.device("cpu"))


def test_each_heat_logs_the_psnr_and_diversity_of_its_draws(
    tiny: tuple[Spec, nn.Module], tmp_path: Path
) -> None:
    spec, g = tiny
    v = validator(spec, tmp_path)
    values = validate(v, g)
    expected = {"psnr", "psnr_bicubic", "nonfinite_samples"}
    for label in ("heat0", "heat0.5", "heat1"):
        expected |= {f"psnr_{label}", f"diversity_{label}"}
    assert set(values) == expected
    # The usual metrics are taken at heat 0: the same image as each heat-0 draw.
    assert values["psnr_heat0"] == pytest.approx(values["psnr"], abs=1e-9)
    assert values["diversity_heat0"] <= 1e-9  # z = 0 · noise: every draw the same image
    assert 1 < values["diversity_heat0.5"] < values["diversity_heat1"]  # grey levels
    assert values["psnr_heat1"] < values["psnr_heat0.5"] < values["psnr_heat0"]
    assert values["nonfinite_samples"] == 0
    # Diversity has no better direction, nor has a count of failures: no best for them.
    assert set(v.best) == {"psnr", "psnr_heat0", "psnr_heat0.5", "psnr_heat1"}


def test_the_grid_has_a_row_per_heat_and_the_input_and_target_first(
    tiny: tuple[Spec, nn.Module], tmp_path: Path
) -> None:
    spec, g = tiny
    validate(validator(spec, tmp_path), g, iteration=7)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "iter_00000007_0.png",
        "iter_00000007_0_heats.png",  # samples: 1 — the first image only
    ]
    with Image.open(tmp_path / "iter_00000007_0_heats.png") as png:
        grid = np.asarray(png.convert("RGB"))
    assert grid.shape == (3 * H, (2 + 3) * W, 3)  # 3 heats; input, target, 3 draws
    target = Images(2, H, W)[0]["hr"]
    shown = torch.from_numpy(grid[:H, W : 2 * W].copy()).permute(2, 0, 1).float() / 255
    assert (shown - target).abs().max() <= 0.5 / 255 + 1e-6
    assert grid[H:, : 2 * W].max() == 0  # below the input and target: black
    heat0 = [grid[:H, (2 + k) * W : (3 + k) * W] for k in range(3)]
    assert all(np.array_equal(heat0[0], d) for d in heat0[1:])
    heat1 = [grid[2 * H :, (2 + k) * W : (3 + k) * W] for k in range(3)]
    assert not np.array_equal(heat1[0], heat1[1])


def test_validations_repeat_their_draws_and_leave_training_randomness_alone(
    tiny: tuple[Spec, nn.Module], tmp_path: Path
) -> None:
    spec, g = tiny
    v = validator(spec, tmp_path)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = validate(v, g)
    assert torch.equal(torch.get_rng_state(), state)  # put back as it was
    torch.rand(5)  # training goes on drawing
    assert validate(v, g) == first


def test_one_draw_per_heat_has_no_diversity(tiny: tuple[Spec, nn.Module], tmp_path: Path) -> None:
    _, g = tiny
    one = load_spec(write(tmp_path), ["validation.n_sample=1"])
    values = validate(validator(one, tmp_path), g)
    assert not any(k.startswith("diversity_") for k in values)
    assert {"psnr_heat0", "psnr_heat0.5", "psnr_heat1"} <= set(values)
    with Image.open(tmp_path / "iter_00000002_0_heats.png") as png:
        assert png.size == ((2 + 1) * W, 3 * H)


class FailsWhenHot(nn.Module):
    """G, whose reverse samples are all NaN at heat 1 and have one inf pixel at 0.5."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.module = net  # seen through as the network itself (engine.compile.network.unwrap)

    def forward(self, **inputs: Any) -> Any:
        out = self.module(**inputs)
        heat = inputs.get("heat", 0.0)
        if heat >= 1:
            return {k: torch.full_like(v, math.nan) for k, v in out.items()}
        if heat > 0:
            out["hr"][..., 0, 0] = math.inf
        return out


def test_nonfinite_draws_are_counted_left_out_and_warned_once(
    tiny: tuple[Spec, nn.Module], tmp_path: Path
) -> None:
    spec, g = tiny
    said: list[str] = []
    v = validator(spec, tmp_path, warn=said.append)
    values = v(2, {"G": FailsWhenHot(g)}, {}, {}, torch.device("cpu"))
    assert values["nonfinite_samples"] == 2 * 2 * 3  # 2 heats × 2 images × 3 draws
    assert math.isfinite(values["psnr"]) and math.isfinite(values["psnr_heat0"])
    for key in ("psnr_heat0.5", "psnr_heat1", "diversity_heat0.5", "diversity_heat1"):
        assert math.isnan(values[key]), key
    assert said == [
        "validation at iteration 2: 12 of 18 draws (validation.heats × n_sample) had NaN or "
        "inf values; they are left out of psnr_heat and diversity_heat, and no draw at heat "
        "0.5, 1 was finite (logged as nan)"
    ]
    assert "psnr_heat1" not in v.best
    with Image.open(tmp_path / "iter_00000002_0_heats.png") as png:
        grid = np.asarray(png.convert("RGB"))
    assert grid[2 * H :, 2 * W :].max() == 0  # NaN pixels are drawn black
    assert (grid[H : 2 * H, 2 * W :, :][0, 0] == 0).all()  # and inf ones
    assert grid[H : 2 * H, 2 * W :].max() > 0


def test_a_run_logs_the_heat_keys_and_warns_in_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(heats_module, "is_finite", lambda image: False)  # every draw fails
    path = write(tmp_path)
    datasets = {"train": Images(4, 16, 16), "val": Images(1, H, W)}
    run(path, out=tmp_path / "run", stream=io.StringIO(), live=False, datasets=datasets)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    (val,) = [r for r in map(json.loads, lines) if "val/psnr" in r]
    assert val["val/nonfinite_samples"] == 9
    assert math.isnan(val["val/psnr_heat0.5"]) and math.isfinite(val["val/psnr"])
    log = (tmp_path / "run" / "train.log").read_text()
    assert log.count("warning: validation at iteration 2: 9 of 9 draws") == 1
    assert (tmp_path / "run" / "samples" / "iter_00000002_0_heats.png").is_file()


def test_trackers_get_the_heat_grids_beside_the_samples(tmp_path: Path) -> None:
    added: list[tuple[str, tuple[int, ...]]] = []
    writer = SimpleNamespace(
        add_text=lambda *a: None,
        add_image=lambda tag, array, step, dataformats: added.append((tag, array.shape)),
        flush=lambda: None,
    )
    board = SimpleNamespace(name="tensorboard", writer=writer)
    accelerator = SimpleNamespace(trackers=[board], init_trackers=lambda *a, **k: None)
    sent = trackers.Trackers(accelerator, tmp_path, "tiny_flow", {})
    (tmp_path / "samples").mkdir()
    for name, width in [("0", 3), ("0_heats", 5), ("1", 3), ("1_heats", 5), ("10", 3)]:
        Image.new("RGB", (width, 2)).save(tmp_path / "samples" / f"iter_00000004_{name}.png")
    Image.new("RGB", (1, 1)).save(tmp_path / "samples" / "iter_00000004_0_other.png")
    sent.samples(4)
    assert [t for t, _ in added] == [
        "samples/0", "samples/0_heats", "samples/1", "samples/1_heats", "samples/10",
    ]  # fmt: skip
    assert dict(added)["samples/0_heats"] == (2, 5, 3)


PHASE = "phases: [{name: main, steps: [{optimizer: G, minimize: {nll: 1.0}}]}]"


@pytest.mark.parametrize(
    ("edit", "at", "message"),
    [
        (
            ("output: sr", "output: flow.z"),
            "flow.z",
            "validation.output: validation.heats samples a reverse call's output at each heat, "
            "but 'flow' is not a reverse call; the reverse calls here: 'sr' (or remove "
            "validation.heats)",
        ),
        (
            (PHASE, PHASE.replace("main,", "main, validation: {output: flow.logdet},")),
            "flow.logdet",
            "train.phases[0].validation.output: validation.heats samples a reverse call's "
            "output at each heat, but 'flow' is not a reverse call; the reverse calls here: "
            "'sr' (or remove validation.heats)",
        ),
        (
            ("heats: [0.0, 0.5, 1.0]", "heats: [0.0, -0.5, 1.0]"),
            "-0.5",
            "'validation.heats[1]' must be a number ≥ 0, got -0.5",
        ),
        (
            ("heats: [0.0, 0.5, 1.0]", "heats: [0.0, 0.5, 0.50]"),
            "0.50",
            "validation.heats: 0.5 is listed twice",
        ),
        (
            ("n_sample: 3", "n_sample: 0"),
            "0",
            "'validation.n_sample' must be an integer ≥ 1, got 0",
        ),
    ],
    ids=["not-a-reverse-call", "a-phase-output", "negative", "twice", "no-draws"],
)
def test_validate_refuses_heats_it_cannot_sample_at_the_key(
    tmp_path: Path, edit: tuple[str, str], at: str, message: str
) -> None:
    """Each refusal at the value: the line the edit wrote, the column of ``at`` in it."""
    text = FLOW.replace(*edit)
    assert text != FLOW
    _, diags = check_spec(write(tmp_path, text))
    lines = text.splitlines()
    line = next(i for i, t in enumerate(lines) if edit[1] in t)
    col = lines[line].rindex(at) + 1
    assert [(d.loc.line, d.loc.col, d.message) for d in diags.errors] == [(line + 1, col, message)]


def test_heats_on_a_network_that_is_not_invertible_name_the_fix(tmp_path: Path) -> None:
    _, diags = check_spec(ROOT / "specs" / "esrgan.yaml", ["+validation.heats=[0.0, 1.0]"])
    (error,) = diags.errors
    assert "'fake' is not a reverse call; add a node such as {call: G, reverse: true" in str(
        error.message
    )
    # n_sample without heats draws nothing: said where it is written.
    text = FLOW.replace("  heats: [0.0, 0.5, 1.0]\n", "")
    _, diags = check_spec(write(tmp_path, text))
    (warning,) = [d for d in diags if d.severity == "warning"]
    assert warning.loc.line == text.splitlines().index("  n_sample: 3") + 1
    assert warning.message.startswith("validation.n_sample draws samples at each of")


def test_srflow_samples_its_heat_zero_output_at_four_heats() -> None:
    spec = load_spec(ROOT / "specs" / "srflow.yaml")
    validation = spec.settings.validation
    assert validation is not None
    assert (validation.heats, validation.n_sample) == ((0.0, 0.5, 0.75, 1.0), 3)
    node = spec.training.graph.nodes[validation.output]
    assert (node["kind"], node["reverse"], node["heat"]) == ("call", True, 0.0)


def test_tiled_validation_of_a_reverse_call_is_refused() -> None:
    """A flow's latents span the whole image: tiles of its condition would not invert
    the network; validate refuses the pair at validation.tile."""
    from engine.load import check_spec

    spec, diags = check_spec(ROOT / "specs" / "srflow.yaml", ["+validation.tile=64"])
    assert spec is None
    messages = [str(d) for d in diags.errors]
    assert len(messages) == 1 and "'sr' is a reverse call" in messages[0], messages
    assert check_spec(ROOT / "specs" / "esrgan.yaml", ["+validation.tile=64"])[0] is not None

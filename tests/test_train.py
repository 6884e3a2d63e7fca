"""The training runtime: phases, steps, checkpoints, resume, NaN guard, reporting."""

from __future__ import annotations

import io
import json
import math
import shutil
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from engine import load_spec
from engine.train import checkpoint as ckpt
from engine.train.runner import TrainingError, run
from engine.train.schedules import Schedule

ROOT = Path(__file__).resolve().parents[1]


class SyntheticSR(torch.utils.data.Dataset):
    """Smooth random images; LR is the 2x average-pooled HR. Deterministic per index."""

    def __init__(
        self, n: int = 16, size: int = 16, scale: int = 2, nan_after: int | None = None
    ) -> None:
        self.n, self.size, self.scale, self.nan_after = n, size, scale, nan_after

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        _, index = key if isinstance(key, tuple) else (0, key)  # loaders pass (epoch, index)
        index %= self.n
        g = torch.Generator().manual_seed(index)
        low = torch.rand(3, 4, 4, generator=g)
        hr = F.interpolate(
            low[None], size=(self.size, self.size), mode="bilinear", align_corners=False
        )[0]
        if self.nan_after is not None and index >= self.nan_after:
            hr = hr * float("nan")
        return {"hr": hr, "lr": F.avg_pool2d(hr[None], self.scale)[0]}


SR_SPEC = """\
spec: 1
name: tiny
scale: 2
networks:
  G:
    inputs: {lr: 3}
    nodes:
      head: {block: conv, in: lr, out: 8, act: lrelu}
      up: {block: conv, in: head, out: 12}
      shuf: {block: pixel_shuffle, in: up, scale: 2}
    outputs: {sr: shuf}
graph:
  fake: {call: G, in: data.lr}
  pix: {loss: l1, in: [fake.sr, data.hr]}
optimizers:
  G: {type: adam, params: G, lr: 1.0e-2}
train:
  iterations: 12
  seed: 3
  phases:
    - {name: main, steps: [{optimizer: G, minimize: {pix: 1.0}}]}
data:
  train: {type: sr, hr: "builtin:photos", crop_size: 16, batch_size: 4}
logging: {every: 1}
checkpoints: {every: 4, keep: 2}
"""


def spec_file(tmp_path: Path, text: str = SR_SPEC) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def train(path: Path, out: Path, *overrides: str, resume: str | None = None, data=None):  # type: ignore[no-untyped-def]
    datasets = {"train": data or SyntheticSR(), "val": SyntheticSR(2, 16)}
    return run(
        load_spec(path, list(overrides)),
        out=out,
        resume=resume,
        stream=io.StringIO(),
        live=False,
        datasets=datasets,
    )


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def losses(run_dir: Path) -> dict[int, float]:
    return {r["iter"]: r["loss/pix"] for r in records(run_dir) if "loss/pix" in r}


def test_a_run_writes_the_run_folder_contract(tmp_path: Path) -> None:
    result = train(spec_file(tmp_path), tmp_path / "run")
    run_dir = result.run_dir
    assert result.iteration == 12
    assert (run_dir / "spec.resolved.yaml").read_text().startswith("# resolved from")
    assert sorted(losses(run_dir)) == list(range(1, 13))
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == "iter_00000012"
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("iter_*")) == [
        "iter_00000008",
        "iter_00000012",
    ]
    assert (run_dir / "models" / "G_iter_00000012.safetensors").is_file()
    assert (
        "prepared with accelerate, in order: networks G; optimizers G"
        in (run_dir / "train.log").read_text()
    )
    assert losses(run_dir)[12] < losses(run_dir)[1]
    # The trained network comes back without the last step's gradients (memory).
    assert all(p.grad is None for p in result.networks["G"].parameters())


def test_resume_continues_exactly_as_an_uninterrupted_run(tmp_path: Path) -> None:
    path = spec_file(tmp_path)
    straight = train(path, tmp_path / "a", "checkpoints.every=6")
    # The same run, killed right after its checkpoint at iteration 6 ...
    d = train(path, tmp_path / "d", "checkpoints.every=6").run_dir
    shutil.rmtree(d / "checkpoints" / "iter_00000012")
    (d / "checkpoints" / "latest").write_text("iter_00000006\n")
    kept = [r for r in records(d) if r["iter"] <= 6]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    # ... then resumed: it must continue exactly as the uninterrupted one did.
    resumed = train(path, d, "checkpoints.every=6", resume="auto")
    assert resumed.iteration == 12
    assert losses(d) == losses(straight.run_dir)
    a = torch.load(
        straight.run_dir / "checkpoints" / "iter_00000012" / "state.pt", weights_only=True
    )
    c = torch.load(d / "checkpoints" / "iter_00000012" / "state.pt", weights_only=True)
    for key, value in a["networks"]["G"].items():
        assert torch.equal(value, c["networks"]["G"][key]), key


def test_a_crash_while_saving_leaves_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from engine.train.runfolder import RunFolderError

    path = spec_file(tmp_path)
    calls = {"n": 0}
    real_save = torch.save

    def failing_save(obj, f, *args, **kwargs):  # type: ignore[no-untyped-def]
        if str(f).endswith("state.pt"):
            calls["n"] += 1
            if calls["n"] == 2:  # the checkpoint of iteration 8, half written
                real_save(obj, f, *args, **kwargs)
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(RunFolderError, match="disk is full") as refused:
        train(path, tmp_path / "run")
    assert "iter_00000004, is kept" in str(refused.value)
    monkeypatch.setattr(torch, "save", real_save)
    folder = tmp_path / "run" / "checkpoints"
    assert (folder / "latest").read_text().strip() == "iter_00000004"
    assert not list(folder.glob(".tmp*"))  # nothing half-written is left
    assert ckpt.find("auto", tmp_path / "run") == folder / "iter_00000004"
    resumed = train(path, tmp_path / "run", resume="auto")
    assert resumed.iteration == 12


def test_resuming_with_another_spec_is_refused(tmp_path: Path) -> None:
    path = spec_file(tmp_path)
    train(path, tmp_path / "run")
    with pytest.raises(ckpt.CheckpointError, match="written by a different spec"):
        train(path, tmp_path / "run", "networks.G.nodes.head.out=16", resume="auto")


def test_nan_losses_skip_steps_then_stop_with_the_last_good_state(tmp_path: Path) -> None:
    path = spec_file(tmp_path)
    data = SyntheticSR(n=16, nan_after=0)
    with pytest.raises(TrainingError, match="NaN or infinite loss") as info:
        train(path, tmp_path / "run", "+train.max_bad_steps=3", data=data)
    assert "last good state is saved" in str(info.value)
    state = torch.load(
        tmp_path / "run" / "checkpoints" / "iter_00000003" / "state.pt", weights_only=True
    )
    assert all(torch.isfinite(v).all() for v in state["networks"]["G"].values())


def test_plain_output_when_not_a_terminal(tmp_path: Path) -> None:
    stream = io.StringIO()
    run(
        load_spec(spec_file(tmp_path)),
        out=tmp_path / "run",
        stream=stream,
        live=False,
        datasets={"train": SyntheticSR()},
    )
    text = stream.getvalue()
    assert "\x1b[" not in text
    assert "iter=12/12 phase=main" in text and "loss/pix=" in text


GAN_SPEC = """\
spec: 1
name: tiny_gan
scale: 2
networks:
  G:
    inputs: {lr: 3}
    nodes:
      head: {block: conv, in: lr, out: 8, act: lrelu}
      up: {block: conv, in: head, out: 12}
      shuf: {block: pixel_shuffle, in: up, scale: 2}
    outputs: {sr: shuf}
  D:
    inputs: {x: 3}
    nodes:
      c1: {block: conv, in: x, out: 4, stride: 2, act: lrelu}
      c2: {block: conv, in: c1, out: 1}
graph:
  fake: {call: G, in: data.lr}
  pix: {loss: l1, in: [fake.sr, data.hr]}
  fake_d: {op: detach, in: fake.sr}
  d_real: {call: D, in: data.hr}
  d_fake: {call: D, in: fake_d}
  d_fake_g: {call: D, in: fake.sr}
  d_loss: {loss: gan, in: {fake: d_fake, real: d_real}, type: vanilla, relativistic: true,
           target: discriminator}
  g_gan: {loss: gan, in: {fake: d_fake_g, real: d_real}, type: vanilla, relativistic: true,
          target: generator}
optimizers:
  G: {type: adam, params: G, lr: 1.0e-3}
  D: {type: adam, params: D, lr: 1.0e-3}
train:
  iterations: 8
  seed: 3
  phases:
    - {name: psnr, until: 4, steps: [{optimizer: G, minimize: {pix: 1.0}}]}
    - name: gan
      frozen: [G.head]
      steps:
        - {optimizer: D, minimize: {d_loss: 1.0}}
        - {optimizer: G, minimize: {pix: 1.0, g_gan: {from: 0.0, to: 0.1, over: 4}}}
data:
  train: {type: sr, hr: "builtin:photos", crop_size: 16, batch_size: 4}
logging: {every: 1}
checkpoints: {every: 4, keep: 2}
"""


def gan_spec(tmp_path: Path) -> Path:
    return spec_file(tmp_path, GAN_SPEC)


def test_gan_phases_freeze_and_compute_the_generator_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = gan_spec(tmp_path)
    spec = load_spec(path)
    calls = {"G": 0}
    import engine.train.setup as setup

    real = setup.compile_network

    def counting(inference, device="cpu"):  # type: ignore[no-untyped-def]
        module = real(inference, device)
        if inference.network.name == "G":
            module.register_forward_hook(lambda *a: calls.__setitem__("G", calls["G"] + 1))
        return module

    monkeypatch.setattr(setup, "compile_network", counting)
    result = run(
        spec,
        out=tmp_path / "run",
        stream=io.StringIO(),
        live=False,
        datasets={"train": SyntheticSR()},
    )
    assert result.iteration == 8
    recs = [r for r in records(tmp_path / "run") if "loss/d_loss" in r]
    assert [r["iter"] for r in recs] == [5, 6, 7, 8]
    assert all(r["phase"] == "gan" for r in recs) and all(
        math.isfinite(r["loss/g_gan"]) for r in recs
    )
    assert calls["G"] == 8  # one generator forward per iteration, shared by the D and G steps
    folder = tmp_path / "run" / "checkpoints"
    after = torch.load(folder / "iter_00000008" / "state.pt", weights_only=True)["networks"]["G"]
    before = torch.load(folder / "iter_00000004" / "state.pt", weights_only=True)["networks"]["G"]
    assert torch.equal(after["head.weight"], before["head.weight"])  # frozen in the gan phase
    assert not torch.equal(after["up.weight"], before["up.weight"])


def schedule_of(section: dict, total: int) -> Schedule:
    """A scheduler section as the runner builds it (parsed settings, then the factor)."""
    from engine.settings.base import Reader
    from engine.settings.schedule import parse_schedule
    from engine.spec.diagnostics import Diagnostics
    from engine.spec.yamlio import Doc

    diags = Diagnostics()
    reader = Reader(Doc(section, {}, {}), diags, (), section)
    settings = parse_schedule(reader, total, lr=1e-3)
    assert not diags.errors, diags.errors
    return Schedule(settings, total)


def test_schedules_are_functions_of_the_iteration() -> None:
    multistep = schedule_of({"type": "multistep", "milestones": [0.5, 8], "gamma": 0.5}, 10)
    assert [multistep(i) for i in (0, 4, 5, 7, 8, 9)] == [1, 1, 0.5, 0.5, 0.25, 0.25]
    decay = schedule_of({"type": "linear_decay", "start": 0.5}, 10)
    assert [decay(i) for i in (0, 4, 5, 10)] == [1.0, 1.0, 1.0, 0.0]
    warm = schedule_of({"type": "cosine", "warmup": 4}, 100)
    assert warm(0) == pytest.approx(0.25 * 1.0) and warm(3) < 1.0 and warm(99) < 0.01
    ours = schedule_of({"type": "step", "step_size": 3, "gamma": 0.5}, 100)
    theirs = schedule_of(
        {"type": "torch", "name": "StepLR", "options": {"step_size": 3, "gamma": 0.5}}, 100
    )
    assert [ours(i) for i in range(10)] == [theirs(i) for i in range(10)]
    restarts = schedule_of({"type": "cosine_restarts", "periods": [4, 4]}, 8)
    assert restarts(0) == restarts(4) == 1.0 and restarts(3) < 0.2
    peak = schedule_of({"type": "onecycle", "max_lr": 4e-3}, 10)
    assert max(peak(i) for i in range(10)) == pytest.approx(4.0)  # max_lr ÷ lr 1e-3


def test_a_plateau_schedule_lowers_the_lr_when_the_metric_stalls_and_resumes_its_state() -> None:
    plateau = schedule_of({"type": "plateau", "metric": "psnr", "patience": 1, "gamma": 0.5}, 10)
    said = [plateau.observe({"psnr": v}) for v in (20.0, 21.0, 20.5, 20.9, 21.0)]
    assert said[:3] == [None, None, None] and said[3] is not None and plateau(0) == 0.5
    again = schedule_of({"type": "plateau", "metric": "psnr", "patience": 1, "gamma": 0.5}, 10)
    again.load_state_dict(plateau.state_dict())
    assert again(5) == plateau(5) == 0.5
    lower = schedule_of({"type": "plateau", "metric": "lpips", "patience": 0}, 10)
    assert lower.settings is not None and lower.settings.mode == "min"
    lower.observe({"lpips": 0.3})
    assert lower.observe({"lpips": 0.2}) is None and lower.observe({"lpips": 0.25}) is not None


def test_bf16_autocast_trains(tmp_path: Path) -> None:
    result = train(spec_file(tmp_path), tmp_path / "run", "+train.precision=bf16")
    assert result.iteration == 12
    assert all(math.isfinite(v) for v in losses(result.run_dir).values())


def wgan_gp(text: str) -> str:
    """A GAN spec's D step made a WGAN critic step with a gradient penalty (weight 10)."""
    return text.replace(
        "  d_loss: {loss: gan, in: {fake: d_fake, real: d_real}, type: vanilla, "
        "relativistic: true,\n           target: discriminator}\n",
        "  d_loss: {loss: gan, in: {fake: d_fake, real: d_real}, type: wgan, "
        "target: discriminator}\n"
        "  interp: {op: interpolate, in: {real: data.hr, fake: fake.sr}}\n"
        "  d_interp: {call: D, in: interp}\n"
        "  gp: {loss: gradient_penalty, in: [d_interp, interp]}\n",
    ).replace(
        "{optimizer: D, minimize: {d_loss: 1.0}}",
        "{optimizer: D, minimize: {d_loss: 1.0, gp: 10.0}}",
    )


def test_wgan_gp_trains_the_critic_through_the_penalty(tmp_path: Path) -> None:
    text = wgan_gp(GAN_SPEC)
    assert "gp: 10.0" in text
    result = run(
        load_spec(spec_file(tmp_path, text)),
        out=tmp_path / "run",
        stream=io.StringIO(),
        live=False,
        datasets={"train": SyntheticSR()},
    )
    assert result.iteration == 8
    gp = [r["loss/gp"] for r in records(tmp_path / "run") if "loss/gp" in r]
    assert len(gp) == 4 and all(math.isfinite(v) and v >= 0 for v in gp)


def test_weights_that_do_not_fit_are_reported_at_the_spec_key(tmp_path: Path) -> None:
    from engine.spec.diagnostics import SpecError

    path = spec_file(tmp_path)
    wrong = tmp_path / "wrong.pth"
    torch.save({"head.conv.weight": torch.zeros(8, 3, 5, 5)}, wrong)
    with pytest.raises(SpecError) as refused:
        train(path, tmp_path / "run", f"+networks.G.pretrained={{path: '{wrong}'}}")
    (problem,) = refused.value.diagnostics.errors
    assert str(problem.loc).startswith("<override +networks.G.pretrained=")  # where it was set
    assert "network G: pretrained weights not loaded" in problem.message
    assert "networks.G.pretrained.strict: false" in problem.message
    with pytest.raises(SpecError, match=r"No such file|not found"):
        train(path, tmp_path / "run", f"+networks.G.pretrained={{path: '{tmp_path / 'no.pth'}'}}")


def test_a_block_that_cannot_be_built_is_reported_at_its_parameter(tmp_path: Path) -> None:
    from engine.spec.diagnostics import SpecError

    text = SR_SPEC.replace(
        "  pix: {loss: l1, in: [fake.sr, data.hr]}\n",
        "  pix: {loss: l1, in: [fake.sr, data.hr]}\n"
        "  vgg: {loss: perceptual, in: [fake.sr, data.hr], weights: $vgg}\n"
        "  vgg2: {loss: perceptual, in: [fake.sr, data.hr], weights: nowhere.pth}\n",
    ).replace("scale: 2\n", "scale: 2\nparams: {vgg: missing.pth}\n", 1)
    text = text.replace("minimize: {pix: 1.0}", "minimize: {pix: 1.0, vgg: 1.0, vgg2: 1.0}")
    with pytest.raises(SpecError) as refused:
        train(spec_file(tmp_path, text), tmp_path / "run")
    first, second = sorted(refused.value.diagnostics.errors, key=lambda d: d.loc)
    lines = text.splitlines()
    for problem, node in [(first, "  vgg:"), (second, "  vgg2:")]:  # each at its weights value
        row = next(i for i, line in enumerate(lines, 1) if line.startswith(node))
        assert (problem.loc.line, problem.loc.col) == (row, lines[row - 1].index("weights: ") + 10)
    assert "graph node 'vgg' (perceptual): VGG19 weights file not found" in first.message
    assert "override params.vgg=VALUE" in first.message
    assert "override" not in second.message  # written in place: nothing to override


def test_tiled_validation_matches_the_whole_image_and_pads_edge_tiles() -> None:
    from engine.train.validate import Tiled

    torch.manual_seed(0)
    # Receptive field radius 2 (two 3x3 convs) < overlap: tiles must stitch exactly.
    convs = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 12, 3, padding=1)
    )

    class SR(torch.nn.Module):  # x2, needs sizes that are multiples of 4, two outputs
        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            assert x.shape[-2] % 4 == 0 and x.shape[-1] % 4 == 0, x.shape
            y = F.pixel_shuffle(convs(x), 2)
            return {"sr": y, "gray": y.mean(1, keepdim=True)}

    x = torch.rand(1, 3, 52, 44)  # tiles of 12 + 5 context each side: sizes 17, 22, ...
    with torch.no_grad():
        whole = SR()(x)
        tiled = Tiled(SR(), 12, overlap=5, multiple=4)(x=x)
    assert set(tiled) == {"sr", "gray"}
    for key, value in whole.items():
        torch.testing.assert_close(tiled[key], value)
    with pytest.raises(AssertionError), torch.no_grad():  # tiles of 17: not a multiple
        Tiled(SR(), 12, overlap=5)(x=x)


def test_a_run_validates_on_tiles_with_the_same_result(tmp_path: Path) -> None:
    path = spec_file(tmp_path)
    section = "{every: 12, output: fake.sr, input: data.lr, target: data.hr, metrics: [psnr]"
    values = []
    for name, tile in [("whole", ""), ("tiled", ", tile: 3")]:
        train(path, tmp_path / name, "train.iterations=12", f"+validation={section}{tile}}}")
        (record,) = [r for r in records(tmp_path / name) if "val/psnr" in r]
        values.append(record["val/psnr"])
    assert values[0] == pytest.approx(values[1], abs=1e-4)


def test_ema_weights_are_validated_and_exported(tmp_path: Path) -> None:
    path = spec_file(tmp_path)
    section = "{every: 12, output: fake.sr, input: data.lr, target: data.hr, metrics: [psnr]}"
    result = train(
        path,
        tmp_path / "run",
        "+train.ema={networks: [G], decay: 0.5}",
        f"+validation={section}",
    )
    (record,) = [r for r in records(result.run_dir) if "val/psnr" in r]
    assert math.isfinite(record["val/psnr"])
    from safetensors.torch import load_file

    exported = load_file(result.run_dir / "models" / "G_iter_00000012.safetensors")
    live = result.networks["G"].state_dict()  # the EMA copy, which the run returns
    assert all(torch.equal(exported[k], live[k]) for k in live)
    assert result.networks["G"].output_ports == ("sr",)  # kept by the deep copy

"""PPON (specs/ppon.yaml, specs/lib/ppon.yaml): the published network, the original
PPON_G.pth layout, the three phases and traiNNer's ``ppon_stages``.

PPON is not in spandrel, so the reference is written here from the paper and the
description of the original code: ``OriginalPPON`` builds its modules the way the
original does (``nn.Sequential``s of upsample/conv/activation flattened into one, the
content trunk under a shortcut ``sub``), so its ``state_dict`` keys come from the same
mechanism as PPON_G.pth's, not from a list written twice. Checkpoints are that
module's own state dict; nothing is downloaded.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import engine
from engine import load_spec
from engine.compile.inspect import inspect_spec
from engine.compile.weights import export, load_weights

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "specs" / "ppon.yaml"
NF, NB, NB_BRANCH = 8, 2, 2  # tiny, with several blocks in the trunk and each branch


# ----------------------------------------------------------------- reference
def conv(cin: int, cout: int, kernel: int = 3, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, padding=(kernel - 1) // 2 * dilation, dilation=dilation)


class DilatedBlock(nn.Module):
    """_ResBlock_32: c1, eight dilated convs summed cumulatively, c2 on their concat."""

    def __init__(self, nc: int) -> None:
        super().__init__()
        self.c1 = conv(nc, nc)
        for rate in range(1, 9):
            self.add_module(f"d{rate}", conv(nc, nc // 2, dilation=rate))
        self.c2 = conv(nc * 4, nc, kernel=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.leaky_relu(self.c1(x), 0.2)
        branches = [getattr(self, f"d{r}")(y) for r in range(1, 9)]
        sums = [branches[0]]
        for b in branches[1:]:
            sums.append(sums[-1] + b)
        return x + 0.2 * self.c2(F.leaky_relu(torch.cat(sums, 1), 0.2))


class RRBlock(nn.Module):
    def __init__(self, nc: int) -> None:
        super().__init__()
        self.RB1, self.RB2, self.RB3 = DilatedBlock(nc), DilatedBlock(nc), DilatedBlock(nc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.2 * self.RB3(self.RB2(self.RB1(x)))


class Shortcut(nn.Module):
    def __init__(self, sub: nn.Module) -> None:
        super().__init__()
        self.sub = sub

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.sub(x)


def flat(*parts: nn.Module) -> nn.Sequential:
    """The original's ``sequential``: Sequentials among the parts are unpacked."""
    modules: list[nn.Module] = []
    for part in parts:
        modules.extend(part.children() if isinstance(part, nn.Sequential) else [part])
    return nn.Sequential(*modules)


def reconstruction(nf: int, scale: int) -> nn.Sequential:
    factors = {1: [], 2: [2], 3: [3], 4: [2, 2], 8: [2, 2, 2]}[scale]
    stages = [
        nn.Sequential(nn.Upsample(scale_factor=f, mode="nearest"), conv(nf, nf), nn.LeakyReLU(0.2))
        for f in factors
    ]
    hr0 = nn.Sequential(conv(nf, nf), nn.LeakyReLU(0.2))
    return flat(*stages, hr0, conv(nf, 3))


class OriginalPPON(nn.Module):
    """PPON(in_nc=3, nf, nb, out_nc=3, upscale) with the original's module layout."""

    def __init__(self, scale: int, nf: int = NF, nb: int = NB, nb_branch: int = NB_BRANCH):
        super().__init__()
        trunk = flat(*(RRBlock(nf) for _ in range(nb)), conv(nf, nf))
        self.CFEM = nn.Sequential(conv(3, nf), Shortcut(trunk))
        self.SFEM = nn.Sequential(*(RRBlock(nf) for _ in range(nb_branch)))
        self.PFEM = nn.Sequential(*(RRBlock(nf) for _ in range(nb_branch)))
        self.CRM = reconstruction(nf, scale)
        self.SRM = reconstruction(nf, scale)
        self.PRM = reconstruction(nf, scale)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        content = self.CFEM(x)
        out_c = self.CRM(content)
        structure = self.SFEM(content)
        out_s = self.SRM(structure) + out_c
        out_p = self.PRM(self.PFEM(structure)) + out_s
        return out_c, out_s, out_p


# -------------------------------------------------------------------- helpers
def ppon(tmp_path: Path, **params: Any) -> nn.Module:
    """Loom's PPON from the shipped library, eval mode."""
    spec = tmp_path / "ppon_case.yaml"
    params = {"nf": NF, "nb": NB, "nb_branch": NB_BRANCH, **params}
    spec.write_text(
        "spec: 1\nname: ppon_case\nimports: [lib/ppon.yaml]\nnetworks:\n"
        f"  G: {{use: PPON, params: {json.dumps(params)}, trainable: false}}\n",
        encoding="utf-8",
    )
    return engine.build(spec)["G"].eval()


def randomize(net: nn.Module, seed: int) -> nn.Module:
    """Every parameter random (the 0.1-scaled init would hide a wrong branch)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return net.eval()


def outputs_differ(loom: nn.Module, reference: nn.Module, size: int = 9) -> float:
    x = torch.rand(2, 3, size, size + 2, generator=torch.Generator().manual_seed(1)) - 0.5
    with torch.no_grad():
        ours, theirs = loom(x), reference(x)
    assert list(ours) == ["out_c", "out_s", "out_p"]
    return max(float((a - b).abs().max()) for a, b in zip(ours.values(), theirs, strict=True))


# ------------------------------------------------------------ the architecture
def test_the_shipped_network_is_the_published_one_and_inspect_agrees() -> None:
    """17,267,657 parameters: the count of the original PPON(nf=64, nb=24) x4.

    Inspected with one block in the trunk instead of 24 (the full network's 1,700
    tensors would cost the fast tier seconds); the trunk's blocks are alike, so the
    count at 24 is that one's plus 23 more of the block inspect reports.
    """
    overrides = ["data.train.crop_size=64", "data.train.batch_size=1", "networks.G.params.nb=1"]
    spec = load_spec(SPEC, overrides)
    reports = {r.name: r for r in inspect_spec(spec, probe_sizes=False)}
    g = reports["G"]
    assert g.inputs == {"x": [1, 3, 16, 16]}
    assert g.outputs == {name: [1, 3, 64, 64] for name in ("out_c", "out_s", "out_p")}
    rows = {r.name: r for r in g.rows}
    block = sum(r.params for r in g.rows if r.name.startswith("CFEM.1.sub.0."))
    assert block == 3 * (64 * 64 * 9 + 64 + 8 * (64 * 32 * 9 + 32) + 256 * 64 + 64)
    assert g.params + 23 * block == 17_267_657
    assert (
        rows["CRM.8"].params == 64 * 3 * 9 + 3 and rows["CFEM.1.sub.1"].params == 64 * 64 * 9 + 64
    )
    net = engine.build(spec)["G"]
    assert sum(p.numel() for p in net.parameters()) == g.params
    with torch.no_grad():
        out = net(torch.rand(1, 3, 16, 16))
    assert {k: list(v.shape) for k, v in out.items()} == g.outputs
    # The discriminator sees 192 crops in the recipe: 6 stride-2 stages down to 3x3.
    assert reports["D"].inputs == {"x": [1, 3, 64, 64]}


@pytest.mark.parametrize("scale", [1, 3, 4, 8])
def test_original_checkpoints_load_with_identical_outputs(tmp_path: Path, scale: int) -> None:
    reference = randomize(OriginalPPON(scale), seed=scale)
    torch.save(reference.state_dict(), tmp_path / "PPON_G.pth")
    net = ppon(tmp_path, scale=scale)
    report = load_weights(net, tmp_path / "PPON_G.pth")  # strict: every key fits
    assert report.ok and report.layout == "loom"  # Loom's names are the original's
    assert len(report.loaded) == len(reference.state_dict())
    assert outputs_differ(net, reference) <= 1e-5
    if scale == 4:  # the indices the original's flattening gives at x4
        keys = {k.rpartition(".")[0] for k in reference.state_dict() if k.startswith("CRM")}
        assert keys == {"CRM.1", "CRM.4", "CRM.6", "CRM.8"}
        assert f"CFEM.1.sub.{NB}.weight" in reference.state_dict()
        # And back: Loom's export is a file the original loads strictly.
        path = export(net, tmp_path / "G.pth")
        again = OriginalPPON(scale)
        again.load_state_dict(torch.load(path, weights_only=True))
        assert outputs_differ(net, again.eval()) == 0


def test_a_checkpoint_of_another_depth_is_reported_key_by_key(tmp_path: Path) -> None:
    reference = OriginalPPON(4, nb=NB + 1)
    net = ppon(tmp_path, scale=4)
    report = load_weights(net, reference.state_dict(), strict=False)
    # One RRBlock more in the trunk: the closing conv moved one index on, and where
    # the network has it the file has a block.
    assert f"CFEM.1.sub.{NB}.weight" in report.missing
    assert f"CFEM.1.sub.{NB + 1}.weight" in report.unexpected
    assert f"CFEM.1.sub.{NB}.RB1.c1.weight" in report.unexpected
    assert not report.mismatched and not report.ok


# ------------------------------------------------------------------- phases
TINY = [
    "networks.G.params.nf=8",
    "networks.G.params.nb=1",
    "networks.G.params.nb_branch=1",
    "networks.D.params.nf=4",
    "networks.D.params.stages=4",  # 32 crops (the recipe's 6 stages need 64 or more)
    "+graph.perception.weights=random",  # tests are offline
    "data.train.crop_size=32",
    "data.train.batch_size=2",
    "train.iterations=3",
    "train.phases.0.until=1",
    "train.phases.1.until=2",
    "optimizers.G.scheduler.periods=[1, 1, 1]",
    "optimizers.G.scheduler.milestones=[1]",
    "optimizers.D.scheduler.periods=[1, 1, 1]",
    "optimizers.D.scheduler.milestones=[1]",
    "validation.every=3",
    "checkpoints.every=1",
    "logging.every=1",
]


def stages(a: int, b: int, total: int) -> list[str]:
    """traiNNer's ``ppon_stages: [a, b]`` over ``total`` iterations, as overrides."""
    return [f"train.iterations={total}", f"train.phases.0.until={a}", f"train.phases.1.until={b}"]


def groups(state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    names = ("CFEM", "CRM", "SFEM", "SRM", "PFEM", "PRM")
    return {n: {k: v for k, v in state.items() if k.startswith(n + ".")} for n in names}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_three_phases_train_one_branch_each_and_validate_its_output(tmp_path: Path) -> None:
    """Iteration 1 (content) trains CFEM+CRM, 2 (structure) SFEM+SRM, 3 (perception)
    PFEM+PRM and D; every other weight is bit-equal across each of them."""
    from accelerate.utils import set_seed

    from engine.train.runner import run

    result = run(SPEC, TINY, out=tmp_path / "run", stream=io.StringIO())
    models = result.run_dir / "models"
    saved = {
        it: {n: load(models / f"{n}_iter_{it:08d}.safetensors") for n in "GD"} for it in (1, 2, 3)
    }
    spec = load_spec(SPEC, TINY)
    assert spec.settings.train is not None
    set_seed(spec.settings.train.seed)  # as the run does: the weights it started from
    init = engine.build(spec)
    before = {1: groups(init["G"].state_dict()), 2: groups(saved[1]["G"]), 3: groups(saved[2]["G"])}
    trained = {1: ("CFEM", "CRM"), 2: ("SFEM", "SRM"), 3: ("PFEM", "PRM")}
    for it, branches in trained.items():
        after = groups(saved[it]["G"])
        changed = [name for name in after if not same(after[name], before[it][name])]
        assert changed == list(branches), it
    # The discriminator trains only in the perception phase.
    d0 = {k: v for k, v in init["D"].state_dict().items() if k in saved[2]["D"]}
    assert same(saved[2]["D"], d0) and not same(saved[3]["D"], saved[2]["D"])

    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").open()]
    logged = ({k for k in r if k.startswith("loss/")} for r in records)
    losses = {r["iter"]: keys for r, keys in zip(records, logged, strict=True) if keys}
    assert losses[1] == {"loss/content"}
    assert losses[2] == {"loss/structure_ml1", "loss/structure_msssim"}
    assert losses[3] == {"loss/d_loss", "loss/perception", "loss/g_gan"}
    (val,) = [r for r in records if "val/psnr" in r]
    assert val["phase"] == "perception" and math.isfinite(val["val/psnr"])
    # Each validation evaluates the output of the phase that ran the iteration before.
    from engine.train.validator import Validator

    validator = Validator(
        spec, spec.settings.validation, None, tmp_path, multiple=lambda: 1, autocast=None
    )  # type: ignore[arg-type]
    outputs = [validator.output_at(i) for i in (1, 2, 3)]
    assert outputs == ["fake.out_c", "fake.out_s", "fake.out_p"]


def load(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(path)


def test_trainner_ppon_stages_map_to_the_phase_ends() -> None:
    """traiNNer's three documented cases: [0, 0] starts in phase 3, [0, N] in phase 2
    (phase 3 from N), [N, N] trains phase 1 only; later phases are left empty."""
    branch = {"content": ("CFEM", "CRM"), "structure": ("SFEM", "SRM")}
    branch["perception"] = ("PFEM", "PRM")
    every = {f"G.{m}" for pair in branch.values() for m in pair}
    cases = [((0, 0), ["perception"]), ((0, 600), ["structure", "perception"])]
    cases.append(((1000, 1000), ["content"]))
    for (a, b), runs in cases:
        spec = load_spec(SPEC, stages(a, b, total=1000))
        train = spec.settings.train
        assert train is not None
        first = train.phase_at(0)
        assert first.name == runs[0], (a, b)
        assert [p.name for p in train.phases if p.end > p.start] == runs
        # What trains at iteration 0: the first branch that runs, and nothing else.
        assert every - set(first.frozen) == {f"G.{m}" for m in branch[first.name]}
        empty = [w for w in spec.warnings if "is empty" in w.message]
        assert len(empty) == 3 - len(runs), (a, b)
        if (a, b) == (0, 600):
            assert train.phase_at(599).name == "structure"
            assert train.phase_at(600).name == "perception"


def test_a_phase_validation_output_is_checked_like_the_sections() -> None:
    _, diags = engine.check_spec(SPEC, ["train.phases.1.validation.output=fak.out_s"])
    (error,) = diags.errors
    assert (error.loc.line, error.loc.col) == (1, 34)  # the override's value
    assert error.message == (
        "train.phases[1].validation.output: unknown graph node 'fak' (did you mean 'fake'?)"
    )


# ---------------------------------------------------------------- learning
#: PAN's slow test asks the same margin: a tie with bicubic is not learning.
MARGIN_DB = 0.2


@pytest.mark.slow
@pytest.mark.xfail(
    reason="measured 2026-12-02: out_c reaches bicubic's 29.50 dB only after about 1,200 "
    "iterations (29.53 dB; 28.49 at 1,600), not 0.2 dB above it; from the published "
    "0.1-scaled init the low-frequency colour is learned last (docs/ppon.md, Measured "
    "learning)",
    strict=False,
)
def test_ppon_learns_branch_by_branch(tmp_path: Path) -> None:
    """The shipped spec's three phases, shortened: a narrow, shallow PPON (nf 16, one
    block in the trunk and in each branch), 1,200 content iterations at lr 2e-3 (a
    100-iteration warm-up, halved at 800 and 1,000, betas 0.9 and 0.99), then 100
    structure and 20 perception iterations at the recipe's 2e-4 (random VGG19: tests
    are offline); batch 16 of 48 crops (more crops a batch than 8 of 64 learn the
    colours sooner).

    Content must beat bicubic by MARGIN_DB; structure builds on it without undoing it
    (out_s above bicubic too); the figures are printed for docs/ppon.md.
    """
    from engine.train.runner import run

    overrides = [
        "networks.G.params.nf=16",
        "networks.G.params.nb=1",
        "networks.G.params.nb_branch=1",
        "networks.D.params.nf=16",
        "networks.D.params.stages=4",  # 48 crops (the recipe's 6 stages need 64 or more)
        "+graph.perception.weights=random",
        "data.train.crop_size=48",
        "data.train.batch_size=16",
        "train.iterations=1320",
        "train.phases.0.until=1200",
        "train.phases.1.until=1300",
        "optimizers.G.lr=2.0e-3",
        "+optimizers.G.betas=[0.9, 0.99]",
        "+optimizers.G.scheduler.warmup=100",
        "optimizers.G.scheduler.periods=[1200, 100, 20]",
        "optimizers.G.scheduler.restart_weights=[1, 0.1, 0.1]",  # 2e-4 after content
        "optimizers.G.scheduler.milestones=[800, 1000]",
        "optimizers.D.scheduler.periods=[1200, 100, 20]",
        "optimizers.D.scheduler.milestones=[800, 1000]",
        "validation.every=100",
        "checkpoints.every=1320",
        "logging.every=25",
    ]
    result = run(SPEC, overrides, out=tmp_path / "run", stream=io.StringIO())
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").open()]
    val = {r["iter"]: r for r in records if "val/psnr" in r}
    for it, r in sorted(val.items()):  # shown with -s; docs/ppon.md records these
        print(
            f"iter {it} ({r['phase']}): PSNR {r['val/psnr']:.2f} dB (bicubic "
            f"{r['val/psnr_bicubic']:.2f}), SSIM {r['val/ssim']:.4f} (bicubic "
            f"{r['val/ssim_bicubic']:.4f})"
        )
    assert val[1200]["phase"] == "content" and val[1300]["phase"] == "structure"
    assert val[1200]["val/psnr"] > val[1200]["val/psnr_bicubic"] + MARGIN_DB
    assert val[1300]["val/psnr"] > val[1300]["val/psnr_bicubic"]
    assert math.isfinite(val[1320]["val/psnr"])
    content = [r["loss/content"] for r in records if "loss/content" in r]
    assert sum(content[-4:]) < sum(content[:4])

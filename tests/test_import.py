"""`python cli.py import`: the peers' option files become specs that validate.

The option files are written here in the formats of traiNNer (JSON with // comments,
and YAML), BasicSR and traiNNer-redux, with the keys and meanings of their documented
templates. Each converted spec must validate and its networks must have the parameter
count of the peer's architecture at the same hyperparameters: spandrel's reference
modules where spandrel has the architecture, the published counts otherwise. Counts
are read on the meta device, so nothing large is allocated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import cli
from engine.compile.inspect import inspect_spec
from engine.importer import convert
from engine.importer.source import blank_json_comments
from engine.load import check_spec
from engine.spec.diagnostics import Diagnostics
from engine.spec.yamlio import parse_yaml

spandrel = pytest.importorskip("spandrel", reason="reference counts need the dev extra")
from spandrel.architectures.Compact import Compact  # noqa: E402
from spandrel.architectures.ESRGAN import ESRGAN  # noqa: E402


def count(make: Any, **kwargs: Any) -> int:
    """Parameters of spandrel's reference module, built on the meta device."""
    import torch

    with torch.device("meta"):
        module = make(**kwargs)
    return sum(p.numel() for p in module.parameters())


def conv(cin: int, cout: int, k: int = 3, bias: bool = True) -> int:
    return cin * cout * k * k + (cout if bias else 0)


def srresnet_trainner(nf: int, nb: int) -> int:
    """traiNNer's sr_resnet at x4 (BasicSR's first SRResNet): conv, nb residual blocks,
    the LR conv under a long skip, two pixel-shuffle stages, HR conv, last conv."""
    return (
        conv(3, nf) + nb * 2 * conv(nf, nf) + conv(nf, nf) + 2 * conv(nf, 4 * nf)
        + conv(nf, nf) + conv(nf, 3)
    )  # fmt: skip


def msrresnet(nf: int, nb: int) -> int:
    """BasicSR's MSRResNet at x4: the same without the LR conv."""
    return srresnet_trainner(nf, nb) - conv(nf, nf)


def wbc_unet(nf: int = 32) -> int:
    """White-box Cartoonization's U-Net generator (four residual blocks at 4·nf)."""
    return (
        conv(3, nf, 7) + conv(nf, nf) + conv(nf, 2 * nf) + conv(2 * nf, 2 * nf)
        + conv(2 * nf, 4 * nf) + 8 * conv(4 * nf, 4 * nf) + conv(4 * nf, 2 * nf)
        + conv(2 * nf, 2 * nf) + conv(2 * nf, nf) + conv(nf, nf) + conv(nf, 3, 7)
    )  # fmt: skip


# The ESRGAN x4 option file a traiNNer user has: comments everywhere, lists of folders,
# validation, logger and path sections, keys Loom has no use for.
ESRGAN_JSON = """\
// ESRGAN x4 on DIV2K, fine-tuned from the PSNR model
{
  "name": "002_RRDB_ESRGAN_x4_DIV2K" // remove "debug_" for the real run
  , "use_tb_logger": false
  , "model": "srragan" // srragan | sr | srgan
  , "scale": 4
  , "gpu_ids": [0]
  , "datasets": {
    "train": {
      "name": "DIV2K"
      , "mode": "LRHR"
      , "dataroot_HR": ["../datasets/div2k/hr", "../datasets/flickr2k/hr"] // two folders
      , "dataroot_LR": ["../datasets/div2k/lr", "../datasets/flickr2k/lr"]
      , "subset_file": null
      , "use_shuffle": true
      , "znorm": false // [-1, 1] images when true
      , "n_workers": 4
      , "batch_size": 8
      , "virtual_batch_size": 16
      , "HR_size": 128
      , "use_flip": true
      , "use_rot": true
      , "lr_blur": false
      , "hr_rrot": true
    }
    , "val": {
      "name": "val_set14"
      , "mode": "LRHR"
      , "dataroot_HR": "../datasets/val/set14/hr"
      , "dataroot_LR": "../datasets/val/set14/lr"
    }
  }
  , "path": {
    "root": "/home/me/traiNNer"
    , "pretrain_model_G": "RRDB_PSNR_x4.pth"
    , "resume_state": "../experiments/002/training_state/16.state"
  }
  , "network_G": {
    "which_model_G": "RRDB_net" // RRDB_net | sr_resnet
    , "norm_type": null
    , "mode": "CNA"
    , "nf": 64
    , "nb": 23
    , "in_nc": 3
    , "out_nc": 3
    , "gc": 32
    , "group": 1
  }
  , "network_D": {
    "which_model_D": "discriminator_vgg_128"
    , "norm_type": "batch"
    , "act_type": "leakyrelu"
    , "mode": "CNA"
    , "nf": 64
    , "in_nc": 3
  }
  , "train": {
    "lr_G": 1e-4
    , "weight_decay_G": 0
    , "beta1_G": 0.9
    , "lr_D": 1e-4
    , "weight_decay_D": 0
    , "beta1_D": 0.9
    , "lr_scheme": "MultiStepLR"
    , "lr_steps_rel": [0.1, 0.2, 0.4, 0.6]
    , "lr_gamma": 0.5
    , "pixel_criterion": "l1"
    , "pixel_weight": 1e-2
    , "feature_criterion": "l1"
    , "feature_weight": 1
    , "gan_type": "vanilla"
    , "gan_weight": 5e-3
    , "D_update_ratio": 2
    , "D_init_iters": 100
    , "hfen_weight": 1e-6
    , "manual_seed": 0
    , "niter": 5e5
    , "val_freq": 5e3
    , "metrics": "psnr,ssim,lpips"
  }
  , "logger": {
    "print_freq": 200
    , "save_checkpoint_freq": 5e3
  }
}
"""


def line_col(text: str, needle: str) -> tuple[int, int]:
    """1-based line and column of the first ``needle`` (its key, without the quote)."""
    for n, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return n, line.index(needle) + 2  # past the opening quote
    raise AssertionError(needle)


def test_a_trainner_esrgan_json_becomes_a_spec_that_validates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "train_ESRGAN.json"
    source.write_text(ESRGAN_JSON, encoding="utf-8")
    (tmp_path / "RRDB_PSNR_x4.pth").write_bytes(b"")  # found next to the spec
    out = tmp_path / "esrgan.yaml"
    assert cli.main(["import", str(source), "-o", str(out)]) == 0
    printed = capsys.readouterr()
    text = out.read_text(encoding="utf-8")
    # The header says where the spec came from and lists every option left out, at its place.
    assert text.startswith(f"# Imported by `python cli.py import` from {source}\n")
    assert "# Source format: traiNNer, JSON with // comments; task: sr" in text
    for key, dotted in (
        ('"gpu_ids"', "gpu_ids"),
        ('"znorm"', "datasets.train.znorm"),
        ('"hr_rrot"', "datasets.train.hr_rrot"),
        ('"resume_state"', "path.resume_state"),
        ('"hfen_weight"', "train.hfen_weight"),
    ):
        line, col = line_col(ESRGAN_JSON, key)
        where = f"{source}:{line}:{col - 1}: {dotted}:"
        assert where in text, where
        assert f"{source}:{line}:{col - 1}: warning: {dotted}:" in printed.err
    assert "lr_blur" not in text  # false: an augmentation switched off, nothing to carry
    assert "metric 'lpips'" not in text  # Loom validates lpips too
    # What was mapped.
    diags = Diagnostics()
    doc = parse_yaml(text, str(out), diags)
    assert doc is not None
    result = convert(source, out)
    assert doc.data == result.spec
    spec = doc.data
    assert spec["networks"]["G"]["params"] == {
        "nf": 64, "nb": 23, "gc": 32, "in_nc": 3, "out_nc": 3, "scale": 4,
    }  # fmt: skip
    assert spec["networks"]["G"]["pretrained"] == {"path": "RRDB_PSNR_x4.pth"}
    assert spec["networks"]["D"] == {
        "use": "vgg",
        "inputs": {"x": 3},
        "params": {"nf": 64, "stages": 5},
    }
    assert spec["graph"]["g_gan"]["relativistic"] is True
    g_step, d_step = spec["train"]["phases"][0]["steps"]
    assert g_step == {
        "optimizer": "G",
        "minimize": {"pix": 0.01, "fea": 1.0, "g_gan": 0.005},
        "every": 2,
        "start": 100,
        "accumulate": 2,
    }
    assert d_step == {"optimizer": "D", "minimize": {"d_loss": 1.0}, "accumulate": 2}
    assert spec["optimizers"]["G"]["scheduler"] == {
        "type": "multistep", "milestones": [0.1, 0.2, 0.4, 0.6], "gamma": 0.5,
    }  # fmt: skip
    assert spec["train"]["iterations"] == 500_000
    assert spec["data"]["train"]["hr"] == ["../datasets/div2k/hr", "../datasets/flickr2k/hr"]
    assert spec["validation"]["metrics"] == ["psnr", "ssim", "lpips"]
    assert spec["checkpoints"] == {"every": 5000} and spec["logging"] == {"every": 200}
    # It validates (missing data folders are warnings) and G is ESRGAN's RRDBNet.
    loaded, diags = check_spec(out)
    assert loaded is not None, [str(d) for d in diags.errors]
    reports = {r.name: r.params for r in inspect_spec(loaded, probe_sizes=False)}
    assert reports["G"] == count(ESRGAN, num_filters=64, num_blocks=23, scale=4)
    # An existing spec is kept unless --force.
    assert cli.main(["import", str(source), "-o", str(out)]) == 2
    assert "give --force" in capsys.readouterr().err
    assert cli.main(["import", str(source), "-o", str(out), "--force"]) == 0


TRAINNER_SR_YAML = """\
name: 001_sr_template
model: sr
scale: 4
use_amp: true
datasets:
  train:
    mode: aligned
    dataroot_B: ../datasets/train/hr
    dataroot_A: ../datasets/train/lr
    n_workers: 2
    batch_size: 4
    virtual_batch_size: 8
    preprocess: crop
    crop_size: 64
    use_flip: true
    use_rot: false
network_G: {which_model_G: RRDB_net, nf: 16, nb: 2}
train:
  optim_G: adam
  lr_G: 2e-4
  lr_scheme: MultiStepLR_Restart
  lr_steps: [1000, 2000, 5000, 6000]
  restarts: [4000]
  restart_weights: [0.5]
  lr_gamma: 0.5
  pixel_criterion: cb
  pixel_weight: 1
  niter: 8e3
"""

TRAINNER_SRGAN_JSON = """\
{
  "name": "srgan" // SRResNet generator
  , "model": "srgan", "scale": 4
  , "datasets": {"train": {"mode": "LRHR", "dataroot_HR": "hr", "HR_size": 96, "batch_size": 2}}
  , "network_G": {"which_model_G": "sr_resnet", "nf": 16, "nb": 2, "norm_type": null}
  , "network_D": {"which_model_D": "discriminator_vgg", "nf": 8}
  , "train": {"pixel_weight": 0, "feature_weight": 1, "feature_criterion": "l2",
              "gan_type": "lsgan", "gan_weight": 1e-3, "niter": 100,
              "lr_scheme": "Linear", "fixed_niter": 50}
}
"""

TRAINNER_PAN_YAML = """\
name: pan
model: sr
scale: 4
datasets: {train: {dataroot_HR: hr, crop_size: 64, batch_size: 2}}
network_G: pan_net
train: {pixel_criterion: l1, pixel_weight: 1, niter: 100, lr_G: 7e-4}
"""

TRAINNER_PIX2PIX_YAML = """\
name: pix2pix
model: pix2pix
scale: 1
datasets:
  train:
    mode: aligned
    dataroot_AB: ../datasets/facades/train
    direction: BtoA
    preprocess: resize_and_crop
    load_size: 286
    crop_size: 256
    batch_size: 1
network_G: {which_model_G: unet_256}
network_D: {which_model_D: patchgan, in_nc: 6}
train:
  lr_G: 2e-4
  beta1_G: 0.5
  lr_D: 2e-4
  beta1_D: 0.5
  lr_scheme: Linear
  fixed_niter: 2.5e4
  niter_decay: 2.5e4
  pixel_criterion: l1
  pixel_weight: 100
  gan_type: vanilla
  gan_weight: 1
  niter: 5e4
"""

TRAINNER_CYCLEGAN_YAML = """\
name: cyclegan
model: cyclegan
scale: 1
pool_size: 50
datasets:
  train: {mode: unaligned, dataroot_A: a, dataroot_B: b, crop_size: 128, batch_size: 1}
network_G: {which_model_G: resnet_9blocks}
network_D: {which_model_D: patchgan, norm_type: instance}
train:
  pixel_criterion: l1
  pixel_weight: 10
  lambda_identity: 0.5
  gan_type: lsgan
  gan_weight: 1
  niter: 1000
"""

TRAINNER_WBC_YAML = """\
name: wbc
model: wbc
scale: 1
datasets:
  train:
    mode: concat_unaligned
    sampler_weights: [4, 1]
    dataroot_B: [cartoon/scenery, cartoon/faces]
    dataroot_A: [photo/scenery, photo/faces]
    crop_size: 256
    batch_size: 16
network_G: {which_model_G: wbcunet}
network_D: {which_model_D: patchgan, spectral_norm: true, nf: 32}
train:
  lr_G: 2e-4
  beta1_G: 0.5
  beta1_D: 0.5
  feature_criterion: l1
  feature_weight: 0.002
  perceptual_opt: {perceptual_layers: {conv4_4: 1.0}, feature_network: vgg19}
  tv_weight: 0.045
  tv_norm: 2
  gan_type: lsgan
  gan_weight: 0.02
  struct_losses: [fea]
  cont_losses: [fea]
  reg_losses: [tv]
  surface_scale: 0.2
  texture_scale: 1.0
  struct_scale: 1.0
  content_scale: 1.0
  reg_scale: 1.0
  niter: 5e4
"""

BASICSR_ESRGAN_YAML = """\
name: 052_ESRGAN_x4
model_type: ESRGANModel
scale: 4
num_gpu: 1
manual_seed: 0
datasets:
  train:
    type: PairedImageDataset
    dataroot_gt: datasets/DIV2K/hr
    dataroot_lq: datasets/DIV2K/lr
    io_backend: {type: disk}
    gt_size: 128
    use_flip: true
    use_rot: true
    batch_size_per_gpu: 16
network_g: {type: RRDBNet, num_in_ch: 3, num_out_ch: 3, num_feat: 16, num_block: 2}
network_d: {type: VGGStyleDiscriminator, num_in_ch: 3, num_feat: 8}
path: {pretrain_network_g: ~, strict_load_g: true, resume_state: ~}
train:
  ema_decay: 0.999
  optim_g: {type: Adam, lr: !!float 1e-4, weight_decay: 0, betas: [0.9, 0.99]}
  optim_d: {type: Adam, lr: !!float 1e-4, weight_decay: 0, betas: [0.9, 0.99]}
  scheduler: {type: MultiStepLR, milestones: [50000, 100000], gamma: 0.5}
  total_iter: 400000
  warmup_iter: -1
  pixel_opt: {type: L1Loss, loss_weight: !!float 1e-2, reduction: mean}
  perceptual_opt:
    type: PerceptualLoss
    layer_weights: {conv5_4: 1}
    vgg_type: vgg19
    perceptual_weight: 1.0
    style_weight: 0
    criterion: l1
  gan_opt: {type: GANLoss, gan_type: vanilla, loss_weight: !!float 5e-3}
  net_d_iters: 1
  net_d_init_iters: 0
"""

BASICSR_MSRRESNET_YAML = """\
name: msrresnet
model_type: SRModel
scale: 4
datasets:
  train: {type: PairedImageDataset, dataroot_gt: hr, dataroot_lq: lr, gt_size: 128}
  val: {type: PairedImageDataset, dataroot_gt: val/hr, dataroot_lq: val/lr}
network_g: {type: MSRResNet, num_feat: 64, num_block: 16, upscale: 4}
train:
  optim_g: {type: Adam, lr: !!float 2e-4, betas: [0.9, 0.99]}
  scheduler:
    type: CosineAnnealingRestartLR
    periods: [250000, 250000]
    restart_weights: [1, 1]
    eta_min: !!float 1e-7
  total_iter: 500000
  pixel_opt: {type: L1Loss, loss_weight: 1.0}
val:
  val_freq: !!float 5e3
  metrics:
    psnr: {type: calculate_psnr, crop_border: 4, test_y_channel: true}
"""

REDUX_COMPACT_YAML = """\
name: 4x_Compact
scale: 4
use_amp: true
amp_bf16: true
datasets:
  train:
    type: pairedimagedataset
    dataroot_gt: [hr1, hr2]
    dataroot_lq: [lr1, lr2]
    lq_size: 32
    use_hflip: true
    use_rot: true
    batch_size_per_gpu: 8
    accum_iter: 2
network_g: {type: compact}
network_d: {type: unetdiscriminatorsn, num_in_ch: 3, num_feat: 16}
train:
  optim_g: {type: AdamW, lr: !!float 1e-4, betas: [0.9, 0.99]}
  optim_d: {type: AdamW, lr: !!float 1e-4, betas: [0.9, 0.99]}
  total_iter: 1000
  losses:
    - {type: l1loss, loss_weight: 1.0}
    - {type: mssimloss, loss_weight: 1.0}
    - {type: hsluvloss, loss_weight: 0}
    - {type: distsloss, loss_weight: 0.25}
    - {type: ganloss, gan_type: vanilla, loss_weight: 0.1}
"""

CASES = {
    # name: (file name, text, {network: expected parameter count}, checks on the spec)
    "trainner_sr_yaml": (
        "train_sr.yml",
        TRAINNER_SR_YAML,
        {"G": lambda: count(ESRGAN, num_filters=16, num_blocks=2, scale=4)},
    ),
    "trainner_srgan_json": (
        "train_SRGAN.json",
        TRAINNER_SRGAN_JSON,
        {"G": lambda: srresnet_trainner(16, 2)},
    ),
    "trainner_pan_yaml": ("train_pan.yml", TRAINNER_PAN_YAML, {"G": lambda: 272_419}),
    "trainner_pix2pix_yaml": (
        "train_pix2pix.yml",
        TRAINNER_PIX2PIX_YAML,
        # pix2pix reports 54.414 M for unet_256 and 2.769 M for its conditional PatchGAN.
        {"G": lambda: 54_414_467, "D": lambda: 2_768_705},
    ),
    "trainner_cyclegan_yaml": (
        "train_cyclegan.yml",
        TRAINNER_CYCLEGAN_YAML,
        {"G_A": lambda: 11_378_179, "G_B": lambda: 11_378_179},  # CycleGAN's 11.378 M
    ),
    "trainner_wbc_yaml": ("train_wbc.yml", TRAINNER_WBC_YAML, {"G": lambda: wbc_unet(32)}),
    "basicsr_esrgan_yaml": (
        "train_ESRGAN_x4.yml",
        BASICSR_ESRGAN_YAML,
        {"G": lambda: count(ESRGAN, num_filters=16, num_blocks=2, scale=4)},
    ),
    "basicsr_msrresnet_yaml": (
        "train_MSRResNet_x4.yml",
        BASICSR_MSRRESNET_YAML,
        {"G": lambda: msrresnet(64, 16)},
    ),
    "redux_compact_yaml": (
        "Compact.yml",
        REDUX_COMPACT_YAML,
        {"G": lambda: count(Compact, num_feat=64, num_conv=16, upscale=4)},
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_templates_import_to_specs_with_the_peers_parameter_counts(
    tmp_path: Path, case: str
) -> None:
    name, text, expected = CASES[case]
    source = tmp_path / name
    source.write_text(text, encoding="utf-8")
    out = tmp_path / "spec.yaml"
    result = convert(source, out)
    out.write_text(result.text, encoding="utf-8")
    spec, diags = check_spec(out)
    assert spec is not None, [str(d) for d in diags.errors]
    reports = {r.name: r.params for r in inspect_spec(spec, probe_sizes=False)}
    for net, reference in expected.items():
        assert reports[net] == reference(), net
    data = result.spec
    if case == "trainner_sr_yaml":
        assert data["train"]["precision"] == "fp16"
        assert data["optimizers"]["G"]["scheduler"] == {
            "type": "multistep_restarts", "periods": [4000, 4000],
            "restart_weights": [1.0, 0.5], "milestones": [1000, 2000], "gamma": 0.5,
        }  # fmt: skip
        assert data["graph"]["pix"]["loss"] == "charbonnier" and "D" not in data["networks"]
        assert data["data"]["train"]["hr"] == "../datasets/train/hr"
        assert data["train"]["phases"][0]["steps"][0]["accumulate"] == 2
    elif case == "trainner_srgan_json":
        assert data["networks"]["D"]["params"] == {"nf": 8, "stages": 5}  # 96 crops: 3x3
        assert data["graph"]["d_loss"]["type"] == "lsgan"
        assert "relativistic" not in data["graph"]["d_loss"]
        assert data["graph"]["fea"]["criterion"] == "l2" and "pix" not in data["graph"]
        assert data["optimizers"]["G"]["scheduler"] == {"type": "linear_decay", "start": 50}
    elif case == "trainner_pix2pix_yaml":
        assert data["data"]["train"]["folder"] == "../datasets/facades/train"
        assert data["graph"]["fake"] == {"call": "G", "in": "data.B"}  # BtoA
        assert data["graph"]["d_real"]["in"] == ["data.B", "data.A"]
        assert data["train"]["phases"][0]["steps"][0]["minimize"] == {"pix": 100.0, "g_gan": 1.0}
    elif case == "trainner_cyclegan_yaml":
        minimize = data["train"]["phases"][0]["steps"][0]["minimize"]
        assert minimize["cycle_A"] == 10.0 and minimize["identity_A"] == 5.0
        assert data["graph"]["pool_A"]["size"] == 50
    elif case == "trainner_wbc_yaml":
        minimize = data["train"]["phases"][0]["steps"][1]["minimize"]
        assert minimize["surface_g"] == pytest.approx(0.2 * 0.02)
        assert minimize["tv_l"] == pytest.approx(0.045)
        assert data["networks"]["D_texture"]["inputs"] == {"x": 1}
        assert data["data"]["train"]["weights"] == [4, 1]
    elif case == "basicsr_esrgan_yaml":
        assert data["train"]["ema"] == {"networks": ["G"], "decay": 0.999}
        assert data["graph"]["g_gan"]["relativistic"] is True
        assert data["optimizers"]["D"]["betas"] == [0.9, 0.99]
        assert [n.key for n in result.notes] == ["num_gpu"]  # the rest of the template maps
    elif case == "basicsr_msrresnet_yaml":
        assert data["validation"]["y_channel"] is True
        assert data["optimizers"]["G"]["scheduler"]["eta_min"] == pytest.approx(1e-7 / 2e-4)
    elif case == "redux_compact_yaml":
        assert result.format.startswith("traiNNer-redux")
        assert data["train"]["precision"] == "bf16"
        assert data["data"]["train"]["lr_crop_size"] == 32
        assert set(data["train"]["phases"][0]["steps"][0]["minimize"]) == {
            "pix",
            "ms_ssim",
            "g_gan",
        }
        assert [n.key for n in result.notes] == ["train.losses[3]"]  # DISTS: no Loom loss
        assert data["networks"]["D"] == {
            "use": "unet", "inputs": {"x": 3}, "params": {"nf": 16, "skip": True},
        }  # fmt: skip


@pytest.mark.parametrize(
    ("text", "suffix", "message"),
    [
        ('{"name": "x",\n  "scale": 4\n', ".json", r"x\.json:1:1: error: JSON: .*not closed"),
        ("name: x\nfoo: [1\n", ".yml", r"x\.yml:\d+:\d+: error: YAML:"),
        ("name: x\nbatch: 4\n", ".yml", "not a traiNNer, BasicSR or traiNNer-redux option file"),
        ("- 1\n- 2\n", ".yml", "an option file is a mapping of options"),
        (
            "name: x\nnetwork_g: {type: ultracompact}\ntrain: {total_iter: 10}\n",
            ".yml",
            r"x\.yml:2:\d+: network_g\.type: a compact network with 8 convs",
        ),
        (
            '{"model": "ppon", "network_G": {"which_model_G": "ppon"}}',
            ".json",
            r"x\.json:1:\d+: model: PPON's three-branch model is not imported",
        ),
        (
            '{"model": "sr", "network_G": "edsr", "train": {"niter": 5}}',
            ".json",
            "network 'edsr' has no Loom block to import to",
        ),
        (b"\xff\xfe\x00".decode("latin-1"), ".json", "not a text file|JSON|YAML"),
    ],
)
def test_unreadable_or_unknown_option_files_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, suffix: str, message: str
) -> None:
    import re

    source = tmp_path / f"x{suffix}"
    source.write_bytes(text.encode("latin-1")) if "\xff" in text else source.write_text(text)
    out = tmp_path / "spec.yaml"
    assert cli.main(["import", str(source), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert "Traceback" not in err and not out.exists()
    assert cli.main(["import", str(tmp_path / "missing.json")]) == 2
    assert "missing.json: file not found" in capsys.readouterr().err


def test_json_comments_are_blanked_in_place() -> None:
    text = '{"a": "http://x" // a comment\n, /* two\nlines */ "b": 1\t}'
    blanked = blank_json_comments(text)
    assert len(blanked) == len(text) and blanked.count("\n") == text.count("\n")
    assert '"http://x"' in blanked and "comment" not in blanked and "lines" not in blanked

"""Every shipped spec trains a handful of iterations on the built-in data (tiny settings)."""

from __future__ import annotations

import io
import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.train.runner import run

ROOT = Path(__file__).resolve().parents[1]
#: The SRFlow rows' run: 4 iterations, validated at two heats with two draws. HR crops
#: of 32 suit x4 (3 squeezes) and x8 (4 squeezes: LR 4).
TINY_FLOW_RUN = [
    "data.train.crop_size=32",
    "data.train.batch_size=2",
    "+data.val.max_size=1",
    "+data.val.crop_size=64",
    "train.iterations=4",
    "validation.every=4",
    "validation.heats=[0.0, 1.0]",
    "validation.n_sample=2",
    "checkpoints.every=4",
    "logging.every=1",
]
TINY_GAN = [
    "data.train.crop_size=64",
    "data.train.batch_size=2",
    "train.iterations=4",
    "train.phases.0.until=2",
    "+graph.fea.weights=random",
    "validation.every=4",
    "checkpoints.every=4",
    "logging.every=1",
    "networks.D.params.nf=4",
]
TINY_I2I = [
    "data.train.crop_size=32",
    "train.iterations=4",
    "validation.every=4",
    "checkpoints.every=4",
    "logging.every=1",
]
TINY = {
    "quickstart.yaml": [
        "train.iterations=4",
        "validation.every=4",
        "checkpoints.every=4",
        "logging.every=1",
        "data.train.crop_size=32",
    ],
    "esrgan.yaml": [
        *TINY_GAN,
        "networks.G.params.nf=8",
        "networks.G.params.nb=1",
        "networks.G.params.gc=4",
    ],
    "srgan.yaml": [*TINY_GAN, "networks.G.params.nf=8", "networks.G.params.nb=1"],
    "pan.yaml": [
        "data.train.crop_size=32",
        "data.train.batch_size=2",
        "train.iterations=4",
        "validation.every=4",
        "checkpoints.every=4",
        "logging.every=1",
        "networks.G.params.nf=8",
        "networks.G.params.unf=4",
        "networks.G.params.nb=1",
    ],
    # SFTGAN: the ACD takes 96-pixel crops only; VGG19 at that size is left out (weight 0).
    "sftgan.yaml": [
        *(o for o in TINY_GAN if o not in ("data.train.crop_size=64", "networks.D.params.nf=4")),
        "data.train.crop_size=96",
        "train.phases.1.steps.0.minimize.fea=0",
        "optimizers.G.groups.1.hold=[2, 3]",
        "optimizers.G.scheduler={type: constant}",
        "optimizers.D.scheduler={type: constant}",
        "networks.G.params.nf=8",
        "networks.G.params.nb=1",
        "networks.D.params.nf=4",
        "+networks.D.params.fc=5",
    ],
    # Restoration at 1x (compact SRVGG) and Real-ESRGAN x4 (tests/test_restoration.py).
    **{
        f"restore_{task}.yaml": [
            "data.train.crop_size=16",
            "data.train.batch_size=2",
            "train.iterations=4",
            "validation.every=4",
            "checkpoints.every=4",
            "logging.every=1",
            "networks.G.params.nf=4",
        ]
        for task in ("denoise", "deblur", "jpeg")
    },
    "realesrgan.yaml": [
        *(o for o in TINY_GAN if o != "+graph.fea.weights=random"),
        "+graph.percep.weights=random",
        "train.ema.start=2",
        "networks.G.params.nf=4",
    ],
    "ppon.yaml": [
        "data.train.crop_size=32",
        "data.train.batch_size=2",
        "train.iterations=4",
        "train.phases.0.until=2",
        "train.phases.1.until=3",
        "validation.every=4",
        "checkpoints.every=4",
        "logging.every=1",
        "+graph.perception.weights=random",
        "networks.G.params.nf=4",
        "networks.G.params.nb=1",
        "networks.G.params.nb_branch=1",
        "networks.D.params.nf=4",
        "networks.D.params.stages=4",
    ],
    # Image-to-image specs: 32-pixel crops (a multiple of what each generator needs).
    "pix2pix.yaml": [
        *TINY_I2I,
        "data.train.load_size=36",
        "data.val.load_size=32",
        "networks.G.params.nf=4",
        "networks.G.params.depth=5",
        "networks.D.params.nf=4",
    ],
    "srflow.yaml": [
        "networks.G.nodes.RRDB.nf=8",
        "networks.G.nodes.RRDB.gc=4",
        "networks.G.nodes.flowUpsamplerNet.K=2",
        "networks.G.nodes.flowUpsamplerNet.hidden=8",
        *TINY_FLOW_RUN,
    ],
    # x8: four squeezes, so HR crops are multiples of 16 (LR 4 at 32).
    "srflow_x8.yaml": [
        "networks.G.nodes.RRDB.nf=8",
        "networks.G.nodes.RRDB.nb=8",
        "networks.G.nodes.RRDB.gc=4",
        "networks.G.nodes.flowUpsamplerNet.K=1",
        "networks.G.nodes.flowUpsamplerNet.hidden=8",
        *TINY_FLOW_RUN,
    ],
    "rife.yaml": [
        "data.train.crop_size=48",
        "data.train.batch_size=1",
        "+data.val.max_size=1",
        "+data.val.crop_size=48",
        "train.iterations=4",
        "optimizers.flownet.scheduler.warmup=2",
        "validation.every=4",
        "checkpoints.every=4",
        "logging.every=1",
        *(
            f"networks.flownet.params.{k}={v}"
            for k, v in {"c0": 8, "c1": 6, "c2": 4, "c_tea": 4, "c_ctx": 2}.items()
        ),
    ],
    "cyclegan.yaml": [
        *TINY_I2I,
        "data.val.crop_size=32",
        *(f"networks.{n}.params.nf=4" for n in ("G_A", "G_B", "D_A", "D_B")),
        "networks.G_A.params.n_blocks=1",
        "networks.G_B.params.n_blocks=1",
    ],
    "wbc.yaml": [
        *TINY_I2I,
        "data.val.crop_size=32",
        "data.train.batch_size=2",
        "train.phases.0.until=2",
        "params.vgg_weights=random",
        "networks.G.params.nf=4",
        "networks.G.params.n_blocks=1",
        "networks.D_surface.params.nf=4",
        "networks.D_texture.params.nf=4",
        "graph.superpixels.segments=16",
    ],
    **{
        name: [
            "data.train.crop_size=16",
            "data.train.batch_size=1",
            "train.iterations=4",
            "validation.every=4",
            "checkpoints.every=4",
            "logging.every=1",
            "+data.val.max_size=1",
            "networks.G.params.nf=4",
            "networks.G.params.nb=1",
            "networks.G.params.gc=4",
        ]
        for name in ("vsr.yaml", "vsr_3d.yaml")
    },
}
SPECS = sorted(p.name for p in (ROOT / "specs").glob("*.yaml"))


def cli(*args: str, **kwargs) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), *args],
        capture_output=True,
        text=True,
        timeout=600,
        **kwargs,
    )


def test_every_shipped_spec_has_tiny_settings() -> None:
    assert set(SPECS) <= set(TINY), f"add tiny overrides for {set(SPECS) - set(TINY)}"


@pytest.mark.parametrize("name", [n for n in SPECS if n != "quickstart.yaml"])
def test_shipped_spec_trains_a_few_iterations(name: str, tmp_path: Path) -> None:
    # In process: a subprocess per spec would spend most of its time importing torch.
    # The quick start goes through the command line, in the test below.
    log = io.StringIO()
    run(ROOT / "specs" / name, TINY[name], out=tmp_path, stream=log, live=False)
    check_trained_a_few_iterations(tmp_path, TINY[name])


def test_the_command_line_trains_the_quick_start(tmp_path: Path) -> None:
    name = "quickstart.yaml"
    result = cli("run", str(ROOT / "specs" / name), *TINY[name], "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    check_trained_a_few_iterations(tmp_path, TINY[name])
    assert "\x1b[" not in result.stdout  # not a terminal: plain lines


def check_trained_a_few_iterations(run_dir: Path, overrides: list[str]) -> None:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r for r in records if any(k.startswith("loss/") for k in r)]
    assert [r["iter"] for r in losses] == [1, 2, 3, 4]
    val = [r for r in records if "val/psnr" in r]
    assert val and math.isfinite(val[-1]["val/psnr"])
    if "val/psnr_bicubic" in val[-1]:  # SR specs; image-to-image outputs have the input's size
        assert val[-1]["val/psnr_bicubic"] > 20
    assert (run_dir / "samples").is_dir() and any((run_dir / "samples").iterdir())
    if "params.vgg_weights=random" in overrides:  # the demo mode is logged loudly
        assert "VGG19 weights are RANDOM" in (run_dir / "train.log").read_text()


def test_ctrl_c_saves_and_resume_finishes(tmp_path: Path) -> None:
    spec = str(ROOT / "specs" / "quickstart.yaml")
    args = [
        "train.iterations=100000",
        "validation.every=100000",
        "checkpoints.every=100000",
        "data.train.crop_size=32",
        "logging.every=1",
    ]
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "cli.py"), "run", spec, *args, "--out", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    metrics = tmp_path / "metrics.jsonl"
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().strip()):
        time.sleep(0.2)  # training has started once the first iteration is logged
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err[-2000:]
    assert "interrupted: saved iteration" in out
    latest = (tmp_path / "checkpoints" / "latest").read_text().strip()
    stopped = int(latest.split("_")[1])
    assert stopped > 0
    result = cli(
        "run",
        spec,
        f"train.iterations={stopped + 3}",
        "validation.every=100000",
        "checkpoints.every=100000",
        "data.train.crop_size=32",
        "--out",
        str(tmp_path),
        "--resume",
        "auto",
        "--resume-changes",
        "train.iterations",  # a changed length is taken on resume only when named
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "resumed from" in result.stdout and f"at iteration {stopped}" in result.stdout
    assert f"finished at iteration {stopped + 3}" in result.stdout


@pytest.mark.slow
def test_quickstart_beats_bicubic(tmp_path: Path) -> None:
    result = cli("run", str(ROOT / "specs" / "quickstart.yaml"), "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in records if "val/psnr" in r][-1]
    assert last["val/psnr"] > last["val/psnr_bicubic"] + 0.3
    first_loss = next(r["loss/pix"] for r in records if "loss/pix" in r)
    last_loss = [r["loss/pix"] for r in records if "loss/pix" in r][-1]
    assert last_loss < first_loss

"""Slow tier: the shipped SRFlow recipe learns on the built-in photographs.

A narrower SRFlow (encoder nf 16 and gc 8 with its 23 blocks, K 4 steps a level of 32
hidden channels), HR crops of 48, batch 8, 400 iterations with the recipe's phases
(the encoder frozen for the first half) and lr schedule, at lr 5e-4. The figures go in
docs/srflow.md (Measured learning):

    python -m pytest tests/test_srflow_learning.py -m slow -s
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OVERRIDES = [
    "networks.G.nodes.RRDB.nf=16",
    "networks.G.nodes.RRDB.gc=8",
    "networks.G.nodes.flowUpsamplerNet.K=4",
    "networks.G.nodes.flowUpsamplerNet.hidden=32",
    "optimizers.G.lr=5.0e-4",
    "data.train.crop_size=48",
    "data.train.batch_size=8",
    "+data.val.max_size=4",
    "+data.val.crop_size=96",
    "train.iterations=400",
    "validation.every=100",
    "validation.heats=[0.0, 1.0]",
    "validation.n_sample=2",
    "checkpoints.every=400",
    "logging.every=10",
]


@pytest.mark.slow
@pytest.mark.xfail(
    reason="measured 2026-12-02: the NLL falls (0.42 to -2.72 bits per pixel, first and "
    "last five logs) but heat-0 PSNR reaches 26.91 dB at iteration 400 against bicubic's "
    "28.02 (docs/srflow.md, Measured); a plain RRDB of the same width trained by L1 for "
    "300 iterations reaches only 26.49 against 28.04",
    strict=False,
)
def test_srflow_nll_falls_and_heat_zero_beats_bicubic(tmp_path: Path) -> None:
    from engine.train.runner import run

    result = run(
        ROOT / "specs" / "srflow.yaml", OVERRIDES, out=tmp_path / "run", stream=io.StringIO()
    )
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").open()]
    nll = [r["loss/nll"] for r in records if "loss/nll" in r]
    val = {r["iter"]: r for r in records if "val/psnr" in r}
    for it, r in sorted(val.items()):  # shown with -s; docs/srflow.md records these
        print(
            f"iter {it} ({r['phase']}): heat-0 PSNR {r['val/psnr']:.2f} dB (bicubic "
            f"{r['val/psnr_bicubic']:.2f}), SSIM {r['val/ssim']:.4f}, heat-1 PSNR "
            f"{r['val/psnr_heat1']:.2f}, diversity {r['val/diversity_heat1']:.2f}, "
            f"non-finite {r['val/nonfinite_samples']:.0f}"
        )
    print("nll every 10 iterations:", " ".join(f"{v:.2f}" for v in nll))
    assert all(math.isfinite(v) for v in nll)
    assert sum(nll[-5:]) / 5 < sum(nll[:5]) / 5 - 1.0  # bits per pixel
    last = val[400]
    assert last["val/diversity_heat0"] == 0 and last["val/diversity_heat1"] > 0
    assert last["val/psnr"] > val[100]["val/psnr"]
    assert last["val/psnr"] > last["val/psnr_bicubic"]

"""How fast does the data pipeline feed training?  Patches per second, as a table.

Training patches (HR crop 128, LR 32: x4) from ``builtin:photos`` through the real
loader (2 workers, batches of 16, random crops, flips and rotations), after a
warm-up that starts the workers and decodes the photographs:

1. LR made by an antialiased bicubic downscale (no degradations);
2. LR made by the Real-ESRGAN two-stage degradations (specs/lib/degradations/
   realesrgan.yaml): blur, resize, noise, JPEG, twice, then the final resize and sinc.

The reference in the same run is (1) in the main process with no workers, so the
table shows what the workers add; the ratio column is against it.

Run: python benchmarks/bench_data.py [--batches 40]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.data import make_dataset, make_loader  # noqa: E402
from engine.spec.diagnostics import Diagnostics  # noqa: E402
from engine.spec.yamlio import parse_yaml  # noqa: E402

PRESET = ROOT / "specs" / "lib" / "degradations" / "realesrgan.yaml"
BATCH, CROP, SCALE = 16, 128, 4


def realesrgan_steps() -> list:
    doc = parse_yaml(PRESET.read_text(encoding="utf-8"), str(PRESET), Diagnostics())
    return doc.data["data"]["train"]["degradations"]


def patches_per_second(degradations: list, workers: int, batches: int) -> float:
    section = {
        "type": "sr",
        "hr": "builtin:photos",
        "crop_size": CROP,
        "flip": True,
        "rotate": True,
        "degradations": degradations,
    }
    dataset = make_dataset(section, scale=SCALE, train=True, seed=0)
    loader = make_loader(
        dataset, batch_size=BATCH, workers=workers, seed=0, shuffle=True, drop_last=True
    )
    iterator = iter(loader)
    for _ in range(3):  # start workers, decode and cache the photographs
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        batch = next(iterator)
    elapsed = time.perf_counter() - start
    assert batch["lr"].shape == (BATCH, 3, CROP // SCALE, CROP // SCALE)
    loader.close()
    return batches * BATCH / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=40)
    args = parser.parse_args()
    rows = [
        ("bicubic LR, no workers (reference)", [], 0),
        ("bicubic LR, 2 workers", [], 2),
        ("Real-ESRGAN two-stage degradations, no workers", realesrgan_steps(), 0),
        ("Real-ESRGAN two-stage degradations, 2 workers", realesrgan_steps(), 2),
    ]
    results = [(name, patches_per_second(steps, w, args.batches)) for name, steps, w in rows]
    reference = results[0][1]
    print(f"HR crop {CROP}, x{SCALE}, batch {BATCH}, {args.batches} batches after warm-up")
    print(f"{'measurement':<50} {'patches/s':>10} {'ms/patch':>9} {'ratio':>6}")
    for name, rate in results:
        print(f"{name:<50} {rate:>10.0f} {1000 / rate:>9.2f} {rate / reference:>6.2f}")


if __name__ == "__main__":
    main()

"""How much does ``infer`` add to running the network?  ESRGAN's generator on an image,
whole and in tiles, against plain loops calling the module in the same run.

Three figures per mode (images/s, the fastest of ``--repeat`` interleaved runs):

1. ``infer``'s network path (:class:`engine.apply.infer.Runner`: tiling, precision,
   device transfers, the output port) on the decoded image;
2. the reference: a plain loop calling the module — on the whole image, or on the
   same tiles cut and pasted by hand;
3. ``infer`` end to end: reading the PNG, the network, writing the PNG.

The target is (1)/(2) ≤ 1.05 in time; (3) shows what image files cost on top.
Defaults are the published generator (nf 64, nb 23, x4) on 512×512 with tiles of 128,
for a GPU; on a CPU pass smaller ones (``--nb 1 --size 128 --tile 64``).

Run: python benchmarks/bench_infer.py [--device cuda] [--precision fp16] [--nb 23]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from engine.apply.images import list_inputs  # noqa: E402
from engine.apply.infer import DTYPES, InferOptions, Runner, infer  # noqa: E402
from engine.apply.source import open_model  # noqa: E402
from engine.compile.weights import export  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fns: list[Callable[[], object]], repeat: int, device: torch.device) -> list[float]:
    """The fastest of ``repeat`` runs of each function, interleaved (after a warm-up of
    each), so a neighbour's load on a shared machine hits all of them alike."""
    for fn in fns:
        fn()
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def hand_tiled(module: torch.nn.Module, x: torch.Tensor, tile: int, overlap: int) -> torch.Tensor:
    """The reference tiler: the same tiles as infer's, cut and pasted by hand."""
    h, w = x.shape[-2:]
    out = None
    for top in range(0, h, tile):
        for left in range(0, w, tile):
            t0, t1 = max(top - overlap, 0), min(top + tile + overlap, h)
            l0, l1 = max(left - overlap, 0), min(left + tile + overlap, w)
            y = module(x=x[..., t0:t1, l0:l1])
            s = y.shape[-1] // (l1 - l0)
            if out is None:
                out = y.new_empty((*y.shape[:2], h * s, w * s))
            b, r = min(top + tile, h), min(left + tile, w)
            out[..., top * s : b * s, left * s : r * s] = y[
                ..., (top - t0) * s : (b - t0) * s, (left - l0) * s : (r - l0) * s
            ]
    assert out is not None
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nf", type=int, default=64)
    parser.add_argument("--nb", type=int, default=23)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--tile", type=int, default=128)
    parser.add_argument("--overlap", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=list(DTYPES), default="fp32")
    args = parser.parse_args()
    device, dtype = torch.device(args.device), DTYPES[args.precision]

    tmp = Path(tempfile.mkdtemp(prefix="loom-bench-infer-"))
    spec = tmp / "esrgan.yaml"
    spec.write_text(
        "spec: 1\nname: bench_esrgan\nimports: [lib/esrgan.yaml]\nnetworks:\n"
        f"  G: {{use: RRDBNet, params: {{nf: {args.nf}, nb: {args.nb}, scale: 4}}}}\n",
        encoding="utf-8",
    )
    init = open_model(spec, need_weights=False)
    weights = export(init.module, tmp / "G.safetensors", "esrgan")
    model = open_model(spec, weights=weights)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
    (tmp / "in").mkdir()
    Image.fromarray(pixels).save(tmp / "in" / "image.png")
    items = list_inputs(str(tmp / "in"))
    x = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255

    print(
        f"ESRGAN nf {args.nf} nb {args.nb} x4 on {args.size}×{args.size}, {args.device} "
        f"{args.precision}, fastest of {args.repeat} interleaved runs"
    )
    print("| mode | infer network path | plain loop | ratio | infer end to end (PNG in/out) |")
    print("|---|---|---|---|---|")
    for tile in (None, args.tile):
        options = InferOptions(
            tile=tile, overlap=args.overlap, device=args.device, precision=args.precision
        )
        runner = Runner(model, options, print)
        module = runner.module

        def plain(tile: int | None = tile, module: torch.nn.Module = module) -> torch.Tensor:
            with torch.inference_mode():
                xd = x.to(device, dtype)
                y = module(x=xd) if tile is None else hand_tiled(module, xd, tile, args.overlap)
                return y.float().cpu()

        out = tmp / f"out-{tile}"

        def end_to_end(options: InferOptions = options, out: Path = out) -> object:
            return infer(model, items, out, options, log=lambda s: None)

        path, reference, end = timed(
            [lambda runner=runner: runner(x), plain, end_to_end], args.repeat, device
        )
        mode = "whole" if tile is None else f"tiles of {tile} (+{args.overlap})"
        print(
            f"| {mode} | {1 / path:.3f} images/s | {1 / reference:.3f} images/s | "
            f"{path / reference:.3f} | {1 / end:.3f} images/s |"
        )


if __name__ == "__main__":
    main()

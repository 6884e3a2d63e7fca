"""The zoo's compiled networks against spandrel's own modules, forward + backward.

For each row of ``MODELS``: Loom's network is built from its library block, spandrel's
module is made with the same settings and given Loom's weights, and both run one
forward + backward per round on the same input, in an order that alternates each
round, in one process (threads fixed, garbage collection off while timing). Printed:
the outputs' largest difference and the median per-round time ratio Loom / spandrel.

    python benchmarks/bench_zoo.py [--rounds 20] [--only SwinIR-light]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


@dataclass(frozen=True)
class Model:
    """A library block with its parameters, and the spandrel module that is the same."""

    library: str
    block: str
    params: dict[str, Any]
    reference: Callable[[], nn.Module]
    size: int  # input side
    batch: int


def _swinir(depth: int) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        from spandrel.architectures.SwinIR import SwinIR

        return SwinIR(
            img_size=64,
            embed_dim=60,
            depths=[depth] * 4,
            num_heads=[6] * 4,
            window_size=8,
            mlp_ratio=2.0,
            upscale=2,
            img_range=1.0,
            upsampler="pixelshuffledirect",
            resi_connection="1conv",
        )

    return make


def _nafnet(width: int) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        from spandrel.architectures.NAFNet import NAFNet

        return NAFNet(
            width=width, middle_blk_num=12, enc_blk_nums=[2, 2, 4, 8], dec_blk_nums=[2, 2, 2, 2]
        )

    return make


MODELS: dict[str, Model] = {
    # SwinIR-light x2 with 2 blocks per group instead of 6 (one shifted, one not).
    "SwinIR-light": Model("swinir.yaml", "SwinIR", {"depth": 2}, _swinir(2), 64, 1),
    # NAFNet-SIDD's layout (2, 2, 4, 8 / 12 / 2, 2, 2, 2 blocks) at width 16 instead of 32.
    "NAFNet-w16": Model("nafnet.yaml", "NAFNet", {"width": 16}, _nafnet(16), 64, 2),
}


def build(model: Model) -> nn.Module:
    import engine

    spec = Path(tempfile.mkdtemp(prefix="loom-bench-")) / "zoo.yaml"
    spec.write_text(
        f"spec: 1\nname: zoo\nimports: [lib/{model.library}]\nnetworks:\n"
        f"  G: {{use: {model.block}, params: {json.dumps(model.params)}}}\n",
        encoding="utf-8",
    )
    return engine.build(spec)["G"]


def step(net: nn.Module, x: torch.Tensor) -> float:
    start = time.perf_counter()
    net(x).square().mean().backward()
    return time.perf_counter() - start


def measure(name: str, model: Model, rounds: int) -> None:
    loom = build(model).train()
    ref = model.reference().train()
    ref.load_state_dict(loom.state_dict())
    x = torch.rand(
        model.batch, 3, model.size, model.size, generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        ref.eval(), loom.eval()
        diff = float((loom(x) - ref(x)).abs().max())
        ref.train(), loom.train()
    for _ in range(2):  # warm-up: allocator, caches, the size guard's first check
        step(loom, x), step(ref, x)
    ratios, times = [], {"loom": [], "spandrel": []}
    gc.disable()
    try:
        for r in range(rounds):
            order = [("loom", loom), ("spandrel", ref)]
            if r % 2:
                order.reverse()
            got = {who: step(net, x) for who, net in order}
            for who, t in got.items():
                times[who].append(t)
            ratios.append(got["loom"] / got["spandrel"])
            loom.zero_grad(set_to_none=True), ref.zero_grad(set_to_none=True)
    finally:
        gc.enable()
    q = statistics.quantiles(ratios, n=4)
    print(
        f"{name}: batch {model.batch}, {model.size}×{model.size}, {torch.get_num_threads()} "
        f"threads, {rounds} rounds; max |Δ| of outputs {diff:.2e}; median step "
        f"{statistics.median(times['loom']) * 1e3:.1f} ms (Loom) / "
        f"{statistics.median(times['spandrel']) * 1e3:.1f} ms (spandrel); ratio median "
        f"{statistics.median(ratios):.3f} (quartiles {q[0]:.3f}–{q[2]:.3f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=sorted(MODELS), action="append")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    for name in args.only or MODELS:
        measure(name, MODELS[name], args.rounds)


if __name__ == "__main__":
    main()

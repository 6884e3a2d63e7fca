"""SRFlow: the compiled flow against a hand-written SRFlow with the same weights.

``specs/srflow.yaml`` at full size (nf 64, 23 RRDBs, K 16, hidden 64) is compiled and
loaded with the weights of ``benchmarks/reference_srflow.py`` (SRFlow written by hand
in plain PyTorch, SRFlow's own layout, through the key map the spec documents), after
a training-mode forward initialized the reference's actnorms and a small perturbation
moved the zero-started convs off zero. Measured on this machine's CPU:

1. outputs: z, z1, logdet of the forward and the image of the reverse (from the
   forward's z and z1), compiled vs reference, max abs difference;
2. time of the forward (z, z1 and the log-determinant, no grad) and of the reverse (no
   grad): rounds of one call of the compiled network, the reference and a control (a
   second copy of the reference, whose ratio to the first shows the noise floor), the
   order going through all permutations, garbage collection off while timing; the
   median of the per-round ratios compiled / reference (target ≤ 1.05).

``--clock cpu`` times by the process's CPU time (a machine shared with other jobs; use
it with ``--threads 1``).

Run: python benchmarks/bench_srflow.py [--lr-size 16] [--batch 1] [--rounds 12]
                                       [--threads 2] [--clock wall|cpu]
"""

from __future__ import annotations

import argparse
import copy
import gc
import itertools
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from reference_srflow import SRFlowNet, ZeroConv2d  # noqa: E402

SPEC = ROOT / "specs" / "srflow.yaml"
#: specs/srflow.yaml's key map for SRFlow's own checkpoint: the SR head and ``f``, which
#: the flow never reads, are left out.
SRFLOW_KEY_MAP = [
    ("RRDB.upconv2", None),
    ("RRDB.HRconv", None),
    ("RRDB.conv_last", None),
    ("flowUpsamplerNet.f", None),
]


def networks(lr_size: int, batch: int) -> tuple[nn.Module, SRFlowNet]:
    """The compiled G and the reference, with the same (trained-looking) weights."""
    import engine
    from engine.compile.weights import load_weights

    torch.manual_seed(0)
    reference = SRFlowNet()
    hr = torch.rand(batch, 3, 4 * lr_size, 4 * lr_size)
    lr = torch.rand(batch, 3, lr_size, lr_size)
    reference.train()
    with torch.no_grad():
        reference(hr, lr)  # the actnorms initialize, as on a first training batch
        g = torch.Generator().manual_seed(1)
        for module in reference.modules():
            if isinstance(module, ZeroConv2d):  # off zero: every coupling does something
                for p in module.parameters():
                    p.add_(1e-3 * torch.randn(p.shape, generator=g))
    reference.eval()
    compiled = engine.build(SPEC, [f"data.train.crop_size={4 * lr_size}"])["G"]
    load_weights(compiled, reference.state_dict(), strict=True, key_map=SRFLOW_KEY_MAP)
    compiled.eval()
    return compiled, reference


def race(calls: dict[str, Callable[[], object]], rounds: int, clock: str) -> dict[str, list[float]]:
    """Times of each call over ``rounds``, the order cycling through all permutations."""
    tick = time.perf_counter if clock == "wall" else time.process_time
    orders = list(itertools.permutations(calls))
    for fn in calls.values():  # warm-up: allocator, kernels
        fn()
    times: dict[str, list[float]] = {name: [] for name in calls}
    gc.collect()
    gc.disable()
    try:
        for i in range(rounds):
            for name in orders[i % len(orders)]:
                start = tick()
                calls[name]()
                times[name].append(tick() - start)
    finally:
        gc.enable()
    return times


def median_ratio(a: list[float], b: list[float]) -> float:
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def report(title: str, times: dict[str, list[float]]) -> None:
    median = {name: statistics.median(t) for name, t in times.items()}
    ratios = [x / y for x, y in zip(times["loom"], times["reference"], strict=True)]
    q1, _, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
    print(title)
    print(
        f"  medians: compiled {median['loom']:.3f}s, reference {median['reference']:.3f}s, "
        f"control {median['control']:.3f}s"
    )
    print(
        f"  median ratio compiled / reference {statistics.median(ratios):.3f} "
        f"(quartiles {q1:.3f}–{q3:.3f}; control / reference "
        f"{median_ratio(times['control'], times['reference']):.3f}) (target ≤ 1.05)"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr-size", type=int, default=16, help="LR side (HR is 4x)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    args = parser.parse_args()
    if args.lr_size % 2:
        parser.error("--lr-size must be even: the flow squeezes the HR image three times")
    torch.set_num_threads(args.threads)
    compiled, reference = networks(args.lr_size, args.batch)
    control = copy.deepcopy(reference)
    torch.manual_seed(2)
    hr = torch.rand(args.batch, 3, 4 * args.lr_size, 4 * args.lr_size)
    lr = torch.rand(args.batch, 3, args.lr_size, args.lr_size)
    with torch.no_grad():
        z, z1, logdet = reference(hr, lr)
        out = compiled(hr=hr, lr=lr)
        back = reference.reverse(lr, z, z1)
        back_compiled = compiled(lr=lr, z=z, z1=z1, reverse=True)["hr"]
    print(
        f"SRFlow x4 (nf 64, nb 23, K 16, hidden 64), CPU, {args.threads} thread(s), batch "
        f"{args.batch}, LR {args.lr_size}x{args.lr_size} (HR {4 * args.lr_size}), "
        f"{args.rounds} rounds, {args.clock} clock"
    )
    print(
        "  compiled vs reference, max abs difference: "
        f"z {(out['z'] - z).abs().max():.2e}, z1 {(out['z1'] - z1).abs().max():.2e}, "
        f"logdet {(out['logdet'] - logdet).abs().max():.2e} (of {logdet.abs().max():.0f}), "
        f"reverse {(back_compiled - back).abs().max():.2e}; "
        f"reverse(forward(hr)) - hr {(back - hr).abs().max():.2e}"
    )

    def forward(net: nn.Module) -> Callable[[], object]:
        if isinstance(net, SRFlowNet):
            return lambda: net(hr, lr)
        return lambda: net(hr=hr, lr=lr)

    def reverse(net: nn.Module) -> Callable[[], object]:
        if isinstance(net, SRFlowNet):
            return lambda: net.reverse(lr, z, z1)
        return lambda: net(lr=lr, z=z, z1=z1, reverse=True)

    nets = {"loom": compiled, "reference": reference, "control": control}
    with torch.no_grad():
        for title, make in (("forward (z, z1, logdet)", forward), ("reverse", reverse)):
            times = race({name: make(net) for name, net in nets.items()}, args.rounds, args.clock)
            report(title, times)


if __name__ == "__main__":
    main()

"""The compiled ESRGAN generator against a hand-written module with the same weights.

Measures, on this machine's CPU:

1. outputs equal (max abs difference, target ≤ 1e-6);
2. forward + backward step time, compiled / hand-written, median of interleaved runs
   in one process (target ≤ 1.02);
3. peak memory of one forward + backward, each in its own fresh process, as the rise
   of the peak resident set over the resident set just before the step (target:
   compiled within 5% of hand-written — the compiled graph frees every intermediate
   after its last use, so it must not hold activations longer);
4. the time to compile the spec in a process where torch is already imported: the
   first build (which also pays torch's one-time lazy imports of its meta-tensor
   kernels) and a second build.

Run: python benchmarks/bench_compile.py [--size 16] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
SPEC = ROOT / "specs" / "esrgan.yaml"


def networks():  # type: ignore[no-untyped-def]
    import torch
    from reference_esrgan import HandRRDBNet

    import engine

    torch.manual_seed(0)
    compiled = engine.build(SPEC)["G"]
    hand = HandRRDBNet()
    hand.load_state_dict(compiled.state_dict(), strict=True)
    return compiled, hand


def step(net, x, target) -> None:  # type: ignore[no-untyped-def]
    import torch.nn.functional as F

    net.zero_grad(set_to_none=True)
    F.l1_loss(net(x), target).backward()


def timing(size: int, repeats: int) -> dict[str, float]:
    import torch

    torch.set_num_threads(torch.get_num_threads())
    compiled, hand = networks()
    torch.manual_seed(1)
    x = torch.rand(1, 3, size, size)
    target = torch.rand(1, 3, size * 4, size * 4)
    with torch.no_grad():
        diff = (compiled(x) - hand(x)).abs().max().item()
    step(compiled, x, target)
    step(hand, x, target)  # warm-up
    times: dict[str, list[float]] = {"compiled": [], "hand": []}
    for i in range(repeats):
        order = [("compiled", compiled), ("hand", hand)]
        for name, net in order if i % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            step(net, x, target)
            times[name].append(time.perf_counter() - start)
    ratios = [c / h for c, h in zip(times["compiled"], times["hand"], strict=True)]
    return {
        "max_abs_diff": diff,
        "compiled_s": statistics.median(times["compiled"]),
        "hand_s": statistics.median(times["hand"]),
        "ratio": statistics.median(ratios),
    }


def rss_kb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() // 1024


def memory_child(which: str, size: int) -> None:
    import torch

    compiled, hand = networks()
    net = compiled if which == "compiled" else hand
    del compiled, hand
    torch.manual_seed(1)
    x = torch.rand(1, 3, size, size)
    target = torch.rand(1, 3, size * 4, size * 4)
    before = rss_kb()
    step(net, x, target)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"rise_mb": (peak - before) / 1024}))


def memory(size: int) -> dict[str, float]:
    found = {}
    for which in ("compiled", "hand"):
        out = subprocess.run(
            [sys.executable, __file__, "--memory-child", which, "--size", str(size)],
            check=True,
            capture_output=True,
            text=True,
        )
        found[which] = json.loads(out.stdout.strip().splitlines()[-1])["rise_mb"]
    found["ratio"] = found["compiled"] / found["hand"]
    return found


def compile_time() -> dict[str, float]:
    code = (
        f"import time, torch, sys; sys.path.insert(0, {str(ROOT)!r}); import engine; "
        f"t = time.perf_counter(); engine.build({str(SPEC)!r}); a = time.perf_counter() - t; "
        f"t = time.perf_counter(); engine.build({str(SPEC)!r}); b = time.perf_counter() - t; "
        "print(a, b)"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    first, second = map(float, out.stdout.split())
    return {"first_build_s": first, "second_build_s": second}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=16, help="LR input size for timing")
    parser.add_argument("--memory-size", type=int, default=48, help="LR input size for memory")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--memory-child", choices=["compiled", "hand"])
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.size)
        return
    t = timing(args.size, args.repeats)
    m = memory(args.memory_size)
    c = compile_time()
    print(f"ESRGAN x4 generator (nf 64, nb 23), CPU, LR {args.size}x{args.size}, batch 1")
    print(f"  outputs: max abs diff {t['max_abs_diff']:.2e} (target ≤ 1e-6)")
    print(
        f"  fwd+bwd: compiled {t['compiled_s']:.3f}s, hand-written {t['hand_s']:.3f}s, "
        f"median ratio {t['ratio']:.3f} (target ≤ 1.02)"
    )
    print(
        f"  peak memory rise, LR {args.memory_size}x{args.memory_size}: compiled "
        f"{m['compiled']:.0f} MB, hand-written {m['hand']:.0f} MB, ratio {m['ratio']:.3f} "
        "(target ≤ 1.05)"
    )
    print(
        f"  compile (torch imported): first build {c['first_build_s']:.2f}s, "
        f"second build {c['second_build_s']:.2f}s (target ≤ 1 s)"
    )


if __name__ == "__main__":
    main()

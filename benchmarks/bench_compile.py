"""The compiled ESRGAN generator against a hand-written module with the same weights.

Measures, on this machine's CPU:

1. outputs equal (max abs difference, target ≤ 1e-6);
2. forward + backward step time, compiled / hand-written: in one process with one
   thread count, rounds of one step of each network and of a control (an identical
   copy of the hand-written module, whose ratio shows the noise floor), the order
   going through all permutations, garbage collection off while timing; the median
   of the per-round ratios, with quartiles and range, and the ratio of the lower
   quartiles of the step times (target: median ≤ 1.02);
3. peak memory of one forward + backward, each network in its own fresh process: the
   rise of the peak resident set over the resident set just before the first step,
   and the peak of live tensors during a second step, from the profiler's allocation
   events op by op (repeatable; the resident set also moves with what malloc keeps
   or hands back, by tens of MB from run to run) (target:
   compiled within 5% of hand-written — the compiled graph frees every intermediate
   after its last use, so it must not hold activations longer);
4. in fresh processes: ``import torch``, then ``import engine``, then the first build of
   the spec (which also imports the compiler and the blocks) and a second build
   (target: first build ≤ 1 s); medians and ranges over ``--compile-runs`` processes.

Timings on a shared machine scatter: run it several times and note the load average.

Run: python benchmarks/bench_compile.py [--size 16] [--rounds 36] [--threads N]
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

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


def spread(values: list[float]) -> dict[str, float]:
    """Median, quartiles and extremes."""
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return {"median": median, "q1": q1, "q3": q3, "min": min(values), "max": max(values)}


def timing(size: int, rounds: int, threads: int) -> dict[str, Any]:
    """Steps of the compiled network, the hand-written one and an identical copy of the
    hand-written one (the control: its ratio is the noise floor), one step of each per
    round, in an order that goes through all six permutations."""
    import torch
    from reference_esrgan import HandRRDBNet

    torch.set_num_threads(threads)  # the same for all, and stated in the output
    compiled, hand = networks()
    control = HandRRDBNet()
    control.load_state_dict(hand.state_dict(), strict=True)
    nets = {"compiled": compiled, "hand": hand, "control": control}
    torch.manual_seed(1)
    x = torch.rand(1, 3, size, size)
    target = torch.rand(1, 3, size * 4, size * 4)
    with torch.no_grad():
        diff = (compiled(x) - hand(x)).abs().max().item()
    for _ in range(2):  # warm-up: allocator, first calls of the kernels
        for net in nets.values():
            step(net, x, target)
    orders = list(itertools.permutations(nets))
    times: dict[str, list[float]] = {name: [] for name in nets}
    gc.collect()
    gc.disable()
    try:
        for i in range(rounds):
            for name in orders[i % len(orders)]:
                start = time.perf_counter()
                step(nets[name], x, target)
                times[name].append(time.perf_counter() - start)
    finally:
        gc.enable()
    hand_q1 = quartile(times["hand"])
    return {
        "max_abs_diff": diff,
        "threads": threads,
        "median_s": {name: statistics.median(t) for name, t in times.items()},
        "ratio": spread(ratios(times["compiled"], times["hand"])),
        "control": spread(ratios(times["control"], times["hand"])),
        # Contention only adds time: the faster steps show the work done.
        "lower_quartile_ratio": quartile(times["compiled"]) / hand_q1,
        "control_lower_quartile_ratio": quartile(times["control"]) / hand_q1,
    }


def quartile(values: list[float]) -> float:
    return statistics.quantiles(values, n=4, method="inclusive")[0]


def ratios(a: list[float], b: list[float]) -> list[float]:
    """Per round: the steps of one round ran next to each other."""
    return [x / y for x, y in zip(a, b, strict=True)]


def rss_kb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() // 1024


def memory_child(which: str, size: int) -> None:
    import torch
    from torch.profiler import ProfilerActivity, profile

    compiled, hand = networks()
    net = compiled if which == "compiled" else hand
    del compiled, hand
    torch.manual_seed(1)
    x = torch.rand(1, 3, size, size)
    target = torch.rand(1, 3, size * 4, size * 4)
    before = rss_kb()
    step(net, x, target)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step(net, x, target)
    found = {"rise_mb": (peak - before) / 1024, "tensor_peak_mb": tensor_peak(prof) / 2**20}
    print(json.dumps(found))


def tensor_peak(prof: Any) -> int:
    """Peak bytes of live tensors during a profiled step: each op's net allocation, in
    the order the ops started (repeatable, unlike the resident set, which also counts
    what malloc keeps or returns to the system)."""
    events = sorted(prof.events(), key=lambda e: (e.time_range.start, -e.time_range.end))
    live = peak = 0
    for e in events:
        live += e.cpu_memory_usage if e.name == "[memory]" else e.self_cpu_memory_usage
        peak = max(peak, live)
    return peak


def memory(size: int) -> dict[str, dict[str, float]]:
    found: dict[str, dict[str, float]] = {}
    for which in ("compiled", "hand"):
        out = subprocess.run(
            [sys.executable, __file__, "--memory-child", which, "--size", str(size)],
            check=True,
            capture_output=True,
            text=True,
        )
        found[which] = json.loads(out.stdout.strip().splitlines()[-1])
    return found


COMPILE_CHILD = """
import sys, time
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
sys.path.insert(0, {root!r})
import engine
t2 = time.perf_counter()
engine.build({spec!r})
t3 = time.perf_counter()
engine.build({spec!r})
t4 = time.perf_counter()
print(t1 - t0, t2 - t1, t3 - t2, t4 - t3)
"""


def compile_time(runs: int) -> dict[str, dict[str, float]]:
    code = COMPILE_CHILD.format(root=str(ROOT), spec=str(SPEC))
    found: dict[str, list[float]] = {"torch": [], "engine": [], "first": [], "second": []}
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", code], check=True, capture_output=True, text=True
        )
        for key, value in zip(found, map(float, out.stdout.split()), strict=True):
            found[key].append(value)
    return {
        key: {"median": statistics.median(v), "min": min(v), "max": max(v)}
        for key, v in found.items()
    }


def main() -> None:
    import torch

    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=16, help="LR input size for timing")
    parser.add_argument("--memory-size", type=int, default=48, help="LR input size for memory")
    parser.add_argument("--rounds", type=int, default=36, help="rounds of one step each")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--compile-runs", type=int, default=5, help="fresh processes")
    parser.add_argument("--memory-child", choices=["compiled", "hand"])
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.size)
        return
    load = os.getloadavg()
    t = timing(args.size, args.rounds, args.threads)
    m = memory(args.memory_size)
    c = compile_time(args.compile_runs)
    print(f"ESRGAN x4 generator (nf 64, nb 23), CPU, LR {args.size}x{args.size}, batch 1")
    print(f"  load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"  outputs: max abs diff {t['max_abs_diff']:.2e} (target ≤ 1e-6)")
    med = t["median_s"]
    print(
        f"  fwd+bwd, {t['threads']} threads, {args.rounds} rounds: median step compiled "
        f"{med['compiled']:.3f}s, hand-written {med['hand']:.3f}s, control {med['control']:.3f}s"
    )
    for key, label in [("ratio", "compiled / hand-written"), ("control", "control / hand-written")]:
        r = t[key]
        print(
            f"    {label}: median {r['median']:.3f}, quartiles {r['q1']:.3f}–{r['q3']:.3f}, "
            f"range {r['min']:.3f}–{r['max']:.3f}"
        )
    print(
        f"    lower-quartile step times, over hand-written's: compiled "
        f"{t['lower_quartile_ratio']:.3f}, control {t['control_lower_quartile_ratio']:.3f} "
        "(target: compiled / hand-written median ≤ 1.02)"
    )
    rise = m["compiled"]["rise_mb"] / m["hand"]["rise_mb"]
    peak = m["compiled"]["tensor_peak_mb"] / m["hand"]["tensor_peak_mb"]
    print(
        f"  memory of one step, LR {args.memory_size}x{args.memory_size}, own process each "
        "(target: compiled ≤ 1.05 × hand-written):"
    )
    print(
        f"    peak resident set rise: compiled {m['compiled']['rise_mb']:.0f} MB, hand-written "
        f"{m['hand']['rise_mb']:.0f} MB, ratio {rise:.3f}"
    )
    print(
        f"    peak of live tensors: compiled {m['compiled']['tensor_peak_mb']:.1f} MB, "
        f"hand-written {m['hand']['tensor_peak_mb']:.1f} MB, ratio {peak:.3f}"
    )
    print(f"  fresh processes ({args.compile_runs}), median (range):")
    for key, label in [
        ("torch", "import torch"),
        ("engine", "then import engine"),
        ("first", "then first build of specs/esrgan.yaml (target ≤ 1 s)"),
        ("second", "then second build"),
    ]:
        v = c[key]
        print(f"    {label}: {v['median']:.2f}s ({v['min']:.2f}–{v['max']:.2f})")


if __name__ == "__main__":
    main()

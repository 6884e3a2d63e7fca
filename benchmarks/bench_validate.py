"""How fast is validation?  Two measurements, printed as a table.

1. Cold ``python cli.py validate specs/esrgan.yaml`` — a fresh interpreter each time,
   as an editor hook or pre-commit runs it (median of 5). Target: ≤ 0.5 s.
2. Expansion plus every check of a 10,000-node network, in process, after a warm-up
   (median of 5). Target: ≤ 1 s. The reference in the same run is a bare
   ``networkx`` build of a graph of the same size, to show what the checks add.

Run: python benchmarks/bench_validate.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BIG_SPEC = """
spec: 1
name: big
blocks:
  Unit:
    params: {nf: 8}
    inputs: [x]
    nodes:
      a: {block: conv, in: x, out: $nf, act: lrelu}
      b: {block: conv, in: [x, a], out: $nf}
      out: {block: residual, in: [x, b], scale: 0.2}
    output: out
networks:
  G:
    inputs: {x: 3}
    nodes:
      head: {block: conv, in: x, out: 8}
      body: {block: Unit, in: head, repeat: REPEAT}
      tail: {block: conv, in: body, out: 3}
    outputs: {y: tail}
graph:
  y: {call: G, in: data.lr}
  pix: {loss: l1, in: [y.y, data.hr]}
optimizers:
  G: {type: adam, params: G, lr: 1.0e-4}
train:
  iterations: 10
  phases:
    - {name: main, steps: [{optimizer: G, minimize: {pix: 1.0}}]}
data:
  train: {type: sr, hr: "builtin:photos"}
"""


def median_time(fn, runs: int = 5) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cold_validate() -> float:
    spec = ROOT / "specs" / "esrgan.yaml"
    command = [sys.executable, str(ROOT / "cli.py"), "validate", str(spec)]
    subprocess.run(command, check=True, capture_output=True)  # warm the OS file cache
    return median_time(lambda: subprocess.run(command, check=True, capture_output=True))


def big_graph(nodes: int = 10_000) -> tuple[int, float, float]:
    import networkx as nx

    from engine.load import check_spec

    repeat = (nodes - 3) // 3
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "big.yaml"
        path.write_text(BIG_SPEC.replace("REPEAT", str(repeat)), encoding="utf-8")
        spec, diags = check_spec(path)
        assert spec is not None, [str(d) for d in diags]
        count = spec.networks["G"].graph.number_of_nodes()
        checked = median_time(lambda: check_spec(path))

    def bare() -> None:
        g = nx.DiGraph()
        for i in range(count):
            g.add_node(i, block="conv")
            if i:
                g.add_edge(i - 1, i)

    return count, checked, median_time(bare)


def main() -> None:
    cold = cold_validate()
    count, checked, bare = big_graph()
    print(f"{'measurement':<52} {'value':>10} {'target':>8}")
    print(f"{'cold validate specs/esrgan.yaml (median of 5)':<52} {cold:>9.3f}s {'0.5s':>8}")
    print(f"{f'expand + check {count} nodes (median of 5)':<52} {checked:>9.3f}s {'1.0s':>8}")
    print(f"{'  reference: bare networkx build, same size':<52} {bare:>9.3f}s")
    print(f"{'  ratio checked / bare':<52} {checked / bare:>9.1f}x")


if __name__ == "__main__":
    main()

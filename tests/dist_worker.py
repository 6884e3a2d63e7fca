"""Run by tests/test_distributed.py under torchrun: train a spec on synthetic data.

Each process writes its final weights to OUT/rank<R>.pt, so the test can check that
the ranks agree with each other and with a single-process run.
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_train import SyntheticSR

from engine import load_spec
from engine.train.runner import run


def main() -> None:
    spec_path, out = Path(sys.argv[1]), Path(sys.argv[2])
    overrides = sys.argv[3:]
    result = run(
        load_spec(spec_path, overrides),
        out=out / "run",
        stream=io.StringIO(),
        live=False,
        datasets={"train": SyntheticSR(n=32)},
    )
    rank = int(os.environ.get("RANK", "0"))
    torch.save({n: m.state_dict() for n, m in result.networks.items()}, out / f"rank{rank}.pt")


if __name__ == "__main__":
    main()

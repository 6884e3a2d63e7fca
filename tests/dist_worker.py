"""Run by tests/test_distributed.py under torchrun: train a spec on synthetic data.

Each process writes its final weights to OUT/rank<R>.pt, so the test can check that
the ranks agree with each other and with a single-process run, and OUT/rank<R>.history.pt:
the weights as each phase began (``phases``), how many times each actnorm layer ran
its data-dependent initialization (``actnorm_inits``, by qualified name) and, for the
first one, the statistics of this process's own batch and the values it set
(``actnorm_first``: mean, square, bias, logs, scale).
"""

from __future__ import annotations

import io
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_train import SyntheticSR

from blocks.builtin.flow import _ActNormCore
from engine import load_spec
from engine.compile.network import unwrap
from engine.train.runner import Trainer, run


def record(phases: dict[str, Any], inits: Counter[int], first: dict[int, Any]) -> None:
    """Snapshot the weights when a phase begins; count real actnorm initializations."""
    enter_phase, initialize = Trainer.enter_phase, _ActNormCore._initialize

    def entering(self: Trainer, phase: Any) -> None:
        phases[phase.name] = {
            n: {k: v.detach().clone() for k, v in unwrap(m).state_dict().items()}
            for n, m in self.networks.items()
        }
        enter_phase(self, phase)

    def initializing(self: _ActNormCore, x: torch.Tensor) -> None:
        # The shape pass runs on meta tensors, which never initialize.
        meta = "meta" in (x.device.type, self.initialized.device.type)
        if meta or bool(self.initialized):
            initialize(self, x)
            return
        local = x.detach()
        mean, square = (
            local.mean(dim=(0, 2, 3), keepdim=True),
            (local**2).mean(dim=(0, 2, 3), keepdim=True),
        )
        initialize(self, x)
        if bool(self.initialized):
            inits[id(self)] += 1
            first.setdefault(id(self), {
                "mean": mean, "square": square, "scale": self.scale,
                "bias": self.bias.detach().clone(), "logs": self.logs.detach().clone(),
            })  # fmt: skip

    Trainer.enter_phase = entering  # type: ignore[method-assign]
    _ActNormCore._initialize = initializing  # type: ignore[method-assign]


def main() -> None:
    spec_path, out = Path(sys.argv[1]), Path(sys.argv[2])
    overrides = sys.argv[3:]
    spec = load_spec(spec_path, overrides)
    phases: dict[str, Any] = {}
    inits: Counter[int] = Counter()
    first: dict[int, Any] = {}
    record(phases, inits, first)
    # Synthetic pairs at the spec's crop size and scale.
    size = spec.data["data"]["train"]["crop_size"]
    result = run(
        spec,
        out=out / "run",
        stream=io.StringIO(),
        live=False,
        datasets={"train": SyntheticSR(n=32, size=size, scale=spec.data["scale"])},
    )
    rank = int(os.environ.get("RANK", "0"))
    torch.save({n: m.state_dict() for n, m in result.networks.items()}, out / f"rank{rank}.pt")
    actnorms = {
        f"{n}.{qualified}": id(module)
        for n, m in result.networks.items()
        for qualified, module in m.named_modules()
        if isinstance(module, _ActNormCore)
    }
    history = {
        "phases": phases,
        "actnorm_inits": {name: inits[key] for name, key in actnorms.items()},
        "actnorm_first": {name: first[key] for name, key in actnorms.items() if key in first},
    }
    torch.save(history, out / f"rank{rank}.history.pt")


if __name__ == "__main__":
    main()

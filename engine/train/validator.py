"""A validation round: run the training graph on the validation set, compute the
metrics against their baseline, save samples, and keep the best values.

The baseline is what the model must beat: bicubic upscaling of its input for SR
(``val/psnr_bicubic``), the degraded input itself for restoration at 1x
(``val/psnr_input``), where bicubic would mean nothing, and the mean of the two input
frames for frame interpolation (``val/psnr_average``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine.data.kinds import KINDS
from engine.load import Spec
from engine.settings import LOWER_IS_BETTER, ValidationSettings
from engine.settings.run import heat_label
from engine.train.program import Program
from engine.train.validate import Baseline, Tiled, evaluate

#: The suffixes of baseline metrics (``psnr_bicubic``, ``psnr_input``): not "best" values.
BASELINE_KEYS = ("_bicubic", "_input", "_average")
#: Values that are neither better higher nor lower: no "best" is kept for them. The
#: diversity of an output's samples (engine/train/heats.py), and the count of its draws
#: that were not finite.
UNRANKED_KEYS = ("diversity_", "nonfinite_samples")


def baseline_of(scale: int, dataset: Any) -> Baseline | None:
    """``average`` of the input frames for frame interpolation (``interp``); ``input``
    for a 1x dataset with an LR side (restoration: ``sr`` at scale 1, its
    LR the degraded HR), ``bicubic`` above 1x; image-to-image types get neither, since
    their input is another kind of image. A dataset not made from a data section (a
    test's own) gets ``bicubic`` above 1x and nothing at 1x."""
    opts = getattr(dataset, "opts", None)
    kind = KINDS.get(getattr(opts, "kind", None) or "")
    if kind is not None and kind.name == "interp":
        return "average"  # frame interpolation: the mean of the two input frames
    if opts is not None and (kind is None or not kind.scaled):
        return None
    if scale > 1:
        return "bicubic"
    return "input" if kind is not None else None


class Validator:
    def __init__(
        self,
        spec: Spec,
        settings: ValidationSettings,
        dataset: Any,
        sample_dir: Path,
        *,
        multiple: Callable[[], int],
        autocast: Callable[[], AbstractContextManager[Any]],
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.spec = spec
        self.settings = settings
        self.dataset = dataset
        self.sample_dir = sample_dir
        self.multiple = multiple
        self.autocast = autocast
        self.warn = warn  # the run log's warnings (non-finite draws)
        self.best: dict[str, float] = {}

    def output_at(self, iteration: int) -> str:
        """The graph output validated after ``iteration`` iterations: the
        ``validation.output`` of the phase that ran the last of them, else the
        section's own. PPON's phases each train another output; validating a branch
        that has not trained yet would report noise."""
        train = self.spec.settings.train
        if train is not None and train.phases and iteration > 0:
            chosen = train.phase_at(iteration - 1).validation_output
            if chosen is not None:
                return chosen
        return self.settings.output

    def __call__(
        self,
        iteration: int,
        networks: dict[str, nn.Module],
        ops: dict[str, nn.Module],
        losses: dict[str, nn.Module],
        device: torch.device,
    ) -> dict[str, float]:
        """The metrics at ``iteration`` (networks as given: EMA copies where there are)."""
        s = self.settings
        modules = [*networks.values(), *ops.values()]
        modes = [m.training for m in modules]  # frozen networks and EMA copies stay in eval
        for module in modules:
            module.eval()
        if s.tile:
            networks = {
                n: Tiled(m, int(s.tile), multiple=self.multiple()).eval()
                for n, m in networks.items()
            }
        program = Program(self.spec.training, networks, ops, losses, {}, autocast=self.autocast)

        output = self.output_at(iteration)

        def run_graph(
            batch: dict[str, torch.Tensor], targets: list[str], heat: float | None = None
        ) -> dict[str, Any]:
            program.heats = {} if heat is None else {output.split(".")[0]: heat}
            program.start_iteration(batch)
            plan = program.plan("validation", dict.fromkeys(targets, 1.0), frozenset())
            plan.weights = {}
            program.run_step(0, [plan])
            return {n: e.outputs for n, e in program.cache.items()}

        def batches() -> Iterator[dict[str, torch.Tensor]]:
            for i in range(len(self.dataset)):
                yield {k: v[None].to(device) for k, v in self.dataset[i].items()}

        try:
            values = evaluate(
                run_graph,
                batches(),
                output=output,
                target=s.target,
                source=s.input,
                metrics=list(s.metrics),
                crop=self.spec.settings.scale if s.crop_border is None else int(s.crop_border),
                y_channel=s.y_channel,
                samples=s.samples,
                sample_dir=self.sample_dir,
                iteration=iteration,
                baseline=baseline_of(self.spec.settings.scale, self.dataset),
                heats=s.heats,
                n_sample=s.n_sample,
            )
        finally:
            for module, mode in zip(modules, modes, strict=True):
                module.train(mode)
        self._warn_nonfinite(iteration, values)
        for key, value in values.items():
            if key.startswith(UNRANKED_KEYS) or key.endswith(BASELINE_KEYS):
                continue  # baselines do not improve; a diversity is not better either way
            if math.isfinite(value):
                better = min if key in LOWER_IS_BETTER else max
                self.best[key] = better(self.best.get(key, value), value)
        return values

    def _warn_nonfinite(self, iteration: int, values: dict[str, float]) -> None:
        """Once per validation: how many draws were NaN or inf, and at which heats none
        was finite (SRFlow's early reverse samples: it shrinks as training goes on)."""
        bad = int(values.get("nonfinite_samples", 0))
        if not bad or self.warn is None:
            return
        s = self.settings
        drawn = len(self.dataset) * len(s.heats) * s.n_sample
        lost = [f"{h:g}" for h in s.heats if math.isnan(values.get(f"psnr_{heat_label(h)}", 0.0))]
        self.warn(
            f"validation at iteration {iteration}: {bad} of {drawn} draws "
            f"(validation.heats × n_sample) had NaN or inf values; they are left out of "
            "psnr_heat and diversity_heat"
            + (
                f", and no draw at heat {', '.join(lost)} was finite (logged as nan)"
                if lost
                else ""
            )
        )

"""What both readers share: numbers as the peers write them, schedules, reasons.

traiNNer and BasicSR files write iterations as ``5e5`` (a float, or with PyYAML a
string) and learning rates as ``!!float 1e-4``; :func:`number` reads all of them.
Restart schedules are given as the iterations where a restart happens; Loom's are the
lengths of the cycles, so :func:`restart_schedule` converts and says when it cannot.
"""

from __future__ import annotations

import importlib.util
import itertools
import re
from typing import Any

from engine.importer.plan import Plan
from engine.importer.source import OptionFile
from engine.spec.yamlio import Path

#: Options that Loom has no use for, with the reason a user reads in the report.
REASONS: dict[str, str] = {
    "gpu_ids": "Loom chooses devices itself; run on several with `accelerate launch`",
    "num_gpu": "Loom chooses devices itself; run on several with `accelerate launch`",
    "dist_params": "distributed runs are started with `accelerate launch` or `torchrun`",
    "root": "the run folder is `python cli.py run SPEC --out DIR`",
    "use_shuffle": "Loom always shuffles the training data",
    "znorm": "Loom's images are in [0, 1]; its networks are written for that range",
    "phase": "Loom knows train and val datasets by their section",
    "overwrite_chkp": "checkpoints.keep says how many checkpoints are kept",
    "overwrite_val_imgs": "validation samples are written per round under RUN/samples/",
    "val_comparison": "validation samples are always input | output | target",
    "display_freq": "Loom shows progress every logging.every iterations",
    "prefetch_mode": "Loom's loader prefetches by itself",
    "pin_memory": "Loom's loader decides pinning itself",
    "persistent_workers": "Loom's loader decides this itself",
    "dataset_enlarge_ratio": "Loom counts iterations, not epochs",
    "filename_tmpl": "Loom matches LR and HR files by stem (DIV2K's x4 suffix included)",
    "io_backend": "Loom reads image folders",
    "color": "Loom has no colour-space conversion of datasets (channels: 1 gives gray)",
    "color_LR": "Loom has no colour-space conversion of datasets",
    "color_HR": "Loom has no colour-space conversion of datasets",
    "fast_matmul": "use train.tf32 for TF32 matmuls on CUDA",
    "save_checkpoint_format": "Loom saves safetensors and .pth exports at every checkpoint",
    "save_img": "validation writes validation.samples images per round",
    "wandb": "trackers are not imported; see logging in docs/settings.md",
    "use_swa": "stochastic weight averaging is not in Loom (train.ema is)",
    "name_suffix": "not used by Loom",
    "hr_rrot": "rotations by any angle are not in Loom's data pipeline (rotate: 90° steps)",
    "use_hrrot": "rotations by any angle are not in Loom's data pipeline (rotate: 90° steps)",
    "lr_blur": "on-the-fly augmentations are not imported; write them as data.train.degradations",
    "lr_noise": "on-the-fly augmentations are not imported; write them as data.train.degradations",
    "lr_noise2": "on-the-fly augmentations are not imported; write them as data.train.degradations",
    "hr_noise": "noise on the HR target is not in Loom's data pipeline",
    "aug_downscale": "Loom makes LR images on the fly only without LR folders",
    "use_cem": "CEM is not in Loom",
    "use_atg": "AdaTarget is not in Loom",
    "mixup": "batch augmentations (mixup, cutmix) are not in Loom",
    "use_moa": "batch augmentations (MoA) are not in Loom",
    "diffaug": "differentiable augmentation is not in Loom",
}

#: Options the peers switch off with ``false`` that need no mapping when off; a
#: ``false`` of any other key is also nothing to carry, unless it has a reason above.
KEPT_WHEN_FALSE = {"use_shuffle"}

GENERIC = "not mapped: the importer knows no Loom equivalent (see docs/import.md)"


PREFIXES = {"swa_": "use_swa", "atg_": "use_atg", "mix": "mixup", "moa_": "use_moa"}


def reason_for(path: Path) -> str:
    for part in reversed(path):
        if isinstance(part, str) and part in REASONS:
            return REASONS[part]
    last = str(path[-1]) if path else ""
    for prefix, key in PREFIXES.items():
        if last.startswith(prefix):
            return REASONS[key]
    return GENERIC


def number(value: Any) -> float | None:
    """A number as the peers write it: 1e-4, "1e-4", 5e5; None if it is not one."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and re.fullmatch(
        r"\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*", value
    ):
        return float(value)
    return None


def take_number(opts: OptionFile, path: Path, default: float | None = None) -> float | None:
    value = opts.get(*path)
    if value is None:
        return default
    found = number(value)
    if found is None:
        raise opts.fail(path, f"expected a number, got {value!r}")
    opts.take(*path)
    return found


def take_int(opts: OptionFile, path: Path, default: int | None = None) -> int | None:
    found = take_number(opts, path, None if default is None else float(default))
    if found is None:
        return None
    if not float(found).is_integer():
        raise opts.fail(path, f"expected a whole number, got {found!r}")
    return int(found)


def number_list(opts: OptionFile, path: Path) -> list[float] | None:
    value = opts.get(*path)
    if value is None:
        return None
    items = value if isinstance(value, list) else [value]
    found = [number(v) for v in items]
    if any(f is None for f in found):
        raise opts.fail(path, f"expected a list of numbers, got {value!r}")
    opts.take(*path)
    return [float(f) for f in found if f is not None]


def iterations_list(values: list[float]) -> list[int | float]:
    """Milestones as written: fractions stay fractions, iterations become ints."""
    return [int(v) if v > 1 or (float(v).is_integer() and v > 1) else v for v in values]


def restart_schedule(
    opts: OptionFile,
    at: Path,
    *,
    kind: str,
    total: int,
    milestones: list[float],
    restarts: list[float],
    weights: list[float],
    gamma: float | None,
    eta_min: float | None = None,
    periods: list[float] | None = None,
) -> dict[str, Any]:
    """A Loom restart schedule from absolute restart points (or cosine periods)."""
    if periods is None:
        points = [0, *(int(r if r > 1 else r * total) for r in restarts), total]
        periods = [b - a for a, b in itertools.pairwise(points)]
    lengths = [int(p if p > 1 else p * total) for p in periods]
    out: dict[str, Any] = {"type": kind, "periods": lengths}
    if weights:
        full = [1.0, *weights] if len(weights) == len(lengths) - 1 else list(weights)
        if len(full) != len(lengths):
            opts.skip(at, f"{len(weights)} restart weights for {len(lengths)} cycles; weights 1")
        else:
            out["restart_weights"] = full
    if kind == "multistep_restarts":
        offsets = [sum(lengths[:i]) for i in range(len(lengths))]
        absolute = [int(m if m > 1 else m * total) for m in milestones]
        per_cycle = [
            sorted(m - off for m in absolute if off <= m < off + length)
            for off, length in zip(offsets, lengths, strict=True)
        ]
        out["milestones"] = per_cycle[0]
        if any(c != per_cycle[0] for c in per_cycle[1:]):
            opts.note(
                at,
                "the milestones differ between restart cycles; Loom repeats the first "
                f"cycle's ({per_cycle[0]}) in each",
            )
        if gamma is not None:
            out["gamma"] = gamma
    if eta_min is not None:
        out["eta_min"] = eta_min
    return out


def tensorboard_installed() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


def take_logger(opts: OptionFile, plan: Plan, tensorboard: Path) -> None:
    """The ``logger`` keys both families share (print and checkpoint intervals) and the
    TensorBoard switch, which sits at ``tensorboard`` (BasicSR nests it in ``logger``,
    traiNNer keeps it at the top)."""
    every = take_int(opts, ("logger", "print_freq"))
    if every:
        plan.logging["every"] = every
    save = take_int(opts, ("logger", "save_checkpoint_freq"))
    if save:
        plan.checkpoints["every"] = save
    if not opts.get(*tensorboard):
        return
    if tensorboard_installed():
        opts.take(*tensorboard)
        plan.logging["tensorboard"] = True
    else:
        opts.skip(
            tensorboard,
            "logging.tensorboard needs the tensorboard package (pip install tensorboard), "
            "then set logging.tensorboard: true",
        )


PREPROCESS = {
    "none",
    "crop",
    "center_crop",
    "resize",
    "scale_width",
    "scale_shortside",
    "resize_and_crop",
    "scale_width_and_crop",
    "scale_shortside_and_crop",
    "scale_shortside_and_center_crop",
    "scale_width_and_center_crop",
    "resize_and_center_crop",
}


def name_of(raw: Any, fallback: str) -> str:
    """A spec name from the experiment's: letters, digits and ``_ . -`` only."""
    text = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(raw or fallback)).strip("_.-")
    return text or fallback

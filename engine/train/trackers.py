"""Experiment trackers: TensorBoard, Weights & Biases, MLflow and Aim, through Accelerate.

``logging.trackers: [tensorboard, wandb, ...]`` hands each of them what the run folder
already holds: every scalar written to ``metrics.jsonl`` (``loss/*``, ``lr/*``,
``val/*``, at the same iteration), the resolved spec as the run's configuration
(flattened to dotted keys, ``optimizers.G.lr``), and the sample images of each
validation round (``samples/iter_N_i.png``: input | output | target; a sampled output's
grid of heats, ``samples/iter_N_i_heats.png``, too).

Where they write: TensorBoard into ``RUN/trackers/<spec name>/`` (so ``tensorboard
--logdir runs`` shows every run), Aim its repository in ``RUN/trackers``, Weights &
Biases its local files in ``RUN/trackers`` (project: the spec's name, run: the run
folder's name; ``WANDB_MODE=offline`` works as usual), MLflow wherever
``MLFLOW_TRACKING_URI`` points (default ``./mlruns``), the samples as artifacts.

Nothing here is imported by a run without trackers, and this module imports no
tracker at load time: ``validate`` and the settings use :func:`missing_package`,
which only looks for the package.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

#: A validation sample (``iter_N_i.png``) or a sampled output's grid of heats
#: (``iter_N_i_heats.png``, engine/train/heats.py); tagged ``samples/i``, ``samples/i_heats``.
_SAMPLE = re.compile(r"iter_\d+_(\d+)(_heats)?\.png")

#: The package each tracker needs, and the pyproject extra that installs it.
PACKAGES: dict[str, tuple[str, str]] = {
    "tensorboard": ("tensorboard", "trackers"),
    "wandb": ("wandb", "wandb"),
    "mlflow": ("mlflow", "mlflow"),
    "aim": ("aim", "aim"),
}
#: The folder of the run that trackers writing local files use.
FOLDER = "trackers"


def missing_package(name: str) -> str | None:
    """What to install for tracker ``name``, in a sentence; None when it is installed."""
    package, extra = PACKAGES[name]
    if importlib.util.find_spec(package) is not None:
        return None
    return (
        f"{name} needs the {package} package, which is not installed: pip install "
        f"{package} (or the extra: pip install 'loom[{extra}]')"
    )


def logging_dir(run_dir: Path) -> Path:
    return run_dir / FOLDER


def flat_config(data: Any, prefix: str = "") -> dict[str, str | int | float | bool]:
    """The resolved spec as one level of dotted keys, as trackers take a configuration:
    numbers, strings and booleans stay what they are; lists and nulls become JSON text
    (TensorBoard's hyper-parameters and MLflow's parameters hold scalars only)."""
    if isinstance(data, dict):
        flat: dict[str, str | int | float | bool] = {}
        for key, value in data.items():
            flat.update(flat_config(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    if isinstance(data, bool | int | float | str):
        return {prefix or "value": data}
    return {prefix or "value": json.dumps(data, default=str)}


def init_kwargs(run_dir: Path) -> dict[str, dict[str, Any]]:
    """What each tracker is started with besides the project name (the spec's name)."""
    folder = str(logging_dir(run_dir))
    return {
        "wandb": {"dir": folder, "name": run_dir.name},
        "mlflow": {"run_name": run_dir.name},
    }


class Trackers:
    """The run's trackers, started with the resolved spec as their configuration."""

    def __init__(self, accelerator: Any, run_dir: Path, name: str, config: dict[str, Any]) -> None:
        self.accelerator = accelerator
        self.sample_dir = run_dir / "samples"
        logging_dir(run_dir).mkdir(parents=True, exist_ok=True)
        accelerator.init_trackers(
            name, config=flat_config(config), init_kwargs=init_kwargs(run_dir)
        )
        for tracker in accelerator.trackers:
            if tracker.name == "tensorboard":  # the spec as written text, beside the hparams
                text = json.dumps(config, indent=2, default=str)
                tracker.writer.add_text("spec", "    " + text.replace("\n", "\n    "), 0)

    @property
    def names(self) -> list[str]:
        return [str(t.name) for t in self.accelerator.trackers]

    def log(self, values: dict[str, float], step: int) -> None:
        """Scalars at an iteration, as metrics.jsonl has them."""
        if values:
            self.accelerator.log(values, step=step)

    def samples(self, iteration: int) -> list[Path]:
        """Send the sample images of the validation round at ``iteration``; the files
        sent, in order."""
        named: list[tuple[tuple[int, bool], str, Path]] = []
        for path in self.sample_dir.glob(f"iter_{iteration:08d}_*.png"):
            match = _SAMPLE.fullmatch(path.name)
            if match is not None:  # sample i, then its heats grid
                order = (int(match[1]), match[2] is not None)
                named.append((order, f"samples/{match[1]}{match[2] or ''}", path))
        named.sort()
        tags, paths = [t for _, t, _ in named], [p for *_, p in named]
        if not paths:
            return []
        import numpy as np
        from PIL import Image

        images = []
        for path in paths:
            with Image.open(path) as opened:
                images.append(np.asarray(opened.convert("RGB")))
        for tracker in self.accelerator.trackers:
            if tracker.name == "tensorboard":
                for tag, array in zip(tags, images, strict=True):
                    tracker.writer.add_image(tag, array, iteration, dataformats="HWC")
                tracker.writer.flush()
            elif tracker.name == "wandb":
                tracker.log_images({"samples": images}, step=iteration)
            elif tracker.name == "aim":
                for tag, array in zip(tags, images, strict=True):
                    tracker.log_images({tag: array}, iteration)
            elif tracker.name == "mlflow":
                for path in paths:
                    tracker.log_artifact(str(path), artifact_path="samples")
        return paths


def start(accelerator: Any, run_dir: Path, name: str, config: dict[str, Any]) -> Trackers | None:
    """The run's trackers, or None when the spec asks for none (or on other processes:
    only the main process reports)."""
    if not accelerator.log_with or not accelerator.is_main_process:
        return None
    return Trackers(accelerator, run_dir, name, config)

"""Settings every test runs under.

Tests never download: ``LOOM_OFFLINE=1`` is set before any test module is imported
(subprocesses inherit it), so a feature network whose weights are not in the cache
fails with Loom's offline message instead of fetching them. tests/test_download.py
proves no request is made, and serves its own files from 127.0.0.1.
"""

import os
import shutil
from pathlib import Path

os.environ["LOOM_OFFLINE"] = "1"

import pytest
import torch

from engine.apply.source import Model, open_model
from engine.train.state import export_networks

QUICKSTART = Path(__file__).resolve().parents[1] / "specs" / "quickstart.yaml"


def randomize(net: torch.nn.Module, seed: int = 0) -> None:
    """Small random weights everywhere, so that outputs depend on every one."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A quick-start run folder holding one export, as the trainer writes it."""
    run = tmp_path_factory.mktemp("run")
    shutil.copy(QUICKSTART, run / "spec.resolved.yaml")
    model = open_model(QUICKSTART, need_weights=False)
    randomize(model.module)
    export_networks(run / "models", {"G": model.module}, 8)
    return run


@pytest.fixture(scope="module")
def model(run_dir: Path) -> Model:
    """The quick-start run's model, opened as infer and export open it."""
    return open_model(run_dir)

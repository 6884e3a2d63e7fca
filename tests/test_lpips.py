"""LPIPS as a validation metric: 0 for the same image, growing with noise, computed in
[-1, 1] from the wheel's linear heads and a backbone found through engine.hub; lower is
better for best-tracking. Tests never download: the backbone is written here, random."""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path

import pytest
import torch

from engine import load_spec
from engine.metrics import METRICS
from engine.metrics import lpips as metric
from engine.spec.diagnostics import SpecError
from engine.train import validator as validator_module

#: torchvision AlexNet's ``features`` convolutions: (out, in, kernel).
ALEXNET_CONVS = {
    0: (64, 3, 11),
    3: (192, 64, 5),
    6: (384, 192, 3),
    8: (256, 384, 3),
    10: (256, 256, 3),
}
QUICKSTART = Path(__file__).resolve().parents[1] / "specs" / "quickstart.yaml"


def write_alexnet(torch_home: Path) -> Path:
    """A random AlexNet trunk in torchvision's layout where torch.hub caches it (only
    ``features``: LPIPS reads nothing else, and the classifier would be 230 MB)."""
    gen = torch.Generator().manual_seed(0)
    state = {}
    for index, (out, inp, k) in ALEXNET_CONVS.items():
        fan_in = inp * k * k
        state[f"features.{index}.weight"] = torch.randn(out, inp, k, k, generator=gen) * math.sqrt(
            2 / fan_in
        )
        state[f"features.{index}.bias"] = torch.zeros(out)
    path = torch_home / "hub" / "checkpoints" / metric.ALEXNET_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("torch_home")
    write_alexnet(home)
    return home


@pytest.fixture
def backbone(torch_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    return torch_home


def test_lpips_is_zero_for_the_same_image_and_grows_with_noise(backbone: Path) -> None:
    gen = torch.Generator().manual_seed(1)
    image = torch.nn.functional.interpolate(torch.rand(2, 3, 12, 12, generator=gen), size=64)
    assert METRICS["lpips"] is metric.lpips
    assert metric.lpips(image, image) == 0.0
    scores = [
        metric.lpips((image + s * torch.randn(image.shape, generator=gen)).clamp(0, 1), image)
        for s in (0.02, 0.08, 0.3)
    ]
    assert 0 < scores[0] < scores[1] < scores[2], scores
    # Gray images are compared as RGB; the border crop applies; y_channel does not.
    gray = image[:, :1]
    assert metric.lpips(gray, gray, crop=4) == 0.0
    flipped = image.flip(-1)
    assert metric.lpips(image, flipped, y_channel=True) == metric.lpips(image, flipped)
    # The network is the package's LPIPS with the wheel's v0.1 heads and our trunk, and
    # sees the images in [-1, 1]: its own normalize=True path gives the same value.
    net = metric.network(torch.device("cpu"))
    heads = torch.load(metric.heads_file(), map_location="cpu", weights_only=True)
    assert torch.equal(net.state_dict()["lin0.model.1.weight"], heads["lin0.model.1.weight"])
    trunk = torch.load(backbone / "hub" / "checkpoints" / metric.ALEXNET_FILE, weights_only=True)
    assert torch.equal(net.state_dict()["net.slice2.3.weight"], trunk["features.3.weight"])
    noisy = (image + 0.1 * torch.randn(image.shape, generator=gen)).clamp(0, 1)
    with torch.no_grad():
        expected = float(net(noisy, image, normalize=True).mean())
    assert metric.lpips(noisy, image) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="at least 31×31"):
        metric.lpips(image[..., :20, :20], image[..., :20, :20])


def test_a_missing_backbone_offline_stops_the_run_at_start_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine.train.runner import prepare

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    assert os.environ["LOOM_OFFLINE"] == "1"
    with pytest.raises(metric.LpipsError) as caught:
        metric.prepare()
    message = str(caught.value)
    assert metric.ALEXNET_FILE in message and "LOOM_OFFLINE" in message
    assert str(tmp_path / "empty" / "hub" / "checkpoints") in message
    spec = load_spec(QUICKSTART, ["validation.metrics=[psnr, lpips]", "networks.G.params.nf=4"])
    with pytest.raises(SpecError) as refused:
        prepare(spec, tmp_path / "run", live=False, data=False)
    [error] = refused.value.diagnostics.errors
    assert error.loc is not None and error.loc.file == "<override validation.metrics=[psnr, lpips]>"
    assert "validation.metrics: LPIPS's AlexNet backbone weights are missing" in error.message


def test_best_lpips_is_the_lowest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = load_spec(QUICKSTART, ["validation.metrics=[psnr, lpips]"])
    rounds = iter(
        [
            {"psnr": 20.0, "lpips": 0.30, "psnr_bicubic": 25.0, "lpips_bicubic": 0.1},
            {"psnr": 22.0, "lpips": 0.40, "psnr_bicubic": 25.0, "lpips_bicubic": 0.1},
            {"psnr": 21.0, "lpips": 0.20, "psnr_bicubic": 25.0, "lpips_bicubic": 0.1},
        ]
    )
    monkeypatch.setattr(validator_module, "Program", lambda *a, **k: None)
    monkeypatch.setattr(validator_module, "evaluate", lambda *a, **k: next(rounds))
    assert spec.settings.validation is not None
    validator = validator_module.Validator(
        spec, spec.settings.validation, [], tmp_path,
        multiple=lambda: 1, autocast=contextlib.nullcontext,
    )  # fmt: skip
    for iteration in (1, 2, 3):
        validator(iteration, {}, {}, {}, torch.device("cpu"))
    assert validator.best == {"psnr": 22.0, "lpips": 0.20}  # baselines are not "best"

"""LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a
Perceptual Metric") as a validation metric, through the ``lpips`` package.

Two parts, found in two places:

* the linear heads calibrated on human judgements ship inside the ``lpips`` wheel
  (``lpips/weights/v0.1/alex.pth``) and are read from there;
* the backbone is torchvision's ImageNet AlexNet, which the package would have
  torchvision download behind the user's back. Loom fetches it through
  :mod:`engine.hub` instead, exactly like VGG19 for the perceptual loss: torch's hub
  cache, downloaded on first use with its hash checked, never when ``LOOM_OFFLINE=1``
  (a missing file is then an error naming it and where to put it).

Both files are read by Loom's weights reader, so no pickled code runs. The network is
AlexNet because the LPIPS authors recommend it as the forward metric (and it is the
package's default); LPIPS is lower for images closer to each other, 0 for the same.
Images in [0, 1] are mapped to the [-1, 1] the metric was calibrated in; LPIPS is
always computed on RGB (``y_channel`` only concerns PSNR and SSIM), gray images are
repeated to three channels.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine import hub

#: torchvision's ImageNet AlexNet, as torch.hub names it in its cache.
ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
ALEXNET_URL = f"https://download.pytorch.org/models/{ALEXNET_FILE}"
#: What to install when the package is missing (pyproject's ``lpips`` extra).
INSTALL = "pip install lpips (or the extra: pip install 'loom[lpips]')"

# Built once per backbone file and device: validation calls the metric per image.
_BUILT: dict[tuple[str, int, str], nn.Module] = {}


class LpipsError(Exception):
    """LPIPS cannot be computed: the package or a weights file is missing or unusable."""


def missing_package() -> str | None:
    """What is missing for LPIPS, in a sentence with the fix; None when it can run.
    Torch-free, so ``validate`` can tell before any run."""
    for module in ("lpips", "torchvision"):
        if importlib.util.find_spec(module) is None:
            return f"LPIPS needs the {module} package, which is not installed: {INSTALL}"
    return None


def backbone_file() -> Path:
    """The AlexNet weights in torch's hub cache, downloaded there on first use."""
    try:
        return hub.cached(ALEXNET_URL)
    except hub.Offline as exc:
        raise LpipsError(f"LPIPS's AlexNet backbone weights are missing: {exc}") from None
    except hub.DownloadError as exc:
        raise LpipsError(f"LPIPS's AlexNet backbone weights: {exc}") from None


def heads_file() -> Path:
    """The v0.1 AlexNet linear heads inside the installed ``lpips`` package."""
    problem = missing_package()
    if problem is not None:
        raise LpipsError(problem)
    spec = importlib.util.find_spec("lpips")
    assert spec is not None and spec.origin is not None
    path = Path(spec.origin).parent / "weights" / "v0.1" / "alex.pth"
    if not path.is_file():
        raise LpipsError(f"the lpips package has no linear heads at {path}; reinstall it")
    return path


def _read(path: Path, what: str) -> dict[str, torch.Tensor]:
    from engine.compile.weights import WeightsError, read_state_dict

    try:
        return read_state_dict(path)
    except WeightsError as exc:
        raise LpipsError(f"LPIPS's {what}: {exc}") from None


def build(backbone: Path, heads: Path) -> nn.Module:
    """The LPIPS network with its heads and backbone loaded, frozen, in eval mode."""
    import lpips as lpips_package

    with warnings.catch_warnings():  # the package asks torchvision in its old words
        warnings.simplefilter("ignore", UserWarning)
        net: nn.Module = lpips_package.LPIPS(
            pretrained=False, net="alex", pnet_rand=True, verbose=False
        )
    own = net.state_dict()
    trunk = _read(backbone, f"backbone {backbone}")
    # The package splits torchvision's ``features`` into slices and keeps each layer's
    # index: ``net.slice2.3.weight`` is torchvision's ``features.3.weight``.
    state: dict[str, torch.Tensor] = {}
    for key in own:
        if key.startswith("net.slice"):
            source = "features." + key.split(".", 2)[2]
            if source not in trunk or trunk[source].shape != own[key].shape:
                raise LpipsError(
                    f"{backbone} is not torchvision's AlexNet: {source} is missing or "
                    "has another shape"
                )
            state[key] = trunk[source]
    for key, value in _read(heads, f"linear heads {heads}").items():
        if key not in own or own[key].shape != value.shape:
            raise LpipsError(f"{heads} does not hold LPIPS's AlexNet heads ({key})")
        state[key] = value
        state[key.replace("lin", "lins.", 1)] = value  # the same layers, listed again
    left = [k for k in own if k not in state and not k.startswith("scaling_layer.")]
    if left:
        raise LpipsError(f"LPIPS's weights leave {left[:3]} unset")
    net.load_state_dict(state, strict=False)  # the scaling layer's constants are built in
    net.requires_grad_(False)
    return net.eval()


def network(device: torch.device) -> nn.Module:
    """The LPIPS network on ``device``, built on first use (and again when the backbone
    file changes)."""
    backbone = backbone_file()
    key = (str(backbone), backbone.stat().st_mtime_ns, str(device))
    if key not in _BUILT:
        _BUILT[key] = build(backbone, heads_file()).to(device)
    return _BUILT[key]


def prepare() -> None:
    """Find (or fetch) everything LPIPS needs now, so that a run stops at start-up and
    not at its first validation, thousands of iterations in."""
    network(torch.device("cpu"))


def lpips(
    pred: torch.Tensor, target: torch.Tensor, *, crop: int = 0, y_channel: bool = False
) -> float:
    """LPIPS between images in [0, 1] (mean over the batch); lower is closer."""
    del y_channel  # LPIPS sees RGB: its backbone was trained on colour images
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    net = network(pred.device)
    pred, target = (_as_input(x, crop) for x in (pred, target))
    try:
        with torch.no_grad():
            value: Any = net(pred, target)
    except RuntimeError as exc:
        if "too small" in str(exc) or "can't be greater" in str(exc):
            raise ValueError(
                f"LPIPS (AlexNet) needs images of at least 31×31 pixels after the border crop; "
                f"these are {tuple(pred.shape[-2:])}"
            ) from None
        raise
    return float(value.mean())


def _as_input(img: torch.Tensor, crop: int) -> torch.Tensor:
    """[0, 1] images as LPIPS takes them: RGB in [-1, 1], border cropped."""
    img = img.float().clamp(0, 1)
    if crop:
        img = img[..., crop:-crop, crop:-crop]
    if img.shape[1] == 1:
        img = img.expand(-1, 3, -1, -1)
    elif img.shape[1] != 3:
        raise ValueError(f"LPIPS compares RGB or gray images, not {img.shape[1]} channels")
    return img * 2 - 1

"""A frozen VGG19 feature trunk for perceptual losses, in torchvision's key layout.

The trunk is built here (no torchvision dependency) with the module indices of
torchvision's ``vgg19().features`` so its state dicts load as they are
(``features.0.weight`` … ``features.34.bias``). ``weights: imagenet`` reads torchvision's
file from torch's hub cache and downloads it there on first use, hash checked
(:mod:`engine.hub`; never with ``LOOM_OFFLINE=1``); a file path is read as it is, and
``random`` is for tests and demos. Files are read by Loom's own reader, so a damaged
or code-carrying file is refused in Loom's words.
"""

from __future__ import annotations

import difflib
import os
import warnings
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

import torch
from torch import nn

from blocks.memo import shared
from blocks.registry import ParamError, ParamFileNotFound
from engine import hub

#: torchvision's ImageNet VGG19 weights, as torch.hub names them in its cache.
IMAGENET_FILE = "vgg19-dcbb9e9d.pth"
IMAGENET_URL = f"https://download.pytorch.org/models/{IMAGENET_FILE}"

# Output channels of each conv, "M" for a 2×2 max pool: VGG19's configuration "E".
_CONFIG: tuple[int | str, ...] = (
    *(64, 64, "M"),
    *(128, 128, "M"),
    *(256, 256, 256, 256, "M"),
    *(512, 512, 512, 512, "M"),
    *(512, 512, 512, 512, "M"),
)


def _layer_names() -> list[str]:
    """The name of each module of ``features``, in order: conv1_1, relu1_1, …, pool5."""
    names: list[str] = []
    stage, conv = 1, 1
    for item in _CONFIG:
        if item == "M":
            names.append(f"pool{stage}")
            stage, conv = stage + 1, 1
        else:
            names += [f"conv{stage}_{conv}", f"relu{stage}_{conv}"]
            conv += 1
    return names


#: Index in ``features`` of every named layer (conv5_4 → 34, relu5_4 → 35, pool5 → 36).
VGG19_LAYERS: dict[str, int] = {name: i for i, name in enumerate(_layer_names())}

#: A VGG19 layer name, as a type: schemas list every name, so ``validate`` catches typos.
#: Spelled out (a type checker cannot read a Literal built at run time); the check
#: below keeps it equal to the names derived from the configuration.
VGGLayer = Literal[
    "conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1",
    "conv2_1", "relu2_1", "conv2_2", "relu2_2", "pool2",
    "conv3_1", "relu3_1", "conv3_2", "relu3_2", "conv3_3", "relu3_3", "conv3_4", "relu3_4",
    "pool3",
    "conv4_1", "relu4_1", "conv4_2", "relu4_2", "conv4_3", "relu4_3", "conv4_4", "relu4_4",
    "pool4",
    "conv5_1", "relu5_1", "conv5_2", "relu5_2", "conv5_3", "relu5_3", "conv5_4", "relu5_4",
    "pool5",
]  # fmt: skip
if get_args(VGGLayer) != tuple(VGG19_LAYERS):
    raise AssertionError("VGGLayer no longer lists VGG19's layers in order; update it")

#: ImageNet statistics torchvision's VGG was trained with (inputs in [0, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def layer_index(name: str) -> int:
    """The ``features`` index of a layer name, with a did-you-mean error."""
    try:
        return VGG19_LAYERS[name]
    except KeyError:
        close = difflib.get_close_matches(name, VGG19_LAYERS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(
            f"unknown VGG19 layer {name!r}{hint}; layers are conv1_1 … conv5_4, "
            "relu1_1 … relu5_4 and pool1 … pool5"
        ) from None


def _build_features(depth: int) -> nn.Sequential:
    """The first ``depth`` modules of VGG19's ``features``."""
    layers: list[nn.Module] = []
    ch = 3
    for item in _CONFIG:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            # Not in-place (unlike torchvision): a tap before a ReLU must keep its value.
            layers += [nn.Conv2d(ch, int(item), 3, padding=1), nn.ReLU()]
            ch = int(item)
    return nn.Sequential(*layers[:depth])


@dataclass
class _Trace:
    """How far a trunk has run on one input inside a step memo."""

    input: torch.Tensor
    outputs: dict[int, torch.Tensor] = field(default_factory=dict)  # kept taps
    last: int = -1  # index of the last layer run; -1: only the normalized input
    value: torch.Tensor | None = None  # the output of layer ``last``


class VGG19Features(nn.Module):
    """Frozen VGG19 ``features``, truncated after the deepest requested layer.

    ``forward`` returns the requested layers' outputs by name, for inputs in [0, 1]
    (normalized with ImageNet's statistics first when ``normalize`` is true). The
    module stays in eval mode and its parameters never require gradients (inputs still
    get gradients).

    Inside a step memo (:mod:`blocks.memo`), trunks holding the same weights share
    their work on the same input tensor: a second loss asking for features of the
    generator's output reuses the first one's, and one asking for deeper layers goes on
    from where the first stopped.
    """

    mean: torch.Tensor  # buffers, declared for the type checker
    std: torch.Tensor

    def __init__(self, layers: list[str], *, normalize: bool = False) -> None:
        super().__init__()
        self.taps = {layer_index(name): name for name in layers}
        self.features = _build_features(max(self.taps) + 1)
        self.normalize = normalize
        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        self.register_buffer("mean", mean.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", std.view(1, 3, 1, 1), persistent=False)
        # What the weights are (set by load_weights): trunks with equal sources hold
        # equal weights, so they may share features. None: never shared.
        self.source: Hashable | None = None
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGG19Features:
        # A feature extractor: a parent's .train() must not switch it.
        return super().train(False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        trace = self._trace(x)
        if any(i not in trace.outputs for i in self.taps):
            if min(i for i in self.taps if i not in trace.outputs) <= trace.last:
                trace.last, trace.value = -1, None  # a layer already passed: run again
            self._run(trace)
        return {name: trace.outputs[i] for i, name in self.taps.items()}

    def _trace(self, x: torch.Tensor) -> _Trace:
        memo = shared()
        if memo is None or self.source is None:
            return _Trace(x)
        key = ("vgg19", self.source, self.normalize, id(x), x._version, torch.is_grad_enabled())
        trace = memo.get(key)
        if trace is None or trace.input is not x:
            trace = memo[key] = _Trace(x)
        return trace

    def _run(self, trace: _Trace) -> None:
        if trace.value is None:
            x = trace.input
            trace.value = (x - self.mean) / self.std if self.normalize else x
        deepest = max(self.taps)
        for i in range(trace.last + 1, deepest + 1):
            trace.value = self.features[i](trace.value)
            if i in self.taps:
                trace.outputs[i] = trace.value
        trace.last = deepest

    def load_weights(self, weights: str) -> None:
        """Load "imagenet" (torch's hub cache), a file path, or "random" weights: a
        fixed He initialization (torchvision's, drawn from seed 0) — features of a
        sensible scale that mean nothing, for tests and demos only."""
        if weights == "random":
            warnings.warn(
                "VGG19 weights are RANDOM (weights: random): perceptual features are "
                "meaningless; use this for tests and demos only",
                stacklevel=3,
            )
            _random_init(self.features)
            self.source = ("random",)
            return
        path = _imagenet_file() if weights == "imagenet" else Path(weights).expanduser()
        if not path.is_file():
            raise ParamFileNotFound("weights", _missing_message(weights, path))
        state = _read_state_dict(path)
        needed = self.state_dict().keys()
        missing = [key for key in needed if key not in state]
        if missing:
            raise ParamError(
                "weights",
                f"{path} is not a torchvision VGG19 state dict: it lacks {missing[:3]}"
                f"{' …' if len(missing) > 3 else ''}",
            )
        # The file holds the whole network (deeper layers, classifier); take our part.
        self.load_state_dict({key: state[key] for key in needed})
        stat = path.stat()
        self.source = ("file", str(path.resolve()), stat.st_mtime_ns, stat.st_size)


def _random_init(features: nn.Sequential) -> None:
    """torchvision's VGG initialization, drawn from a fixed seed so that every random
    trunk holds the same weights (and may share features)."""
    generator = torch.Generator().manual_seed(0)
    for layer in features:
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(
                layer.weight, mode="fan_out", nonlinearity="relu", generator=generator
            )
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


def imagenet_path() -> Path:
    """Where torch.hub caches torchvision's VGG19 weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / IMAGENET_FILE


def _imagenet_file() -> Path:
    """torchvision's VGG19 file in torch's hub cache, downloaded there when missing;
    the cache path itself when it cannot be had (offline, or the download failed)."""
    try:
        return hub.cached(IMAGENET_URL)
    except hub.Offline:
        return imagenet_path()
    except hub.DownloadError as exc:
        raise ParamFileNotFound("weights", f"VGG19 ImageNet weights: {exc}") from None


def _missing_message(weights: str, path: Path) -> str:
    if weights == "imagenet":
        switch = next((v for v in hub.OFFLINE_VARIABLES if os.environ.get(v)), "LOOM_OFFLINE")
        return (
            f"VGG19 ImageNet weights not found: expected {path}. Downloads are off "
            f"({switch}), and offline Loom never downloads; put torchvision's "
            f"{IMAGENET_FILE} ({IMAGENET_URL}) in {path.parent}, or unset {switch} to "
            "download it on first use, or set the loss's weights to a file path, or to "
            "random for tests and demos"
        )
    return (
        f"VGG19 weights file not found: {path}. Give a torchvision-layout VGG19 file, "
        "weights: imagenet (torch's hub cache), or weights: random for tests and demos"
    )


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors only, through Loom's reader: pickled code in the file is never executed,
    and an empty, damaged or unsafe file is refused naming the file and why."""
    from engine.compile.weights import WeightsError, read_state_dict

    try:
        return read_state_dict(path)
    except WeightsError as exc:
        raise ParamError("weights", str(exc)) from None

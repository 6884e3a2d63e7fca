"""Invertible blocks of normalizing flows (Glow, SRFlow).

Each block is a bijection with an exact inverse and a cheap log-determinant:

    forward(x, [cond]) -> (y, logdet)          logdet: one number per sample, (N,)
    reverse(y, [cond]) -> x

``flow_split`` also hands out the half it splits off, as a latent normalized by its
learned prior: ``forward`` gives ``(kept, z, logdet)`` and ``reverse(kept, [cond],
z=None, heat=1.0)`` draws ``z`` from N(0, heat²) when none is given.

A network that declares ``flow: INPUT`` strings these blocks along INPUT; the compiler
sums their log-determinants into the network's ``logdet`` output and writes the
reverse program (:mod:`engine.compile.flow`). The layouts are SRFlow's
(``actnorm.bias``/``logs``, ``invconv.weight``, ``affine.fAffine.N``,
``affine.fFeatures.N``, a split's ``conv``), so its checkpoints load unchanged; the one
key Loom adds, an actnorm's ``initialized`` flag, counts as set when a file without it
is loaded (it was trained).
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from blocks.registry import Range, register

Positive = Annotated[int, Range(ge=1)]
LOG_2PI = math.log(2 * math.pi)


def _per_sample(value: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A log-determinant the same for every sample, as one number per sample."""
    return value.expand(x.shape[0])


def _sum_per_sample(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).sum(1)


def _pixels(x: torch.Tensor) -> int:
    return int(x.shape[2] * x.shape[3])


def gaussian_logp(
    z: torch.Tensor, mean: torch.Tensor | None = None, logs: torch.Tensor | None = None
) -> torch.Tensor:
    """log N(z; mean, exp(logs)²) summed per sample (standard normal without them)."""
    if mean is None or logs is None:
        return _sum_per_sample(-0.5 * (z**2 + LOG_2PI))
    return _sum_per_sample(-0.5 * (2 * logs + (z - mean) ** 2 * torch.exp(-2 * logs) + LOG_2PI))


class _ActNormCore(nn.Module):
    """y = (x + bias) · exp(logs) per channel, bias and logs set from the first training
    batch so that y has zero mean and unit variance per channel (data-dependent
    initialization). The ``initialized`` buffer is saved, so a resumed run does not
    initialize again; under torch.distributed the batch statistics are averaged over
    the processes, so every replica starts from the same values."""

    initialized: torch.Tensor

    def __init__(self, channels: int, scale: float = 1.0) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.logs = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.scale = float(scale)
        self.register_buffer("initialized", torch.tensor(False))
        self._ready = False  # a Python copy of the flag: no device sync per call

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and not self._ready:
            self._initialize(x)
        return (x + self.bias) * torch.exp(self.logs)

    def denormalize(self, y: torch.Tensor) -> torch.Tensor:
        return y * torch.exp(-self.logs) - self.bias

    def _initialize(self, x: torch.Tensor) -> None:
        if x.device.type == "meta" or x.numel() == 0:
            return
        if bool(self.initialized):
            self._ready = True
            return
        with torch.no_grad():
            mean = x.mean(dim=(0, 2, 3), keepdim=True)
            square = (x**2).mean(dim=(0, 2, 3), keepdim=True)
            if dist.is_available() and dist.is_initialized():
                both = torch.cat([mean, square])
                dist.all_reduce(both)
                mean, square = (both / dist.get_world_size()).chunk(2)
            std = (square - mean**2).clamp_min(0).sqrt()
            self.bias.copy_(-mean)
            self.logs.copy_(torch.log(self.scale / (std + 1e-6)))
            self.initialized.fill_(True)
        self._ready = True

    def implied_state(self, state: dict[str, Any], prefix: str) -> None:
        """A file without the flag (SRFlow's own) holds trained values: initialized."""
        flag = prefix + "initialized"
        if flag not in state and prefix + "bias" in state:
            state[flag] = torch.tensor(True)

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # (load_state_dict hands every module its own copy of the dict.)
        self.implied_state(state_dict, prefix)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        self._ready = bool(self.initialized) if self.initialized.device.type != "meta" else False


@register("actnorm", inputs=("x",), invertible=True)
class ActNorm(_ActNormCore):
    """Activation normalization (Glow): a per-channel affine map, initialized from the
    first training batch so that its output has zero mean and unit variance.

    Invertible; log-determinant H·W·Σ logs. ``bias`` and ``logs`` are (1, C, 1, 1), as
    in SRFlow's and Glow's checkpoints.

    Args:
        scale: the standard deviation the first batch is normalized to.
    """

    def __init__(self, *, in_ch: int, scale: Annotated[float, Range(gt=0)] = 1.0) -> None:
        super().__init__(in_ch, scale)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.normalize(x)
        return y, _per_sample(self.logs.sum() * _pixels(x), x)

    def reverse(self, y: torch.Tensor) -> torch.Tensor:
        return self.denormalize(y)


@register("invconv", inputs=("x",), invertible=True)
class InvConv1x1(nn.Module):
    """Invertible 1×1 convolution (Glow): a learned C×C channel mixing, started from a
    random rotation (the Q of a QR decomposition).

    Log-determinant H·W·log|det W|. The plain form keeps ``weight`` (C, C), SRFlow's
    layout; ``lu: true`` keeps W = P·L·(U + diag(sign·exp(log_s))) with P fixed, so the
    determinant costs nothing (``p``, ``sign_s``, ``lower``, ``upper``, ``log_s``, as
    Glow's LU form names them).

    Args:
        lu: the LU-decomposed form.
    """

    p: torch.Tensor
    sign_s: torch.Tensor
    l_mask: torch.Tensor
    eye: torch.Tensor

    def __init__(self, *, in_ch: int, lu: bool = False) -> None:
        super().__init__()
        w = torch.linalg.qr(torch.randn(in_ch, in_ch))[0]
        self.lu = lu
        if not lu:
            self.weight = nn.Parameter(w)
            return
        p, lower, upper = torch.linalg.lu(w)
        s = torch.diagonal(upper)
        self.register_buffer("p", p)
        self.register_buffer("sign_s", torch.sign(s))
        self.lower = nn.Parameter(lower)
        self.upper = nn.Parameter(torch.triu(upper, 1))
        self.log_s = nn.Parameter(torch.log(s.abs()))
        self.register_buffer("l_mask", torch.tril(torch.ones(in_ch, in_ch), -1), persistent=False)
        self.register_buffer("eye", torch.eye(in_ch), persistent=False)

    def _weight(self) -> tuple[torch.Tensor, torch.Tensor]:
        """W and log|det W|."""
        if not self.lu:
            w = self.weight
            if w.device.type == "meta":
                return w, w.new_zeros(())
            return w, torch.linalg.slogdet(w)[1]
        lower = self.lower * self.l_mask + self.eye
        upper = self.upper * self.l_mask.T + torch.diag(self.sign_s * torch.exp(self.log_s))
        return self.p @ lower @ upper, self.log_s.sum()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w, logabsdet = self._weight()
        y = F.conv2d(x, w[:, :, None, None])
        return y, _per_sample(logabsdet * _pixels(x), x)

    def reverse(self, y: torch.Tensor) -> torch.Tensor:
        # The plain form is W itself: the way back needs no determinant (a slogdet each).
        w = self.weight if not self.lu else self._weight()[0]
        # In float64, as SRFlow inverts: a float32 inverse of 48×48 loses digits.
        inverse = torch.inverse(w.double()).to(w.dtype)
        return F.conv2d(y, inverse[:, :, None, None])

    def extra_repr(self) -> str:
        return "lu=True" if self.lu else ""


class _NormConv(nn.Conv2d):
    """A convolution without bias followed by an actnorm (SRFlow's ``Conv2d``: weights
    drawn from N(0, 0.05²), keys ``weight`` and ``actnorm.bias``/``logs``)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int) -> None:
        super().__init__(in_ch, out_ch, kernel, padding=kernel // 2, bias=False)
        nn.init.normal_(self.weight, std=0.05)
        self.actnorm = _ActNormCore(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.actnorm.normalize(super().forward(x))


class _ZeroConv(nn.Conv2d):
    """A 3×3 convolution started at zero, its output scaled by exp(3·logs) per channel
    (Glow's ``Conv2dZeros``): a flow step starts as the identity."""

    def __init__(self, in_ch: int, out_ch: int, logscale_factor: float = 3.0) -> None:
        super().__init__(in_ch, out_ch, 3, padding=1)
        nn.init.zeros_(self.weight)
        assert self.bias is not None
        nn.init.zeros_(self.bias)
        self.logs = nn.Parameter(torch.zeros(out_ch, 1, 1))
        self.logscale_factor = logscale_factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * torch.exp(self.logs * self.logscale_factor)


def _affine_net(
    in_ch: int, out_ch: int, hidden: int, hidden_kernel: int, hidden_layers: int
) -> nn.Sequential:
    """The small network that predicts a shift and a scale: conv 3×3 + actnorm, ReLU,
    ``hidden_layers`` × (conv + actnorm, ReLU), zero-started conv 3×3 (SRFlow's ``F``)."""
    layers: list[nn.Module] = [_NormConv(in_ch, hidden, 3), nn.ReLU()]
    for _ in range(hidden_layers):
        layers += [_NormConv(hidden, hidden, hidden_kernel), nn.ReLU()]
    layers.append(_ZeroConv(hidden, out_ch))
    return nn.Sequential(*layers)


def _shift_scale(h: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Shift from the even channels, scale sigmoid(raw + 2) + eps from the odd ones: the
    scale stays in (eps, 1 + eps), so a step cannot blow up, and starts near 0.88."""
    return h[:, 0::2], torch.sigmoid(h[:, 1::2] + 2.0) + eps


def _log_scale(scale: torch.Tensor) -> torch.Tensor:
    return _sum_per_sample(torch.log(scale))


def _check_cond(block: str, cond: torch.Tensor | None, needed: bool) -> None:
    if needed and cond is None:
        raise ValueError(f"{block}: this block was built with a 'cond' input; give it one")
    if not needed and cond is not None:
        raise ValueError(f"{block}: this block was built without a 'cond' input")


@register("affine_coupling", inputs=("x", "cond"), min_inputs=1, invertible=True)
class AffineCoupling(nn.Module):
    """Conditional affine coupling (Glow, SRFlow's ``CondAffineSeparatedAndCond``).

    The first half of the channels, with the condition beside it, predicts a shift and
    a scale for the second half: ``y2 = (x2 + shift) · scale``, scale = sigmoid(raw + 2)
    + eps, the last conv started at zero; the first half passes unchanged, so the
    inverse is exact. With ``features: true`` a feature-conditional affine step comes
    first: the condition alone predicts a shift and a scale for all channels (SRFlow's
    ``fFeatures``). Log-determinant Σ log scale. Keys ``fAffine.N`` and ``fFeatures.N``.

    Args:
        hidden: channels of the hidden convolutions.
        hidden_kernel: kernel size of the middle hidden convolution(s).
        hidden_layers: middle hidden convolutions.
        eps: added to every scale, which keeps it away from zero.
        features: the feature-conditional affine step first (needs ``cond``).
    """

    def __init__(
        self,
        *,
        in_chs: list[int],
        hidden: Positive = 64,
        hidden_kernel: Annotated[int, Range(ge=1)] = 1,
        hidden_layers: Annotated[int, Range(ge=0)] = 1,
        eps: Annotated[float, Range(gt=0)] = 1e-4,
        features: bool = False,
    ) -> None:
        super().__init__()
        channels = in_chs[0]
        cond = in_chs[1] if len(in_chs) > 1 else 0
        if channels < 2:
            raise ValueError(f"affine_coupling needs at least 2 channels to split, got {channels}")
        if features and not cond:
            raise ValueError("affine_coupling: 'features: true' needs a 'cond' input")
        self.has_cond = cond > 0
        self.eps = eps
        self.passed = channels // 2
        net = (hidden, hidden_kernel, hidden_layers)
        self.fAffine = _affine_net(self.passed + cond, (channels - self.passed) * 2, *net)
        self.fFeatures = _affine_net(cond, channels * 2, *net) if features else None

    def forward(
        self, x: torch.Tensor, cond: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        _check_cond("affine_coupling", cond, self.has_cond)
        logdet = x.new_zeros(x.shape[0])
        if self.fFeatures is not None:
            assert cond is not None
            shift, scale = _shift_scale(self.fFeatures(cond), self.eps)
            x = (x + shift) * scale
            logdet = logdet + _log_scale(scale)
        x1, x2 = x[:, : self.passed], x[:, self.passed :]
        shift, scale = _shift_scale(self.fAffine(_beside(x1, cond)), self.eps)
        y2 = (x2 + shift) * scale
        return torch.cat([x1, y2], 1), logdet + _log_scale(scale)

    def reverse(self, y: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        _check_cond("affine_coupling", cond, self.has_cond)
        y1, y2 = y[:, : self.passed], y[:, self.passed :]
        shift, scale = _shift_scale(self.fAffine(_beside(y1, cond)), self.eps)
        x = torch.cat([y1, y2 / scale - shift], 1)
        if self.fFeatures is not None:
            assert cond is not None
            shift, scale = _shift_scale(self.fFeatures(cond), self.eps)
            x = x / scale - shift
        return x


@register("feature_affine", inputs=("x", "cond"), invertible=True)
class FeatureAffine(nn.Module):
    """Feature-conditional affine step (SRFlow): the condition alone predicts a shift
    and a scale for every channel, ``y = (x + shift) · scale`` with scale = sigmoid(raw
    + 2) + eps; the last conv starts at zero. Log-determinant Σ log scale. Keys
    ``net.N``.

    Args:
        hidden: channels of the hidden convolutions.
        hidden_kernel: kernel size of the middle hidden convolution(s).
        hidden_layers: middle hidden convolutions.
        eps: added to every scale, which keeps it away from zero.
    """

    def __init__(
        self,
        *,
        in_chs: list[int],
        hidden: Positive = 64,
        hidden_kernel: Annotated[int, Range(ge=1)] = 1,
        hidden_layers: Annotated[int, Range(ge=0)] = 1,
        eps: Annotated[float, Range(gt=0)] = 1e-4,
    ) -> None:
        super().__init__()
        self.eps = eps
        self.net = _affine_net(in_chs[1], in_chs[0] * 2, hidden, hidden_kernel, hidden_layers)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shift, scale = _shift_scale(self.net(cond), self.eps)
        return (x + shift) * scale, _log_scale(scale)

    def reverse(self, y: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        shift, scale = _shift_scale(self.net(cond), self.eps)
        return y / scale - shift


@register("squeeze", inputs=("x",), trainable=False, invertible=True)
class Squeeze(nn.Module):
    """Space to channels, (C, H, W) → (C·f², H/f, W/f), in pixel-unshuffle order (the
    order of SRFlow's and Glow's squeeze). Volume-preserving: log-determinant 0.

    Args:
        factor: the spatial factor; H and W must be multiples of it.
    """

    def __init__(self, *, factor: Annotated[int, Range(ge=2)] = 2) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return F.pixel_unshuffle(x, self.factor), x.new_zeros(x.shape[0])

    def reverse(self, y: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(y, self.factor)

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


@register("flow_split", inputs=("x", "cond"), outputs=("out", "z"), min_inputs=1, invertible=True)
class FlowSplit(nn.Module):
    """Split off part of the channels as a latent with a learned Gaussian prior
    (Glow's and SRFlow's ``Split2d``).

    The kept channels (and ``cond``, if given) predict the mean and log-scale of the
    rest; ``z`` is the rest normalized by them, and its log-likelihood under the prior
    is added to the log-determinant. In reverse, a given ``z`` restores the rest
    exactly; without one, z is drawn from N(0, heat²). Outputs: ``out`` (the kept
    channels, which the flow goes on with) and ``z``. Key ``conv``.

    Args:
        ratio: the share of the channels split off.
        logs_eps: added to the prior's scale when normalizing (SRFlow's ``logs_eps``).
    """

    def __init__(
        self,
        *,
        in_chs: list[int],
        ratio: Annotated[float, Range(gt=0, lt=1)] = 0.5,
        logs_eps: Annotated[float, Range(ge=0)] = 0.0,
    ) -> None:
        super().__init__()
        channels = in_chs[0]
        self.consumed = round(channels * ratio)
        self.kept = channels - self.consumed
        if self.consumed < 1 or self.kept < 1:
            raise ValueError(
                f"flow_split: ratio {ratio} of {channels} channels leaves nothing on one side"
            )
        self.has_cond = len(in_chs) > 1
        self.logs_eps = logs_eps
        self.conv = _ZeroConv(self.kept + (in_chs[1] if self.has_cond else 0), self.consumed * 2)

    def _prior(
        self, kept: torch.Tensor, cond: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        _check_cond("flow_split", cond, self.has_cond)
        h = self.conv(_beside(kept, cond))
        return h[:, 0::2], h[:, 1::2]

    def forward(
        self, x: torch.Tensor, cond: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        kept, rest = x[:, : self.kept], x[:, self.kept :]
        mean, logs = self._prior(kept, cond)
        z = (rest - mean) / (torch.exp(logs) + self.logs_eps)
        return kept, z, gaussian_logp(rest, mean, logs)

    def reverse(
        self,
        kept: torch.Tensor,
        cond: torch.Tensor | None = None,
        *,
        z: torch.Tensor | None = None,
        heat: float = 1.0,
    ) -> torch.Tensor:
        mean, logs = self._prior(kept, cond)
        if z is None:
            z = torch.randn_like(mean) * heat
        rest = mean + (torch.exp(logs) + self.logs_eps) * z
        return torch.cat([kept, rest], 1)


def _beside(x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
    return x if cond is None else torch.cat([x, cond], 1)

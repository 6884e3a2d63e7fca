"""SRFlow x4 and x8 written by hand in plain PyTorch: the reference ``specs/srflow.yaml``
and ``specs/srflow_x8.yaml`` are checked (and x4 timed) against.

Written from the paper (Lugmayr et al., "SRFlow: Learning the Super-Resolution Space
with Normalizing Flow", ECCV 2020) and the facts of the original code, with its module
names, so a state_dict of this module has exactly the keys of SRFlow's checkpoints
(``RRDB.*``, ``flowUpsamplerNet.layers.N.*``, ``flowUpsamplerNet.f.0.*``). The original
hard-codes 64 channels in places (its condition width is 5 · 64); here nf, nb, gc, K and
hidden are arguments, so tests can build it tiny.

What SRFlow's x4 network computes, quirks included:

* the encoder is ESRGAN's RRDB trunk, but ``last_lr_fea`` adds ``trunk_conv`` to the
  trunk's *output* (ESRGAN adds it to ``conv_first``'s); the outputs of RRDB blocks 1,
  8, 15 and 22 (counted from 0) are stacked and put beside each level's features,
  resized by nearest neighbour: level 1 (HR/2) gets ``upconv1`` on the nearest x2 of
  last_lr_fea, before its LeakyReLU (``fea_up2``), level 2 (HR/4) last_lr_fea itself
  (``fea_up1``), level 3 (HR/8) its bilinear half (``fea_up0``);
* the flow has 3 levels: squeeze (pixel-unshuffle order), 2 steps without coupling
  (actnorm, invertible 1x1 conv), K steps (actnorm, invconv,
  ``CondAffineSeparatedAndCond``: a shift and scale of all channels from the features,
  then of the second half from the first half and the features; scale sigmoid(raw + 2)
  + 1e-4), and after level 1 a split whose prior comes from the kept half alone;
* an actnorm initializes from the first batch it sees, in training mode only, unless
  its bias is already non-zero (a loaded file); in eval mode it never does.

At x8 (SRFlow_DF2K_8X) the flow has a fourth level and a second split (SRFlow splits all
but the last two levels), the taps are RRDB blocks 1, 3, 5 and 7, and the levels read
``fea_up4`` (``upconv2`` on the nearest x2 of ``fea_up2``'s LeakyReLU, before its own),
``fea_up2``, last_lr_fea and ``fea_up0``.

Left out, because the flow never reads them: SRFlow's RRDB also runs its own SR head
(``upconv2``, ``HRconv``, ``conv_last``; at x8 ``upconv3``, ``HRconv``, ``conv_last``) and stacks
the taps beside the head's features and a second copy of last_lr_fea on every call, and
its reverse pass also sums a log-determinant nobody reads. Their weights are here (the
layout is the checkpoint's), ``RRDBNet.forward`` runs the SR head, and the outputs the
flow gives are unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from reference_esrgan import DenseBlock
from torch import nn

LOG_2PI = math.log(2 * math.pi)
#: The RRDB blocks whose outputs condition the flow (SRFlow's stackRRDB.blocks), per scale.
TAPS = {4: (1, 8, 15, 22), 8: (1, 3, 5, 7)}
#: The flow's levels (SRFlow's L), per scale.
LEVELS = {4: 3, 8: 4}
#: Output channels of ``flowUpsamplerNet.f`` (2 · 3 · 64 / 4), a conv SRFlow builds and
#: never calls.
F_CHANNELS = 96


def per_sample_sum(t: torch.Tensor) -> torch.Tensor:
    return t.sum(dim=(1, 2, 3))


def gaussian_logp(
    x: torch.Tensor, mean: torch.Tensor | None = None, logs: torch.Tensor | None = None
) -> torch.Tensor:
    """log N(x; mean, exp(logs)²) per sample; the standard normal without mean, logs."""
    if mean is None or logs is None:
        return per_sample_sum(-0.5 * (x**2 + LOG_2PI))
    return per_sample_sum(-0.5 * (2.0 * logs + (x - mean) ** 2 / torch.exp(2.0 * logs) + LOG_2PI))


# ------------------------------------------------------------------- encoder
class RRDB(nn.Module):
    def __init__(self, nf: int, gc: int) -> None:
        super().__init__()
        # ESRGAN's dense blocks (conv1..conv5), under SRFlow's names RDB1..RDB3.
        self.RDB1 = DenseBlock(nf, gc)
        self.RDB2 = DenseBlock(nf, gc)
        self.RDB3 = DenseBlock(nf, gc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.RDB3(self.RDB2(self.RDB1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    """SRFlow's RRDB encoder; ``conditions`` gives the levels' features."""

    def __init__(self, nf: int = 64, nb: int = 23, gc: int = 32, scale: int = 4) -> None:
        super().__init__()
        self.scale, self.taps = scale, TAPS[scale]
        if nb <= max(self.taps):
            raise ValueError(
                f"SRFlow reads RRDB blocks {self.taps}: nb must exceed {max(self.taps)}"
            )
        self.conv_first = nn.Conv2d(3, nf, 3, 1, 1)
        self.RRDB_trunk = nn.Sequential(*(RRDB(nf, gc) for _ in range(nb)))
        self.trunk_conv = nn.Conv2d(nf, nf, 3, 1, 1)
        self.upconv1 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.upconv2 = nn.Conv2d(nf, nf, 3, 1, 1)
        if scale >= 8:
            self.upconv3 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.HRconv = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_last = nn.Conv2d(nf, 3, 3, 1, 1)

    def trunk(self, lr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """last_lr_fea and the stacked taps."""
        fea = self.conv_first(lr)
        taps = []
        for i, block in enumerate(self.RRDB_trunk):
            fea = block(fea)
            if i in self.taps:
                taps.append(fea)
        return fea + self.trunk_conv(fea), torch.cat(taps, 1)

    def conditions(self, lr: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The features the flow's levels read, level 1 (HR/2) first: at x4 fea_up2,
        last_lr_fea (LR) and fea_up0 (LR/2); at x8 fea_up4 before them."""
        last_lr_fea, taps = self.trunk(lr)
        fea_up2 = self.upconv1(F.interpolate(last_lr_fea, scale_factor=2, mode="nearest"))
        fea_up0 = F.interpolate(
            last_lr_fea,
            scale_factor=0.5,
            mode="bilinear",
            align_corners=False,
            recompute_scale_factor=True,
        )
        levels = [fea_up2, last_lr_fea, fea_up0]
        if self.scale == 8:
            up = F.interpolate(F.leaky_relu(fea_up2, 0.2), scale_factor=2, mode="nearest")
            levels.insert(0, self.upconv2(up))  # fea_up4
        return tuple(_beside(level, taps) for level in levels)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        """The RRDB's own SR image (its head; the flow does not use it)."""
        fea, _ = self.trunk(lr)
        ups = [self.upconv1, self.upconv2]
        if self.scale >= 8:
            ups.append(self.upconv3)
        for conv in ups:
            fea = F.leaky_relu(conv(F.interpolate(fea, scale_factor=2, mode="nearest")), 0.2)
        return self.conv_last(F.leaky_relu(self.HRconv(fea), 0.2))


def _beside(level: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """A level's features with the taps resized to them (nearest) beside them."""
    if taps.shape[-2:] != level.shape[-2:]:
        taps = F.interpolate(taps, size=level.shape[-2:], mode="nearest")
    return torch.cat([level, taps], 1)


# --------------------------------------------------------------- flow layers
class ActNorm(nn.Module):
    """y = (x + bias) · exp(logs) per channel; bias and logs from the first training
    batch (zero mean, unit variance), unless the bias is already set."""

    def __init__(self, channels: int, scale: float = 1.0) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.logs = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.scale = scale
        self.inited = False  # an attribute, not state: SRFlow's files have no such key

    def _initialize(self, x: torch.Tensor) -> None:
        if self.inited or not self.training:
            return
        if bool((self.bias != 0).any()):  # loaded values count as initialized
            self.inited = True
            return
        with torch.no_grad():
            mean = x.mean(dim=(0, 2, 3), keepdim=True)
            var = ((x - mean) ** 2).mean(dim=(0, 2, 3), keepdim=True)
            self.bias.copy_(-mean)
            self.logs.copy_(torch.log(self.scale / (var.sqrt() + 1e-6)))
        self.inited = True

    def forward(self, x: torch.Tensor, reverse: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        self._initialize(x)
        dlogdet = self.logs.sum() * (x.shape[2] * x.shape[3])
        if reverse:
            return x * torch.exp(-self.logs) - self.bias, -dlogdet
        return (x + self.bias) * torch.exp(self.logs), dlogdet


class InvertibleConv1x1(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.linalg.qr(torch.randn(channels, channels))[0])

    def forward(self, x: torch.Tensor, reverse: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.weight.shape[0]
        if reverse:
            # Inverted in float64, as SRFlow does.
            inverse = torch.inverse(self.weight.double()).to(self.weight.dtype)
            return F.conv2d(x, inverse.view(c, c, 1, 1)), x.new_zeros(())
        dlogdet = torch.slogdet(self.weight)[1] * (x.shape[2] * x.shape[3])
        return F.conv2d(x, self.weight.view(c, c, 1, 1)), dlogdet


class NormConv2d(nn.Conv2d):
    """Conv without bias, weights N(0, 0.05²), then an actnorm (SRFlow's flow.Conv2d)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int) -> None:
        super().__init__(in_ch, out_ch, kernel, padding=kernel // 2, bias=False)
        nn.init.normal_(self.weight, std=0.05)
        self.actnorm = ActNorm(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.actnorm(super().forward(x))[0]


class ZeroConv2d(nn.Conv2d):
    """A 3x3 conv started at zero, its output times exp(3 · logs) (Conv2dZeros)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__(in_ch, out_ch, 3, padding=1)
        nn.init.zeros_(self.weight)
        nn.init.zeros_(self.bias)
        self.logs = nn.Parameter(torch.zeros(out_ch, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * torch.exp(self.logs * 3.0)


def coupling_net(in_ch: int, out_ch: int, hidden: int) -> nn.Sequential:
    """Conv 3x3 + actnorm, ReLU, conv 1x1 + actnorm, ReLU, zero conv 3x3 (SRFlow's F)."""
    return nn.Sequential(
        NormConv2d(in_ch, hidden, 3),
        nn.ReLU(),
        NormConv2d(hidden, hidden, 1),
        nn.ReLU(),
        ZeroConv2d(hidden, out_ch),
    )


class CondAffineSeparatedAndCond(nn.Module):
    EPS = 1e-4

    def __init__(self, channels: int, cond_channels: int, hidden: int) -> None:
        super().__init__()
        self.passed = channels // 2
        changed = channels - self.passed
        self.fAffine = coupling_net(self.passed + cond_channels, changed * 2, hidden)
        self.fFeatures = coupling_net(cond_channels, channels * 2, hidden)

    def _shift_scale(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Channels interleaved: shift on the even ones, the raw scale on the odd ones.
        return h[:, 0::2], torch.sigmoid(h[:, 1::2] + 2.0) + self.EPS

    def forward(
        self, x: torch.Tensor, cond: torch.Tensor, reverse: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if reverse:
            return self._reverse(x, cond)
        shift, scale = self._shift_scale(self.fFeatures(cond))
        x = (x + shift) * scale
        logdet = per_sample_sum(torch.log(scale))
        x1, x2 = x[:, : self.passed], x[:, self.passed :]
        shift, scale = self._shift_scale(self.fAffine(torch.cat([x1, cond], 1)))
        x2 = (x2 + shift) * scale
        return torch.cat([x1, x2], 1), logdet + per_sample_sum(torch.log(scale))

    def _reverse(self, y: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y1, y2 = y[:, : self.passed], y[:, self.passed :]
        shift, scale = self._shift_scale(self.fAffine(torch.cat([y1, cond], 1)))
        x = torch.cat([y1, y2 / scale - shift], 1)
        shift, scale = self._shift_scale(self.fFeatures(cond))
        return x / scale - shift, y.new_zeros(())


class FlowStep(nn.Module):
    """Actnorm, invertible 1x1 conv and, with a condition, the conditional coupling."""

    def __init__(self, channels: int, cond_channels: int | None = None, hidden: int = 64) -> None:
        super().__init__()
        self.actnorm = ActNorm(channels)
        self.invconv = InvertibleConv1x1(channels)
        self.affine = (
            None
            if cond_channels is None
            else CondAffineSeparatedAndCond(channels, cond_channels, hidden)
        )

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, logdet = self.actnorm(x)
        x, d = self.invconv(x)
        logdet = logdet + d
        if self.affine is not None:
            x, d = self.affine(x, cond)
            logdet = logdet + d
        return x, logdet

    def reverse(self, y: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if self.affine is not None:
            y = self.affine(y, cond, reverse=True)[0]
        y = self.invconv(y, reverse=True)[0]
        return self.actnorm(y, reverse=True)[0]


class Squeeze(nn.Module):
    """(C, H, W) → (4C, H/2, W/2); channel c·4 + 2·i + j takes pixel (2y + i, 2x + j)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        x = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
        return x.reshape(b, c * 4, h // 2, w // 2)

    def reverse(self, y: torch.Tensor) -> torch.Tensor:
        b, c, h, w = y.shape
        y = y.reshape(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
        return y.reshape(b, c // 4, h * 2, w * 2)


class Split2d(nn.Module):
    """Half the channels leave the flow as a latent; the kept half predicts their
    Gaussian prior (mean and log-scale interleaved)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.consumed = round(channels * 0.5)
        self.kept = channels - self.consumed
        self.conv = ZeroConv2d(self.kept, self.consumed * 2)

    def _prior(self, kept: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.conv(kept)
        return h[:, 0::2], h[:, 1::2]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        kept, rest = x[:, : self.kept], x[:, self.kept :]
        mean, logs = self._prior(kept)
        return kept, (rest - mean) / torch.exp(logs), gaussian_logp(rest, mean, logs)

    def reverse(self, kept: torch.Tensor, z: torch.Tensor | None, heat: float) -> torch.Tensor:
        mean, logs = self._prior(kept)
        if z is None:
            z = torch.randn_like(mean) * heat
        return torch.cat([kept, mean + torch.exp(logs) * z], 1)


class FlowUpsamplerNet(nn.Module):
    """The flow on the HR image: per level, squeeze, 2 steps without coupling, K
    conditional steps; a split after every level but the last two (level 1 at x4,
    levels 1 and 2 at x8). ``layers`` numbered as SRFlow's."""

    TRANSITIONS = 2

    def __init__(self, *, K: int, hidden: int, cond_channels: int, levels: int = 3) -> None:
        super().__init__()
        self.layers = nn.ModuleList()
        self.level_of: list[int] = []  # which level's condition each layer reads
        channels = 3
        for level in range(1, levels + 1):
            channels *= 4
            found: list[nn.Module] = [Squeeze()]
            found += [FlowStep(channels) for _ in range(self.TRANSITIONS)]
            found += [FlowStep(channels, cond_channels, hidden) for _ in range(K)]
            if level < levels - 1:  # SRFlow splits all but the last two levels
                split = Split2d(channels)
                found.append(split)
                channels = split.kept
            self.layers.extend(found)
            self.level_of += [level - 1] * len(found)
        self.top_channels = channels
        self.f = nn.Sequential(nn.Conv2d(cond_channels, F_CHANNELS, 3, 1, 1))

    def forward(
        self, x: torch.Tensor, conditions: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """(top latent, the splits' latents in order, log-determinant per sample)."""
        logdet = x.new_zeros(x.shape[0])
        split: list[torch.Tensor] = []
        for layer, level in zip(self.layers, self.level_of, strict=True):
            if isinstance(layer, Squeeze):
                x = layer(x)
            elif isinstance(layer, Split2d):
                x, z, d = layer(x)
                split.append(z)
                logdet = logdet + d
            else:
                x, d = layer(x, conditions[level])
                logdet = logdet + d
        return x, split, logdet

    def reverse(
        self,
        z: torch.Tensor,
        conditions: tuple[torch.Tensor, ...],
        split: list[torch.Tensor | None],
        heat: float,
    ) -> torch.Tensor:
        x = z
        remaining = list(split)
        for layer, level in zip(reversed(self.layers), reversed(self.level_of), strict=True):
            if isinstance(layer, Squeeze):
                x = layer.reverse(x)
            elif isinstance(layer, Split2d):
                x = layer.reverse(x, remaining.pop(), heat)  # the last split first
            else:
                x = layer.reverse(x, conditions[level])
        return x


class SRFlowNet(nn.Module):
    """SRFlow x4 or x8: ``forward(hr, lr)`` → (z, z1, logdet) at x4 and (z, z1, z2,
    logdet) at x8; ``reverse(lr, ...)`` → HR."""

    def __init__(
        self,
        *,
        nf: int = 64,
        nb: int = 23,
        gc: int = 32,
        K: int = 16,
        hidden: int = 64,
        scale: int = 4,
    ) -> None:
        super().__init__()
        self.RRDB = RRDBNet(nf, nb, gc, scale)
        self.flowUpsamplerNet = FlowUpsamplerNet(
            K=K, hidden=hidden, cond_channels=5 * nf, levels=LEVELS[scale]
        )

    def forward(self, hr: torch.Tensor, lr: torch.Tensor) -> tuple[torch.Tensor, ...]:
        z, split, logdet = self.flowUpsamplerNet(hr, self.RRDB.conditions(lr))
        return (z, *split, logdet)

    def reverse(
        self,
        lr: torch.Tensor,
        z: torch.Tensor | None = None,
        *split: torch.Tensor | None,
        heat: float = 1.0,
    ) -> torch.Tensor:
        """The HR image of latents z (top) and the splits' (z1, then z2 at x8); a latent
        not given is drawn from N(0, heat²)."""
        if z is None:  # SRFlow's get_z: the top latent is LR/2 (HR/8 at x4, HR/16 at x8)
            b, _, h, w = lr.shape
            shape = (b, self.flowUpsamplerNet.top_channels, h // 2, w // 2)
            z = torch.randn(shape, device=lr.device, dtype=lr.dtype) * heat
        splits = sum(isinstance(m, Split2d) for m in self.flowUpsamplerNet.layers)
        given = [*split, *[None] * (splits - len(split))]
        return self.flowUpsamplerNet.reverse(z, self.RRDB.conditions(lr), given, heat)

    def nll(self, hr: torch.Tensor, lr: torch.Tensor, quant: int = 255) -> torch.Tensor:
        """SRFlow's NLL per sample in bits per pixel, of an already dequantized ``hr``:
        −(logdet − H·W·ln(quant) + log N(z)) / (ln 2 · H·W)."""
        pixels = hr.shape[2] * hr.shape[3]
        z, *_, logdet = self(hr, lr)
        objective = logdet - math.log(quant) * pixels + gaussian_logp(z)
        return -objective / (math.log(2.0) * pixels)

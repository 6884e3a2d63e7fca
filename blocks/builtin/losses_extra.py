"""Loss blocks beyond pixel distances: structure, colour, frequency and VGG statistics.

ssim and ms_ssim compare local structure, color and luma split an RGB image into
chroma and brightness, fft compares spectra, style and contextual compare VGG19
feature statistics (their trunk is the perceptual loss's, from ``losses``). Each
returns a scalar tensor; the runtime calls losses in fp32 outside autocast.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import nn

from blocks.builtin.losses import _FEATURE_CRITERIA, PAIR, _check_same_shape, frozen_vgg
from blocks.builtin.vgg import VGGLayer
from blocks.registry import Range, register

# --- structure: SSIM and MS-SSIM ---------------------------------------------------------

#: Wang et al. 2004: an 11×11 Gaussian window of σ 1.5, constants for data range 1.
SSIM_WINDOW, SSIM_SIGMA = 11, 1.5
SSIM_C1, SSIM_C2 = 0.01**2, 0.03**2

#: Wang et al. 2003: the exponent of each scale's term, full resolution first.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)

# MS-SSIM raises each term to a fractional power: a term ≤ 0 (anti-correlated images)
# is clamped here so that the power and its gradient stay finite.
_MS_SSIM_FLOOR = 1e-6


def _gaussian_1d(size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return (g / g.sum()).float()


def _blur(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Each channel convolved with kernel ⊗ kernel (separable, no padding)."""
    channels, size = x.shape[1], kernel.numel()
    k = kernel.to(x.dtype)
    x = F.conv2d(x, k.view(1, 1, 1, size).expand(channels, 1, 1, size), groups=channels)
    return F.conv2d(x, k.view(1, 1, size, 1).expand(channels, 1, size, 1), groups=channels)


def _ssim_maps(
    x: torch.Tensor, y: torch.Tensor, window: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """SSIM's map and its contrast-structure map, over the window's valid positions."""
    # One depthwise convolution computes all five local statistics.
    stats = _blur(torch.cat([x, y, x * x, y * y, x * y]), window)
    mu_x, mu_y, xx, yy, xy = stats.chunk(5)
    var_x, var_y, cov = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
    cs = (2 * cov + SSIM_C2) / (var_x + var_y + SSIM_C2)
    luminance = (2 * mu_x * mu_y + SSIM_C1) / (mu_x**2 + mu_y**2 + SSIM_C1)
    return luminance * cs, cs


def _check_ssim_size(block: str, x: torch.Tensor) -> None:
    if min(x.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(
            f"{block}: needs a height and width of at least {SSIM_WINDOW} (the Gaussian "
            f"window), got {tuple(x.shape[-2:])}; train on larger crops"
        )


def ms_ssim_scales(height: int, width: int) -> int:
    """How many of MS-SSIM's five scales fit: each must still hold an 11×11 window."""
    side, scales = min(height, width), 1
    while scales < len(MS_SSIM_WEIGHTS) and side // 2 >= SSIM_WINDOW:
        side, scales = side // 2, scales + 1
    return scales


@register("ssim", kind="loss", inputs=PAIR)
class SSIMLoss(nn.Module):
    """1 − SSIM, the structural similarity of Wang et al. 2004.

    SSIM = mean over positions of l · cs with, per 11×11 Gaussian window (σ 1.5, no
    padding), l = (2μₓμᵧ + C1) / (μₓ² + μᵧ² + C1) and cs = (2σₓᵧ + C2) / (σₓ² + σᵧ² + C2),
    C1 = 0.01², C2 = 0.03², averaged over channels and the batch: the definition of the
    ssim validation metric, so this loss is 1 − that metric. Inputs are in [0, 1] and
    at least 11×11.
    """

    window: torch.Tensor  # a buffer, declared for the type checker

    def __init__(self) -> None:
        super().__init__()
        window = _gaussian_1d(SSIM_WINDOW, SSIM_SIGMA)
        self.register_buffer("window", window, persistent=False)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_same_shape("ssim", pred, target)
        _check_ssim_size("ssim", pred)
        return 1 - _ssim_maps(pred, target, self.window)[0].mean()


@register("ms_ssim", kind="loss", inputs=PAIR)
class MSSSIMLoss(nn.Module):
    """1 − MS-SSIM, the multi-scale structural similarity of Wang et al. 2003.

    MS-SSIM = ssim[M]^w[M] · Π_{j<M} cs[j]^w[j] per image and channel, then averaged:
    cs[j] is the mean contrast-structure term (see ssim) at scale j, ssim[M] the full
    SSIM at the coarsest scale M, each scale the previous one average-pooled 2×2. The five
    standard scales use weights 0.0448, 0.2856, 0.3001, 0.2363, 0.1333 and need a
    height and width of at least 176. Smaller inputs use as many scales as still hold
    an 11×11 window (128×128 crops: four) with those scales' weights rescaled to sum to
    1; below 22×22 that is one scale, where ms_ssim equals ssim. Terms ≤ 0 are clamped
    to 1e-6 before the fractional powers. Inputs are in [0, 1] and at least 11×11.
    """

    window: torch.Tensor  # a buffer, declared for the type checker

    def __init__(self) -> None:
        super().__init__()
        window = _gaussian_1d(SSIM_WINDOW, SSIM_SIGMA)
        self.register_buffer("window", window, persistent=False)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_same_shape("ms_ssim", pred, target)
        _check_ssim_size("ms_ssim", pred)
        scales = ms_ssim_scales(*pred.shape[-2:])
        weights: tuple[float, ...] = MS_SSIM_WEIGHTS
        if scales < len(weights):
            weights = tuple(w / sum(weights[:scales]) for w in weights[:scales])
        value = pred.new_ones(pred.shape[:2])
        for j, weight in enumerate(weights):
            if j:
                pred, target = F.avg_pool2d(pred, 2), F.avg_pool2d(target, 2)
            ssim_map, cs_map = _ssim_maps(pred, target, self.window)
            term = (ssim_map if j == scales - 1 else cs_map).mean(dim=(-2, -1))
            value = value * term.clamp_min(_MS_SSIM_FLOOR) ** weight
        return 1 - value.mean()


# --- colour: chroma and luma -------------------------------------------------------------

# Full-range ITU-R BT.601 (JPEG's YCbCr) rows for RGB in [0, 1]; Cb and Cr's offset of
# 0.5 cancels in a difference. The rows of Cb and Cr sum to 0: a grey shift has no chroma.
_LUMA_ROW = (0.299, 0.587, 0.114)
_CHROMA_ROWS = ((-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))


def _check_rgb(block: str, x: torch.Tensor) -> None:
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"{block}: needs RGB images (N, 3, H, W), got shape {tuple(x.shape)}")


def _project(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Per-pixel linear map of the channels: (N, 3, H, W) → (N, len(rows), H, W)."""
    return F.conv2d(x, rows.to(x.dtype)[:, :, None, None])


@register("color", kind="loss", inputs=PAIR)
class ColorLoss(nn.Module):
    """Colour loss: mean |G_σ ∗ CbCr(pred) − G_σ ∗ CbCr(target)|.

    CbCr are the chroma channels of full-range BT.601 YCbCr (JPEG's). The Gaussian blur
    G_σ (kernel 2⌈3σ⌉ + 1, replicated borders) keeps the loss on colour casts rather
    than on texture, as DPED's colour loss blurs with σ 3; chroma alone (as in neosr's
    colour loss) leaves brightness to other losses: a grey shift of all three channels
    costs nothing here (see luma). Inputs are RGB in [0, 1].

    Args:
        sigma: standard deviation of the blur in pixels; 0 compares unblurred chroma.
    """

    rows: torch.Tensor  # buffers, declared for the type checker
    kernel: torch.Tensor | None

    def __init__(self, *, sigma: Annotated[float, Range(ge=0)] = 3.0) -> None:
        super().__init__()
        if sigma < 0:
            raise ValueError(f"color: sigma is {sigma}; it must be 0 (no blur) or more")
        self.register_buffer("rows", torch.tensor(_CHROMA_ROWS), persistent=False)
        kernel = _gaussian_1d(2 * math.ceil(3 * sigma) + 1, sigma) if sigma > 0 else None
        self.register_buffer("kernel", kernel, persistent=False)

    def _chroma(self, x: torch.Tensor) -> torch.Tensor:
        chroma = _project(x, self.rows)
        if self.kernel is None:
            return chroma
        pad = self.kernel.numel() // 2
        return _blur(F.pad(chroma, (pad, pad, pad, pad), mode="replicate"), self.kernel)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_same_shape("color", pred, target)
        _check_rgb("color", pred)
        return F.l1_loss(self._chroma(pred), self._chroma(target))


@register("luma", kind="loss", inputs=PAIR)
class LumaLoss(nn.Module):
    """Luma loss: mean |Y(pred) − Y(target)| with Y = 0.299 R + 0.587 G + 0.114 B.

    Y is full-range BT.601 luma, so shifting all three channels by c costs |c|; the Y
    of the PSNR/SSIM metrics is the studio-range one, 219/255 of this and offset.
    Colour changes that keep Y cost nothing (see color). Inputs are RGB in [0, 1].
    """

    row: torch.Tensor  # a buffer, declared for the type checker

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("row", torch.tensor([_LUMA_ROW]), persistent=False)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_same_shape("luma", pred, target)
        _check_rgb("luma", pred)
        return F.l1_loss(_project(pred, self.row), _project(target, self.row))


# --- frequency ---------------------------------------------------------------------------


@register("fft", kind="loss", inputs=PAIR)
class FFTLoss(nn.Module):
    """Frequency loss: L1 between the 2-D real FFTs of pred and target.

    F = torch.fft.rfft2(x, norm="ortho") per channel, so by Parseval the spectrum has
    the image's energy. complex: mean over frequencies of |Re F(pred) − Re F(target)|
    and |Im F(pred) − Im F(target)| together (BasicSR-style FFT loss); amplitude:
    mean ||F(pred)| − |F(target)||, blind to phase and so to circular shifts.

    Args:
        mode: compare the complex values or only the amplitudes.
    """

    def __init__(self, *, mode: Literal["complex", "amplitude"] = "complex") -> None:
        super().__init__()
        self.mode = mode

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_same_shape("fft", pred, target)
        pred_f = torch.fft.rfft2(pred, norm="ortho")
        target_f = torch.fft.rfft2(target, norm="ortho")
        if self.mode == "amplitude":
            return F.l1_loss(pred_f.abs(), target_f.abs())
        return F.l1_loss(torch.view_as_real(pred_f), torch.view_as_real(target_f))

    def extra_repr(self) -> str:
        return f"mode={self.mode}"


# --- VGG statistics: style and contextual ------------------------------------------------

#: Gatys et al.'s style layers: the first ReLU of each stage, equal weights.
STYLE_LAYERS: dict[VGGLayer, float] = {
    "relu1_1": 1.0,
    "relu2_1": 1.0,
    "relu3_1": 1.0,
    "relu4_1": 1.0,
    "relu5_1": 1.0,
}


def gram(features: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) → (N, C, C): channel correlations summed over positions, / (C·H·W)."""
    flat = features.flatten(2)
    return flat @ flat.transpose(1, 2) / (flat.shape[1] * flat.shape[2])


@register("style", kind="loss", inputs=PAIR)
class StyleLoss(nn.Module):
    """Style loss: Σ weight · criterion(Gram(φ(pred)), Gram(φ(target))) over VGG19 layers φ.

    Gram(φ) = φ φᵀ / (C·H·W) for a C×H×W feature map: channel co-activations summed
    over positions, so the loss compares textures regardless of where they are. Layer
    names are taken as they are: conv3_1 is that conv's output before its ReLU, relu3_1
    after it. Inputs, the trunk and its weights are the perceptual loss's: RGB in
    [0, 1], a frozen VGG19 truncated after the deepest layer, weights read and never
    downloaded.

    Args:
        layers: VGG19 layer name → weight; the loss sums the weighted distances.
        criterion: distance between Gram matrices: l1 or l2 (mean squared).
        normalize: subtract ImageNet's mean and divide by its std first.
        weights: imagenet (torch's hub cache), a file path, or random (tests only).
    """

    def __init__(
        self,
        *,
        layers: dict[VGGLayer, float] = STYLE_LAYERS,
        criterion: Literal["l1", "l2"] = "l1",
        normalize: bool = True,
        weights: str = "imagenet",
    ) -> None:
        super().__init__()
        self.layer_weights = dict(layers)  # a copy: the default dict is shared
        self.vgg = frozen_vgg("style", self.layer_weights, weights, normalize)
        self.criterion = _FEATURE_CRITERIA[criterion]

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_same_shape("style", pred, target)
        pred_features = self.vgg(pred)
        target_features = self.vgg(target)
        total = pred.new_zeros(())
        for name, weight in self.layer_weights.items():
            distance = self.criterion(gram(pred_features[name]), gram(target_features[name]))
            total = total + weight * distance
        return total


#: Mid-level layers, where features describe local texture and shape parts.
CONTEXTUAL_LAYERS: dict[VGGLayer, float] = {"relu3_2": 1.0, "relu4_2": 1.0}

# ε of the relative distance d / (min d + ε).
_CONTEXTUAL_EPS = 1e-5


def contextual(
    pred: torch.Tensor, target: torch.Tensor, band_width: float, max_patches: int
) -> torch.Tensor:
    """The contextual loss of two (N, C, H, W) feature maps, averaged over the batch."""
    x, y = pred.flatten(2), target.flatten(2)  # (N, C, P)
    if x.shape[2] > max_patches:  # the same random positions of both, to bound memory
        keep = torch.randperm(x.shape[2], device=x.device)[:max_patches]
        x, y = x[..., keep], y[..., keep]
    centre = y.mean(dim=2, keepdim=True)
    x, y = F.normalize(x - centre, dim=1), F.normalize(y - centre, dim=1)
    # d[n, i, j]: cosine distance between pred feature i and target feature j.
    distance = (1 - torch.einsum("nci,ncj->nij", x, y)).clamp_min(0)
    relative = distance / (distance.amin(dim=2, keepdim=True) + _CONTEXTUAL_EPS)
    # exp((1 − d̃) / h) normalised over j is a softmax of −d̃ / h (stable for large d̃).
    similarity = torch.softmax(-relative / band_width, dim=2)
    return -torch.log(similarity.amax(dim=1).mean(dim=1)).mean()


@register("contextual", kind="loss", inputs=PAIR)
class ContextualLoss(nn.Module):
    """Contextual loss (Mechrez et al. 2018) on VGG19 features: Σ weight · CX_loss(layer).

    Per image and layer, with pred features xᵢ and target features yⱼ (one per
    position), both centred on the target's mean feature: dᵢⱼ = 1 − cos(xᵢ, yⱼ);
    d̃ᵢⱼ = dᵢⱼ / (minₖ dᵢₖ + 1e-5); wᵢⱼ = exp((1 − d̃ᵢⱼ) / h); CXᵢⱼ = wᵢⱼ / Σₖ wᵢₖ
    (each pred feature's row normalised over the target features); CX = meanⱼ maxᵢ
    CXᵢⱼ, how well each target feature is matched somewhere in pred; the loss is
    −log CX, averaged over the batch. It ignores where features are, so it suits
    unaligned pairs. Identical features give about 0. Memory grows with the square of
    the positions compared: about 20 bytes · max_patches² per image and layer.
    Inputs, trunk and weights are the style loss's (layer names taken as they are).

    Args:
        layers: VGG19 layer name → weight; the loss sums the weighted terms.
        band_width: h; smaller values make the matching sharper.
        max_patches: compare at most this many positions, drawn at random (the same
            ones in pred and target) when a layer has more.
        normalize: subtract ImageNet's mean and divide by its std first.
        weights: imagenet (torch's hub cache), a file path, or random (tests only).
    """

    def __init__(
        self,
        *,
        layers: dict[VGGLayer, float] = CONTEXTUAL_LAYERS,
        band_width: Annotated[float, Range(gt=0)] = 0.5,
        max_patches: Annotated[int, Range(ge=1)] = 1024,
        normalize: bool = True,
        weights: str = "imagenet",
    ) -> None:
        super().__init__()
        if band_width <= 0 or max_patches < 1:
            raise ValueError(
                f"contextual: band_width must be > 0 and max_patches ≥ 1, got "
                f"{band_width} and {max_patches}"
            )
        self.layer_weights = dict(layers)  # a copy: the default dict is shared
        self.vgg = frozen_vgg("contextual", self.layer_weights, weights, normalize)
        self.band_width = band_width
        self.max_patches = max_patches

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_same_shape("contextual", pred, target)
        pred_features = self.vgg(pred)
        target_features = self.vgg(target)
        total = pred.new_zeros(())
        for name, weight in self.layer_weights.items():
            term = contextual(
                pred_features[name], target_features[name], self.band_width, self.max_patches
            )
            total = total + weight * term
        return total

    def extra_repr(self) -> str:
        return f"band_width={self.band_width}, max_patches={self.max_patches}"

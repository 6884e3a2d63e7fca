"""Loss blocks: each returns a scalar tensor (a mean over the batch).

Pixel losses (l1, mse, charbonnier, multiscale_l1, tv), the adversarial losses (gan,
feature_matching) and the VGG perceptual loss with the trunk helpers that the other
VGG losses share. Structure, colour, frequency and VGG-statistics losses live in
``losses_extra``. Weights between losses belong to the spec's training steps, not to
the blocks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import nn

from blocks.builtin.vgg import VGG19_LAYERS, VGG19Features, VGGLayer
from blocks.registry import Range, register

PAIR = ("pred", "target")


def _check_same_shape(
    block: str,
    pred: torch.Tensor,
    target: torch.Tensor,
    names: tuple[str, str] = PAIR,
) -> None:
    # Broadcasting a (N, 3, H, W) target against (N, 1, H, W) would give a wrong loss silently.
    if pred.shape != target.shape:
        raise ValueError(
            f"{block}: {names[0]} has shape {tuple(pred.shape)} "
            f"but {names[1]} {tuple(target.shape)}"
        )


@register("l1", kind="loss", inputs=PAIR)
class L1Loss(nn.Module):
    """Mean absolute error between pred and target."""

    def __init__(self) -> None:
        super().__init__()

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_same_shape("l1", pred, target)
        return F.l1_loss(pred, target)


@register("mse", kind="loss", inputs=PAIR)
class MSELoss(nn.Module):
    """Mean squared error between pred and target."""

    def __init__(self) -> None:
        super().__init__()

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_same_shape("mse", pred, target)
        return F.mse_loss(pred, target)


@register("charbonnier", kind="loss", inputs=PAIR)
class CharbonnierLoss(nn.Module):
    """Charbonnier loss, a smooth L1: ``mean(sqrt((pred − target)² + eps²))``.

    Args:
        eps: smoothing; the loss is quadratic for differences well below eps.
    """

    def __init__(self, *, eps: Annotated[float, Range(gt=0)] = 1e-3) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_same_shape("charbonnier", pred, target)
        return torch.sqrt((pred - target).square() + self.eps**2).mean()


@register("multiscale_l1", kind="loss", inputs=PAIR)
class MultiscaleL1Loss(nn.Module):
    """L1 at several scales: Σₛ wₛ · mean|poolˢ(pred) − poolˢ(target)|.

    pool is a 2×2 average pool with stride 2 (an odd height or width drops its last row
    or column), applied s = 0 … scales − 1 times, so scale 0 is the plain L1. PPON's
    second phase uses five scales with weights [1, 0.5, 0.25, 0.125, 0.125].

    Args:
        scales: how many scales, full resolution included; pred's height and width must
            be at least 2^(scales − 1).
        weights: one weight per scale, full resolution first; None halves the weight at
            each scale (1, 0.5, 0.25, …).
    """

    def __init__(
        self,
        *,
        scales: Annotated[int, Range(ge=1)] = 3,
        weights: list[float] | None = None,
    ) -> None:
        super().__init__()
        if scales < 1:
            raise ValueError(f"multiscale_l1: scales is {scales}; it must be at least 1")
        if weights is None:
            weights = [0.5**s for s in range(scales)]
        if len(weights) != scales:
            raise ValueError(
                f"multiscale_l1: weights has {len(weights)} entries but scales is {scales}; "
                "give one weight per scale, or leave weights out"
            )
        self.weights = list(weights)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_same_shape("multiscale_l1", pred, target)
        smallest = 2 ** (len(self.weights) - 1)
        if min(pred.shape[-2:]) < smallest:
            raise ValueError(
                f"multiscale_l1: {len(self.weights)} scales need a height and width of at "
                f"least {smallest}, got {tuple(pred.shape[-2:])}; lower scales"
            )
        total = pred.new_zeros(())
        for s, weight in enumerate(self.weights):
            if s:
                pred, target = F.avg_pool2d(pred, 2), F.avg_pool2d(target, 2)
            total = total + weight * F.l1_loss(pred, target)
        return total


# For each GAN type, the two terms of a discriminator loss: `up(x)` is small when the
# logits x are high ("judged real"), `down(x)` when they are low. Named functions, not
# lambdas, so the loss modules stay picklable.
@register("tv", kind="loss", inputs=("x",))
class TVLoss(nn.Module):
    """Total variation: how much neighbouring pixels differ (a smoothness regularizer).

    The mean over the batch of |x[i+1, j] − x[i, j]|^p and |x[i, j+1] − x[i, j]|^p,
    vertical and horizontal differences averaged separately and summed. p = 2 is the
    squared form White-box Cartoonization regularizes its output with; p = 1 is the
    anisotropic L1 form.

    Args:
        power: the exponent p of each difference, 1 or 2.
    """

    def __init__(self, *, power: Literal[1, 2] = 2) -> None:
        super().__init__()
        self.power = power

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dy = (x[..., 1:, :] - x[..., :-1, :]).abs()
        dx = (x[..., :, 1:] - x[..., :, :-1]).abs()
        if self.power == 2:
            dy, dx = dy.square(), dx.square()
        return dy.mean() + dx.mean()


def _softplus_up(x: torch.Tensor) -> torch.Tensor:
    return F.softplus(-x).mean()


def _softplus_down(x: torch.Tensor) -> torch.Tensor:
    return F.softplus(x).mean()


def _square_up(x: torch.Tensor) -> torch.Tensor:
    return (x - 1).square().mean()


def _square_down(x: torch.Tensor) -> torch.Tensor:
    return x.square().mean()


def _hinge_up(x: torch.Tensor) -> torch.Tensor:
    return F.relu(1 - x).mean()


def _hinge_down(x: torch.Tensor) -> torch.Tensor:
    return F.relu(1 + x).mean()


def _linear_up(x: torch.Tensor) -> torch.Tensor:
    return -x.mean()


def _linear_down(x: torch.Tensor) -> torch.Tensor:
    return x.mean()


Term = Callable[[torch.Tensor], torch.Tensor]
_GAN_TERMS: dict[str, tuple[Term, Term]] = {
    "vanilla": (_softplus_up, _softplus_down),
    "lsgan": (_square_up, _square_down),
    "hinge": (_hinge_up, _hinge_down),
    "wgan": (_linear_up, _linear_down),
}


@register("gan", kind="loss", inputs=("fake", "real"), min_inputs=1)
class GANLoss(nn.Module):
    """Adversarial loss on discriminator logits, for the discriminator or the generator.

    With r = D(real) and f = D(fake) as logits, per type the terms ``up`` (small when
    logits are high) and ``down`` (small when low) are: vanilla up = softplus(−x),
    down = softplus(x) (binary cross-entropy on logits); lsgan up = (x − 1)²,
    down = x²; hinge up = relu(1 − x), down = relu(1 + x); wgan up = −x, down = x;
    each averaged over all elements (patch logits included).

    Standard: discriminator ½·[up(r) + down(f)]; generator up(f), except hinge, where
    the generator uses −mean(f) (SAGAN, BigGAN). ``real`` is needed only by the
    discriminator.

    Relativistic average (ESRGAN's RaGAN): each side is judged against the other's mean,
    r̃ = r − mean(f) and f̃ = f − mean(r); discriminator ½·[up(r̃) + down(f̃)], generator
    ½·[down(r̃) + up(f̃)] (BasicSR's form; ESRGAN uses vanilla). Both inputs are needed.

    Averaging the discriminator's two terms (pix2pix, CycleGAN, BasicSR's ESRGAN) keeps
    its scale that of the generator's loss. Detach ``fake`` for the discriminator step.

    Args:
        target: whose loss this is: the discriminator (real up, fake down) or the
            generator (fake up).
        type: the GAN objective.
        relativistic: use the relativistic average form.
    """

    def __init__(
        self,
        *,
        target: Literal["discriminator", "generator"],
        type: Literal["vanilla", "lsgan", "hinge", "wgan"] = "vanilla",
        relativistic: bool = False,
    ) -> None:
        super().__init__()
        self.for_discriminator = target == "discriminator"
        self.relativistic = relativistic
        self.up, self.down = _GAN_TERMS[type]
        self.generator_term = _linear_up if type == "hinge" else self.up
        self.needs_real = relativistic or self.for_discriminator
        self.description = f"{type}, {'relativistic, ' if relativistic else ''}{target}"

    def forward(self, fake: torch.Tensor, real: torch.Tensor | None = None) -> torch.Tensor:
        if real is None:
            if self.needs_real:
                raise ValueError(f"gan ({self.description}) needs both inputs: fake and real")
            return self.generator_term(fake)
        if self.relativistic:
            real, fake = real - fake.mean(), fake - real.mean()
            if not self.for_discriminator:
                return 0.5 * (self.down(real) + self.up(fake))
        if self.for_discriminator:
            return 0.5 * (self.up(real) + self.down(fake))
        return self.generator_term(fake)

    def extra_repr(self) -> str:
        return self.description


@register("interpolate", kind="op", inputs=("real", "fake"), grad=False, trainable=False)
class Interpolate(nn.Module):
    """Random points between real and fake images, for WGAN-GP's gradient penalty.

    x̂ = ε·real + (1 − ε)·fake with one ε ~ U(0, 1) per sample (torch's global RNG).
    The result is a new leaf that records gradients, so ``gradient_penalty`` can take
    the discriminator's gradient with respect to it; nothing flows back to the inputs.
    """

    def __init__(self) -> None:
        super().__init__()

    def forward(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        _check_same_shape("interpolate", real, fake)
        eps = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device)
        mixed = (eps * real.detach() + (1 - eps) * fake.detach()).float()
        return mixed.requires_grad_(True) if not mixed.is_meta else mixed


@register("gradient_penalty", kind="loss", inputs=("out", "x"))
class GradientPenalty(nn.Module):
    """WGAN-GP's penalty: mean over samples of (‖∇ₓ D(x)‖₂ − target)².

    Connect it as ``{loss: gradient_penalty, in: [d_interp, interp]}`` where
    ``interp: {op: interpolate, in: {real: data.hr, fake: fake}}`` and
    ``d_interp: {call: D, in: interp}``; minimize it in the discriminator's step with
    WGAN-GP's weight (10).

    Args:
        target: the gradient norm the penalty pulls towards (1 in WGAN-GP).
    """

    def __init__(self, *, target: Annotated[float, Range(ge=0)] = 1.0) -> None:
        super().__init__()
        self.target = target

    def forward(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if not x.requires_grad:
            raise ValueError(
                "gradient_penalty: its input 'x' does not record gradients; feed it the "
                "output of an 'interpolate' op, and 'out' the discriminator's output on it"
            )
        (grad,) = torch.autograd.grad(out.sum(), x, create_graph=True)
        norms: torch.Tensor = grad.flatten(1).norm(dim=1)  # unannotated in torch
        return ((norms - self.target) ** 2).mean()


@register("feature_matching", kind="loss", inputs=("x",), variadic=True, min_inputs=2)
class FeatureMatchingLoss(nn.Module):
    """pix2pixHD's feature matching: (1/K) Σₖ mean|fakeₖ − detach(realₖ)|.

    The inputs are K discriminator feature maps of the fake image, then the same K maps
    of the real image in the same order, e.g. ``in: [d_fake.f1, d_fake.f2, d_real.f1,
    d_real.f2]``: input k is paired with input K + k, so the count must be even. The
    real features are detached here, so the loss trains the generator only; gradients
    reach the discriminator through the fake features unless its step detaches them.
    pix2pixHD weights each layer by 4 / (n_layers + 1) and each discriminator by
    1 / num_D and sums; scale this mean in the training step to match.
    """

    def __init__(self) -> None:
        super().__init__()

    def forward(self, *features: torch.Tensor) -> torch.Tensor:
        if len(features) < 2 or len(features) % 2:
            raise ValueError(
                f"feature_matching takes the fake features, then the real features in the "
                f"same order (an even number of inputs, at least 2); got {len(features)}"
            )
        half = len(features) // 2
        total = features[0].new_zeros(())
        for k, (fake, real) in enumerate(zip(features[:half], features[half:], strict=True)):
            names = (f"input {k} (fake)", f"input {half + k} (real)")
            _check_same_shape("feature_matching", fake, real, names)
            total = total + F.l1_loss(fake, real.detach())
        return total / half


#: ESRGAN's perceptual layer: conv5_4 before its activation, weight 1.
ESRGAN_LAYERS: dict[VGGLayer, float] = {"conv5_4": 1.0}


def _cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1 − cosine similarity of the channel vectors, averaged over positions."""
    return (1 - F.cosine_similarity(a, b, dim=1)).mean()


_FEATURE_CRITERIA: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "l1": F.l1_loss,
    "l2": F.mse_loss,
    "cosine": _cosine_distance,
}


def frozen_vgg(block: str, layers: Iterable[str], weights: str, normalize: bool) -> VGG19Features:
    """A frozen VGG19 trunk tapping ``layers``, with ``weights`` read as perceptual reads
    them: "imagenet" (torch's hub cache), a file path, or "random"; ``normalize``: apply
    ImageNet's mean and std to the [0, 1] inputs first."""
    taps = sorted(set(layers))
    if not taps:
        raise ValueError(f"{block}: layers is empty; give at least one, e.g. {{conv5_4: 1.0}}")
    vgg = VGG19Features(taps, normalize=normalize)
    vgg.load_weights(weights)
    return vgg


@register("perceptual", kind="loss", inputs=PAIR)
class PerceptualLoss(nn.Module):
    """Distance between VGG19 features of pred and target: Σ weight · criterion.

    Inputs are RGB images in [0, 1]. The VGG19 trunk is frozen and built only up to the
    deepest layer asked for. A conv layer name (conv5_4) means that conv's output,
    before its ReLU when before_act is true (ESRGAN) or after it otherwise; relu and
    pool names (relu4_4, pool3) mean those outputs whatever before_act says.

    "imagenet" is torchvision's vgg19-dcbb9e9d.pth in torch's hub cache
    (``torch.hub.get_dir()``/checkpoints/, honouring $TORCH_HOME), downloaded there on
    first use with its hash checked, never with LOOM_OFFLINE=1; a path names a
    torchvision-layout file (.pth or .safetensors); "random" keeps random weights, for
    tests and demos only, with a warning.

    Args:
        layers: VGG19 layer name → weight; the loss sums the weighted distances.
        criterion: distance between feature maps: l1, l2 (mean squared) or cosine
            (1 − cosine similarity of channel vectors, averaged over positions).
        before_act: conv layer names take the conv output before its ReLU.
        normalize: subtract ImageNet's mean and divide by its std first.
        weights: imagenet, a file path, or random.
    """

    def __init__(
        self,
        *,
        layers: dict[VGGLayer, float] = ESRGAN_LAYERS,
        criterion: Literal["l1", "l2", "cosine"] = "l1",
        before_act: bool = True,
        normalize: bool = True,
        weights: str = "imagenet",
    ) -> None:
        super().__init__()
        self.layer_weights = dict(layers)  # a copy: the default dict is shared
        # Requested name → the layer whose output is compared.
        self.taps = {name: self._tap(name, before_act) for name in self.layer_weights}
        self.vgg = frozen_vgg("perceptual", self.taps.values(), weights, normalize)
        self.criterion = _FEATURE_CRITERIA[criterion]

    @staticmethod
    def _tap(name: str, before_act: bool) -> str:
        if name.startswith("conv") and not before_act and name in VGG19_LAYERS:
            return name.replace("conv", "relu", 1)
        return name

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_same_shape("perceptual", pred, target)
        pred_features = self.vgg(pred)
        target_features = self.vgg(target)
        total = pred.new_zeros(())
        for name, weight in self.layer_weights.items():
            tap = self.taps[name]
            total = total + weight * self.criterion(pred_features[tap], target_features[tap])
        return total

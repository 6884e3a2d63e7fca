"""Frame-interpolation losses (RIFE, Huang et al., ECCV 2022).

laplacian_l1 compares two images level by level of their Laplacian pyramids, so every
band of frequencies counts alike; distill_flow is RIFE's privileged distillation: the
student's flow moves towards the teacher's (which saw the middle frame) wherever the
teacher's blend is the better one. Each returns a scalar tensor.
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn

from blocks.builtin.losses import PAIR, _check_same_shape
from blocks.memo import shared
from blocks.registry import Range, register

#: The 5×5 binomial kernel (the outer product of [1, 4, 6, 4, 1] / 16): the Gaussian of
#: Burt and Adelson's pyramid, as RIFE's laplacian.py uses it.
_BINOMIAL = (1.0, 4.0, 6.0, 4.0, 1.0)


def binomial_kernel() -> torch.Tensor:
    """The 5×5 binomial kernel, shaped (1, 1, 5, 5)."""
    row = torch.tensor(_BINOMIAL)
    return (torch.outer(row, row) / 256.0).view(1, 1, 5, 5)


def _blur(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), kernel, groups=x.shape[1])


def laplacian_pyramid(
    x: torch.Tensor, levels: int, kernel: torch.Tensor | None = None
) -> list[torch.Tensor]:
    """The first ``levels`` band-pass images of x: each level is the image minus the
    expansion of its blurred, halved self (zeros inserted, blurred with 4 × the kernel);
    the halved image is the next level's input. An odd size's expansion is cropped to
    the image's size. ``kernel`` is :func:`binomial_kernel` (built here when not given;
    the loss keeps one rather than build it at every call)."""
    base = (binomial_kernel() if kernel is None else kernel).to(x.device, x.dtype)
    down_kernel = base.expand(x.shape[1], 1, 5, 5)
    up_kernel = (4 * base).expand(x.shape[1], 1, 5, 5)
    bands = []
    current = x
    for _ in range(levels):
        down = _blur(current, down_kernel)[..., ::2, ::2]
        n, c, h, w = down.shape
        spread = down.new_zeros(n, c, 2 * h, 2 * w)
        spread[..., ::2, ::2] = down
        up = _blur(spread, up_kernel)[..., : current.shape[-2], : current.shape[-1]]
        bands.append(current - up)
        current = down
    return bands


@register("laplacian_l1", kind="loss", inputs=PAIR)
class LaplacianL1Loss(nn.Module):
    """Σ over pyramid levels of mean|Lₖ(pred) − Lₖ(target)| (RIFE's LapLoss).

    A plain L1 is dominated by the low frequencies a blurry blend already gets right;
    the Laplacian pyramid weighs every band of detail alike, so a sharp but slightly
    misplaced edge costs less than a smeared one. Each level uses reflection at the
    borders, so an image must stay at least 3 pixels high and wide down to the last
    level.

    Args:
        levels: pyramid levels compared (RIFE: 5); the height and width must be at
            least 3 · 2^(levels − 1).
    """

    kernel: torch.Tensor  # binomial_kernel(), moved with the module

    def __init__(self, *, levels: Annotated[int, Range(ge=1, le=12)] = 5) -> None:
        super().__init__()
        if not 1 <= levels <= 12:
            raise ValueError(f"laplacian_l1: levels is {levels}; it must be from 1 to 12")
        self.levels = levels
        self.register_buffer("kernel", binomial_kernel(), persistent=False)

    def pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x's pyramid; within one training step, each tensor's is computed once (two
        losses of one step often compare with the same target)."""
        memo = shared()
        if memo is None:
            return laplacian_pyramid(x, self.levels, self.kernel)
        key = ("laplacian", self.levels, id(x), x._version, torch.is_grad_enabled())
        found = memo.get(key)
        if found is None or found[0] is not x:
            found = memo[key] = (x, laplacian_pyramid(x, self.levels, self.kernel))
        return found[1]

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_same_shape("laplacian_l1", pred, target)
        smallest = 3 * 2 ** (self.levels - 1)
        if min(pred.shape[-2:]) < smallest:
            raise ValueError(
                f"laplacian_l1: {self.levels} levels need a height and width of at least "
                f"{smallest}, got {tuple(pred.shape[-2:])}; lower levels or crop larger"
            )
        pairs = zip(self.pyramid(pred), self.pyramid(target), strict=True)
        total = pred.new_zeros(())
        for a, b in pairs:
            total = total + F.l1_loss(a, b)
        return total

    def extra_repr(self) -> str:
        return f"levels={self.levels}"


@register(
    "distill_flow",
    kind="loss",
    inputs=("flow", "merged", "flow_teacher", "merged_teacher", "target"),
)
class DistillFlowLoss(nn.Module):
    """RIFE's privileged distillation: mean(D · M) over pixels.

    F is one student level's intermediate flow (N, 4, H, W: both directions) and
    F_teacher the teacher's, detached here, so only the student learns from it. M is 1
    where the teacher's blend is better than this level's blend by more than
    ``margin`` (mean absolute error over channels, per pixel) and 0 elsewhere: the
    student is not pulled towards a teacher that is wrong there. RIFE sums this over
    its three student levels with weight 0.01. D is the root mean square of
    F_teacher − F over the flow's channels, as in RIFE, floored at 1e-6 pixels so that
    equal flows give a zero gradient, not NaN.

    Args:
        margin: how much lower the teacher's per-pixel error must be (images in [0, 1]).
    """

    def __init__(self, *, margin: Annotated[float, Range(ge=0)] = 0.01) -> None:
        super().__init__()
        self.margin = margin

    def forward(
        self,
        flow: torch.Tensor,
        merged: torch.Tensor,
        flow_teacher: torch.Tensor,
        merged_teacher: torch.Tensor,
        target: torch.Tensor,
    ) -> torch.Tensor:
        _check_same_shape("distill_flow", flow, flow_teacher)
        _check_same_shape("distill_flow", merged, target)
        _check_same_shape("distill_flow", merged_teacher, target)
        if flow.shape[-2:] != merged.shape[-2:]:
            raise ValueError(
                f"distill_flow: the flow {tuple(flow.shape)} and the images "
                f"{tuple(merged.shape)} differ in height and width"
            )
        with torch.no_grad():
            student_err = (merged - target).abs().mean(1, keepdim=True)
            teacher_err = (merged_teacher - target).abs().mean(1, keepdim=True)
            mask = (student_err > teacher_err + self.margin).to(flow.dtype)
        distance = (
            (flow_teacher.detach() - flow).square().mean(1, keepdim=True).clamp_min(1e-12).sqrt()
        )
        return (distance * mask).mean()

    def extra_repr(self) -> str:
        return f"margin={self.margin}"

"""Classification losses: cross-entropy over class logits.

A discriminator with an auxiliary classifier (SFTGAN's ACD) or a segmentation head
gives class logits; its targets are either class indices or the probability maps an
``sr_seg`` dataset provides. The runtime hands every loss float tensors (in fp32,
outside autocast), so class indices arrive as whole-number floats and are turned
back into integers here.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import nn

from blocks.registry import Range, register


@register("cross_entropy", kind="loss", inputs=("logits", "target"))
class CrossEntropyLoss(nn.Module):
    """Cross-entropy between class logits and target classes (mean over the targets).

    ``logits`` are (N, C) — one class per sample, as an auxiliary classifier gives —
    or (N, C, H, W), one per pixel. ``target`` depends on ``labels``:

    * ``index``: class indices, (N,) or (N, H, W); whole numbers in [0, C).
    * ``probabilities``: per-class probability maps with C channels, such as an
      ``sr_seg`` dataset's ``data.seg``. For per-sample logits each sample's class is
      the one with the largest mean probability over the map (the class that covers
      most of the crop; a map of one pixel or an (N, C) target is its argmax); for
      per-pixel logits each pixel's class is its argmax, and the map must have the
      logits' H and W.

    The mean is torch's: over the targets that are not ``ignore_index``, weighted by
    ``weights``. A batch whose every target is ignored gives 0 (not torch's NaN), so a
    batch of background crops does not count as a failed step.

    Args:
        labels: what the target holds: class indices or probability maps.
        ignore_index: a class whose targets add nothing to the loss (SFTGAN ignores
            background, 0, whose crops may show any class); null ignores none.
        weights: one weight per class (C numbers); null weighs every class alike.
        label_smoothing: mix each one-hot target with the uniform distribution by
            this much (0 is plain cross-entropy).
    """

    def __init__(
        self,
        *,
        labels: Literal["index", "probabilities"] = "index",
        ignore_index: Annotated[int, Range(ge=0)] | None = None,
        weights: list[Annotated[float, Range(ge=0)]] | None = None,
        label_smoothing: Annotated[float, Range(ge=0, le=1)] = 0.0,
    ) -> None:
        super().__init__()
        self.labels = labels
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing
        self.class_weights: torch.Tensor | None
        self.register_buffer(
            "class_weights",
            None if weights is None else torch.tensor(weights, dtype=torch.float32),
            persistent=False,
        )

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        classes = self._check_logits(logits)
        # Shape inference runs losses on the meta device, where values are unknown: the
        # shapes are checked there, the values (indices, the count of targets) here only.
        known = not (logits.is_meta or target.is_meta)
        index = (
            self._from_probabilities(logits, target)
            if self.labels == "probabilities"
            else self._from_index(logits, target, classes, known)
        )
        weight = self.class_weights
        if weight is not None and weight.numel() != classes:
            raise ValueError(
                f"cross_entropy: {weight.numel()} class weights for logits of {classes} "
                "classes; give one weight per class"
            )
        ignore = -100 if self.ignore_index is None else self.ignore_index
        per_target = F.cross_entropy(
            logits,
            index,
            weight=weight,
            ignore_index=ignore,
            reduction="none",
            label_smoothing=self.label_smoothing,
        )
        if not known:
            return per_target.mean()
        counted = index != ignore
        share = counted.to(logits.dtype)
        if weight is not None:
            share = share * weight[index.clamp(0, classes - 1)]
        total = share.sum()
        if not bool(total > 0):  # every target ignored (or weighted 0): nothing to learn
            return logits.sum() * 0.0 + 0.0  # + 0.0: a plain 0, not -0, in the logs
        # per_target is already weighted (and 0 where ignored); torch's mean divides by
        # the weights of the counted targets.
        return per_target.sum() / total

    @staticmethod
    def _check_logits(logits: torch.Tensor) -> int:
        if logits.dim() not in (2, 4):
            raise ValueError(
                f"cross_entropy: logits have shape {tuple(logits.shape)}; expected (N, C) "
                "class logits per sample or (N, C, H, W) per pixel"
            )
        return int(logits.shape[1])

    def _from_index(
        self, logits: torch.Tensor, target: torch.Tensor, classes: int, known: bool
    ) -> torch.Tensor:
        want = (logits.shape[0], *logits.shape[2:])
        if tuple(target.shape) != want:
            raise ValueError(
                f"cross_entropy: labels index needs a target of shape {want} (one class "
                f"index per {'sample' if logits.dim() == 2 else 'pixel'}), got "
                f"{tuple(target.shape)}; for probability maps set labels: probabilities"
            )
        index = target.round()
        if not known:
            return index.long()
        if not torch.equal(index, target):
            raise ValueError(
                "cross_entropy: labels index needs whole-number class indices, but the "
                "target holds fractions; for probability maps set labels: probabilities"
            )
        index = index.long()
        allowed = (index >= 0) & (index < classes)
        if self.ignore_index is not None:
            allowed |= index == self.ignore_index
        if not bool(allowed.all()):
            bad = index[~allowed]
            raise ValueError(
                f"cross_entropy: class index {int(bad[0])} outside [0, {classes}) "
                f"({int(bad.numel())} such targets)"
            )
        return index

    @staticmethod
    def _from_probabilities(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        classes = logits.shape[1]
        if target.dim() not in (2, 4) or target.shape[:2] != logits.shape[:2]:
            raise ValueError(
                f"cross_entropy: labels probabilities needs maps of shape (N, {classes}, "
                f"H, W) or (N, {classes}) for logits {tuple(logits.shape)}, got "
                f"{tuple(target.shape)}"
            )
        if logits.dim() == 2:
            mean = target.flatten(2).mean(dim=2) if target.dim() == 4 else target
            return mean.argmax(dim=1)
        if target.shape[2:] != logits.shape[2:]:
            raise ValueError(
                f"cross_entropy: per-pixel logits of size {tuple(logits.shape[2:])} need "
                f"probability maps of the same size, got {tuple(target.shape[2:])}"
            )
        return target.argmax(dim=1)

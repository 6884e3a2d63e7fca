"""Re-parameterized weights: tensors a file must carry that the network does not train.

Some published architectures train a block as several linear branches and run it as
one conv whose weights are computed from them (SPAN's ``Conv3XC``: a 1×1 skip ``sk``
plus ``conv.0`` 1×1 → ``conv.1`` 3×3 → ``conv.2`` 1×1, run as ``eval_conv`` 3×3).
Loom's network holds the branches only, so nothing is trained twice or left without a
gradient. :func:`derived_weights` computes the single conv at export, and
:func:`drop_derived` takes a file's copy out before loading, after checking it agrees
with the file's branches.

The arithmetic is general: a chain of stride-1, ungrouped, undilated convs applied one
after another without padding between them is one conv whose kernel is the
(full) convolution of their kernels, and whose bias carries each bias through the
convs after it; branches that add up are one conv whose kernel is the sum of their
kernels, centred in the largest. The composition is exact for a block that pads its
input once, with zeros, before the chains (what a "same" conv of the merged kernel
sees): a padded pixel becomes the first conv's bias in both forms.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

Kernel = tuple[torch.Tensor, torch.Tensor]  # (weight (O, I, k, k), bias (O,))

#: Agreement required between a file's stored merged conv and its branches, relative
#: to the largest weight: float32 composition differs at about 1e-7 of it.
TOLERANCE = 1e-4


@dataclass(frozen=True)
class BranchSum:
    """A conv (``into``) that equals the sum of chains of convs, all under one prefix."""

    name: str  # the architecture's name for the block, for messages
    into: str  # the merged conv's module name, relative to the block
    branches: tuple[tuple[str, ...], ...]  # each branch's convs, in the order applied

    @property
    def modules(self) -> tuple[str, ...]:
        return tuple(m for branch in self.branches for m in branch)


#: SPAN's Conv3XC (Wan et al., 2024): eval_conv = conv.2 ∘ conv.1 ∘ conv.0 + sk.
CONV3XC = BranchSum("SPAN Conv3XC", "eval_conv", (("conv.0", "conv.1", "conv.2"), ("sk",)))
RULES = (CONV3XC,)


class ReparamError(ValueError):
    """A block named like a re-parameterizable one is not built as the rule needs."""


def compose(chain: Sequence[Kernel]) -> Kernel:
    """The one conv that computes ``chain[-1](… chain[0](x))`` for unpadded convs."""
    weight, bias = chain[0]
    for w_next, b_next in chain[1:]:
        k_next, k = w_next.shape[-1], weight.shape[-1]
        merged = weight.new_zeros(w_next.shape[0], weight.shape[1], k + k_next - 1, k + k_next - 1)
        # Tap (u, v) of the next conv reads the previous output shifted by (u, v): the
        # previous kernel lands at that offset, mixed by the tap's channel matrix.
        for u in range(k_next):
            for v in range(k_next):
                tap = w_next[:, :, u, v]
                merged[:, :, u : u + k, v : v + k] += torch.einsum("om,mihw->oihw", tap, weight)
        bias = torch.einsum("omhw,m->o", w_next, bias) + b_next
        weight = merged
    return weight, bias


def add_branches(kernels: Sequence[Kernel]) -> Kernel:
    """The one conv that computes the sum of parallel convs ("same" padding each)."""
    size = max(w.shape[-1] for w, _ in kernels)
    weight = sum(_centre(w, size) for w, _ in kernels)
    bias = sum(b for _, b in kernels)
    assert isinstance(weight, torch.Tensor) and isinstance(bias, torch.Tensor)
    return weight, bias


def _centre(weight: torch.Tensor, size: int) -> torch.Tensor:
    pad = (size - weight.shape[-1]) // 2
    return F.pad(weight, [pad, pad, pad, pad])


def instances(module: nn.Module, rule: BranchSum = CONV3XC) -> list[str]:
    """The prefixes (``block_1.c1_r``) under which ``module`` holds the rule's branches.

    Raises :class:`ReparamError` when such a block has a conv the composition cannot
    merge (a stride, groups, dilation, padding inside a chain, or a missing bias), so an
    export never writes a merged conv that computes something else.
    """
    convs = {name: m for name, m in module.named_modules() if isinstance(m, nn.Conv2d)}
    found = []
    first = rule.modules[0]
    for name in convs:
        if not (name == first or name.endswith("." + first)):
            continue
        prefix = name.removesuffix(first).removesuffix(".")
        full = [f"{prefix}.{m}" if prefix else m for m in rule.modules]
        if all(f in convs for f in full):
            for f in full:
                _check_mergeable(f, convs[f], rule)
            found.append(prefix)
    return found


def _check_mergeable(name: str, conv: nn.Conv2d, rule: BranchSum) -> None:
    if (
        conv.stride != (1, 1)
        or conv.dilation != (1, 1)
        or conv.groups != 1
        or conv.padding != (0, 0)
        or conv.bias is None
    ):
        raise ReparamError(
            f"{name}: a {rule.name} branch must be an unpadded stride-1 conv with bias, "
            f"no groups and no dilation, to merge into {rule.into}; this one has "
            f"stride {conv.stride}, padding {conv.padding}, groups {conv.groups}, "
            f"dilation {conv.dilation}, bias {conv.bias is not None}"
        )


def merged(state: Mapping[str, torch.Tensor], prefix: str, rule: BranchSum = CONV3XC) -> Kernel:
    """The rule's merged conv for the block at ``prefix``, from the tensors in ``state``."""

    def key(module: str) -> str:
        return f"{prefix}.{module}" if prefix else module

    # In float64, so the merged conv is as exact as the file's own precision allows.
    def kernel(module: str) -> Kernel:
        return state[f"{key(module)}.weight"].double(), state[f"{key(module)}.bias"].double()

    branches = [compose([kernel(m) for m in branch]) for branch in rule.branches]
    weight, bias = add_branches(branches)
    dtype = state[f"{key(rule.modules[0])}.weight"].dtype
    return weight.to(dtype).contiguous(), bias.to(dtype).contiguous()


def _into(prefix: str, rule: BranchSum) -> str:
    return f"{prefix}.{rule.into}" if prefix else rule.into


def derived_weights(
    module: nn.Module, state: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Every merged conv of ``module``'s re-parameterizable blocks, by state-dict key."""
    out: dict[str, torch.Tensor] = {}
    for rule in RULES:
        for prefix in instances(module, rule):
            weight, bias = merged(state, prefix, rule)
            out[f"{_into(prefix, rule)}.weight"] = weight
            out[f"{_into(prefix, rule)}.bias"] = bias
    return out


def drop_derived(
    module: nn.Module, state: Mapping[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """A file's state without the merged convs that ``module`` computes instead.

    Returns the remaining state and the merged convs that disagree with the file's own
    branches (by more than :data:`TOLERANCE` of the largest weight). Tools that run the
    merged conv (SPAN's eval mode in spandrel recomputes it from the branches on every
    call) would compute something other than the branches for those. A merged conv is
    kept (and reported as unexpected) when the file lacks a branch it comes from.
    """
    remaining = dict(state)
    disagree: list[str] = []
    target = module.state_dict()
    for rule in RULES:
        for prefix in instances(module, rule):
            into = _into(prefix, rule)
            keys = (f"{into}.weight", f"{into}.bias")
            if any(k in target or k not in state for k in keys):
                continue
            try:
                weight, bias = merged(state, prefix, rule)
            except (KeyError, RuntimeError):  # a branch missing or of another shape
                continue
            stored_w, stored_b = (state[k] for k in keys)
            if stored_w.shape != weight.shape or stored_b.shape != bias.shape:
                disagree.append(into)
            else:
                scale = max(float(weight.abs().max()), float(bias.abs().max()), 1e-12)
                diff = max(
                    float((stored_w - weight).abs().max()), float((stored_b - bias).abs().max())
                )
                if diff > TOLERANCE * scale:
                    disagree.append(into)
            for k in keys:
                del remaining[k]
    return remaining, disagree

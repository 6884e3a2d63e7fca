"""Applying a node's ``init:`` (:mod:`engine.spec.inits` has the rules) to its module."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from blocks.builtin.tensors import TensorNode
from engine.spec.inits import NEEDS_MATRIX, Init


def targets(module: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The weights an init draws (kernels of two or more dimensions; a tensor node's
    tensor whatever its shape) and the biases it may fill."""
    if isinstance(module, TensorNode):
        return [module.value], []
    weights: list[torch.Tensor] = []
    biases: list[torch.Tensor] = []
    for layer in module.modules():
        weight: torch.Tensor | None
        if parametrize.is_parametrized(layer, "weight"):  # spectral norm: the raw weight
            weight = layer.get_parameter("parametrizations.weight.original")
        else:
            weight = layer._parameters.get("weight")
        if weight is not None and weight.dim() >= 2:
            weights.append(weight)
        bias = layer._parameters.get("bias")
        if bias is not None:
            biases.append(bias)
    return weights, biases


def problem(init: Init, module: nn.Module) -> str | None:
    """Why ``init`` cannot apply to ``module``, if it cannot."""
    weights, biases = targets(module)
    if not weights and not (biases and init.get("bias") is not None):
        return "it has no weights to initialize" if init.explicit else None
    if init.type in NEEDS_MATRIX:
        flat = [tuple(w.shape) for w in weights if w.dim() < 2]
        if flat:
            return f"init '{init.type}' needs a tensor of two or more dimensions, not {flat[0]}"
    return None


@torch.no_grad()
def apply(init: Init, module: nn.Module) -> None:
    """Draw ``module``'s weights (and fill its biases) as ``init`` says."""
    weights, biases = targets(module)
    for weight in weights:
        _draw(init, weight)
        scale = init.get("scale")
        if scale is not None:
            weight.mul_(scale)
    # A zeroed layer is zero through and through unless its bias is given.
    fill = init.get("bias", 0.0 if init.type == "zeros" else None)
    if fill is not None:
        for bias in biases:
            bias.fill_(fill)


def _draw(init: Init, w: torch.Tensor) -> None:
    get = init.get
    kind = init.type
    if kind == "zeros":
        nn.init.zeros_(w)
    elif kind == "ones":
        nn.init.ones_(w)
    elif kind == "constant":
        nn.init.constant_(w, get("value", 0.0))
    elif kind == "normal":
        nn.init.normal_(w, get("mean", 0.0), get("std", 1.0))
    elif kind == "trunc_normal":
        # Absolute bounds of ±2 unless given, as torch and timm draw (for std 0.02 they
        # cut nothing: published transformers start so).
        nn.init.trunc_normal_(
            w, get("mean", 0.0), get("std", 1.0), get("low", -2.0), get("high", 2.0)
        )
    elif kind == "uniform":
        nn.init.uniform_(w, get("low", 0.0), get("high", 1.0))
    elif kind in ("kaiming_normal", "kaiming_uniform"):
        draw = nn.init.kaiming_normal_ if kind == "kaiming_normal" else nn.init.kaiming_uniform_
        draw(
            w,
            a=get("a", 0.0),
            mode=get("mode", "fan_in"),
            nonlinearity=get("nonlinearity", "leaky_relu"),
        )
    elif kind == "xavier_normal":
        nn.init.xavier_normal_(w, gain=get("gain", 1.0))
    elif kind == "xavier_uniform":
        nn.init.xavier_uniform_(w, gain=get("gain", 1.0))
    elif kind == "orthogonal":
        nn.init.orthogonal_(w, gain=get("gain", 1.0))
    else:  # parse_init admits only the types above
        raise AssertionError(kind)

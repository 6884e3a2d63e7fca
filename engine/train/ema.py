"""An exponential moving average of chosen networks' weights (``train.ema``).

Validation and exported weights use the average. It is updated after each optimizer
step that changes its network; before ``start`` it copies the weights.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from engine.compile.network import unwrap
from engine.settings import EmaSettings


class Ema:
    def __init__(self, settings: EmaSettings | None, networks: dict[str, nn.Module]) -> None:
        self.decay = settings.decay if settings is not None else 0.0
        self.start = settings.start if settings is not None else 0
        names = settings.networks if settings is not None else ()
        self.copies: dict[str, nn.Module] = {
            n: copy.deepcopy(unwrap(networks[n])).eval().requires_grad_(False) for n in names
        }

    def get(self, name: str, default: nn.Module) -> nn.Module:
        return self.copies.get(name, default)

    def __contains__(self, name: str) -> bool:
        return name in self.copies

    @torch.no_grad()
    def update(self, names: Iterable[str], networks: dict[str, nn.Module], iteration: int) -> None:
        decay = 0.0 if iteration < self.start else self.decay
        for name in names:
            if name not in self.copies:
                continue
            live = unwrap(networks[name]).state_dict()
            for key, value in self.copies[name].state_dict().items():
                if value.dtype.is_floating_point:
                    value.mul_(decay).add_(live[key].detach(), alpha=1 - decay)
                else:
                    value.copy_(live[key])

    def state_dict(self) -> dict[str, Any]:
        return {n: m.state_dict() for n, m in self.copies.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, weights in state.items():
            if name in self.copies:
                self.copies[name].load_state_dict(weights)

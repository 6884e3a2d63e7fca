"""Degradations declared in the spec (placeholder until the pipeline lands)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


class Pipeline:
    def __init__(self, steps: tuple[Any, ...] = ()) -> None:
        self.steps = steps

    @classmethod
    def parse(cls, steps: Any, *, where: str) -> Pipeline:
        return cls(tuple(steps))

    def __bool__(self) -> bool:
        return bool(self.steps)

    def run(
        self, image: torch.Tensor, rng: np.random.Generator, *, final_size: tuple[int, int]
    ) -> torch.Tensor:
        return image

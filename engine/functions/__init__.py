"""Test functions for trajectories. Each module here defines one; see engine.registry."""

from __future__ import annotations

from typing import ClassVar, TypeVar

import torch

from engine.registry import Component, Params

FP = TypeVar("FP", bound=Params)


class Function(Component[FP]):
    kind = "function"
    #: value() is pure tensor maths (no reads back to the host), so that runs on it can be stacked under
    #: torch.func.vmap into an ensemble (engine.vectorized)
    vmap_safe: ClassVar[bool] = False

    @classmethod
    def value(cls, x: torch.Tensor, params: FP) -> torch.Tensor:
        """f(x) for a point x of shape (dim,), differentiable by autograd."""
        raise NotImplementedError

    @classmethod
    def dim(cls, params: FP) -> int | None:
        """Required dimension of x, or None for any."""
        return 2

    @classmethod
    def default_x0(cls, params: FP) -> list[float]:
        raise NotImplementedError

    @classmethod
    def minimizers(cls, params: FP) -> list[list[float]]:
        """The known global minimizers, for plots and tests."""
        raise NotImplementedError

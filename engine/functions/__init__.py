"""Test functions for trajectories. Each module here defines one; see engine.registry."""

from __future__ import annotations

import torch

from engine.registry import Component, Params


class Function(Component):
    kind = "function"

    @classmethod
    def value(cls, x: torch.Tensor, params: Params) -> torch.Tensor:
        """f(x) for a point x of shape (dim,), differentiable by autograd."""
        raise NotImplementedError

    @classmethod
    def dim(cls, params: Params) -> int | None:
        """Required dimension of x, or None for any."""
        return 2

    @classmethod
    def default_x0(cls, params: Params) -> list[float]:
        raise NotImplementedError

    @classmethod
    def minimizers(cls, params: Params) -> list[list[float]]:
        """The known global minimizers, for plots and tests."""
        raise NotImplementedError

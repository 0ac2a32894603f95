"""Optimizers. Each module here defines one; see engine.registry for how they are found."""

from __future__ import annotations

from typing import Annotated, ClassVar

import torch
from pydantic import Field

from engine.registry import Component, Params

Beta = Annotated[float, Field(ge=0.0, lt=1.0)]
NonNegative = Annotated[float, Field(ge=0.0)]


class OptimizerParams(Params):
    lr: float = Field(1e-3, gt=0.0, description="learning rate")


class Optimizer(Component):
    kind = "optimizer"
    Params: ClassVar[type[OptimizerParams]] = OptimizerParams
    #: closure-based optimizers (L-BFGS) re-evaluate the loss, which is only sound on the full batch
    full_batch_only: ClassVar[bool] = False
    #: the parameter a refusal for memory names when the optimizer's state is the largest part; None names it
    size_param: ClassVar[str | None] = None

    @classmethod
    def state_multiple(cls, params: OptimizerParams) -> float:
        """The optimizer's state as a multiple of the parameters (momentum 1, Adam's two moments 2),
        for sizing a run before it trains. The default assumes two, as Adam; a plug-in may say."""
        return 2.0

    @classmethod
    def build(cls, parameters: list[torch.Tensor], params: OptimizerParams) -> torch.optim.Optimizer:
        raise NotImplementedError

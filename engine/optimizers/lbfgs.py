from typing import Literal

import torch
from pydantic import Field

from engine.optimizers import NonNegative, Optimizer, OptimizerParams


class LBFGSParams(OptimizerParams):
    lr: float = Field(1.0, gt=0.0, description="learning rate")
    max_iter: int = Field(20, ge=1, description="iterations per optimizer step")
    history_size: int = Field(100, ge=1, description="number of curvature pairs kept")
    tolerance_grad: NonNegative = Field(1e-7, description="stop when the largest gradient entry is below this")
    tolerance_change: NonNegative = Field(1e-9, description="stop when the loss or the step changes less than this")
    line_search_fn: Literal["strong_wolfe"] | None = None


class LBFGS(Optimizer):
    name = "lbfgs"
    description = "Limited-memory BFGS, optionally with a strong Wolfe line search: torch.optim.LBFGS."
    Params = LBFGSParams
    full_batch_only = True

    @classmethod
    def build(cls, parameters, params: LBFGSParams) -> torch.optim.Optimizer:
        return torch.optim.LBFGS(parameters, **params.model_dump())

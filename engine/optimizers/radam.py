import torch
from pydantic import Field

from engine.optimizers import Beta, NonNegative, Optimizer, OptimizerParams


class RAdamParams(OptimizerParams):
    betas: tuple[Beta, Beta] = Field((0.9, 0.999), description="decay rates of the first and second moments")
    eps: float = Field(1e-8, gt=0.0, description="added to the denominator for numerical stability")
    weight_decay: NonNegative = 0.0


class RAdam(Optimizer):
    name = "radam"
    description = "Rectified Adam, variance-rectified adaptive step (Liu et al.): torch.optim.RAdam."
    Params = RAdamParams

    @classmethod
    def build(cls, parameters, params: RAdamParams) -> torch.optim.Optimizer:
        return torch.optim.RAdam(parameters, **params.model_dump())

    @classmethod
    def state_multiple(cls, params: RAdamParams) -> float:
        return 2.0  # the two moments

import torch
from pydantic import Field

from engine.optimizers import Beta, NonNegative, Optimizer, OptimizerParams


class NAdamParams(OptimizerParams):
    lr: float = Field(2e-3, gt=0.0, description="learning rate")
    betas: tuple[Beta, Beta] = Field((0.9, 0.999), description="decay rates of the first and second moments")
    eps: float = Field(1e-8, gt=0.0, description="added to the denominator for numerical stability")
    weight_decay: NonNegative = 0.0
    momentum_decay: NonNegative = Field(4e-3, description="decay of the momentum schedule ψ")


class NAdam(Optimizer):
    name = "nadam"
    description = "Adam with Nesterov momentum (Dozat): torch.optim.NAdam."
    Params = NAdamParams

    @classmethod
    def build(cls, parameters, params: NAdamParams) -> torch.optim.Optimizer:
        return torch.optim.NAdam(parameters, **params.model_dump())

    @classmethod
    def state_multiple(cls, params: NAdamParams) -> float:
        return 2.0  # the two moments

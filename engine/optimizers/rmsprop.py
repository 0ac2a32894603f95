import torch
from pydantic import Field

from engine.optimizers import Beta, NonNegative, Optimizer, OptimizerParams


class RMSpropParams(OptimizerParams):
    lr: float = Field(1e-2, gt=0.0, description="learning rate")
    alpha: Beta = Field(0.99, description="decay rate of the running mean of squared gradients")
    eps: float = Field(1e-8, gt=0.0, description="added to the denominator for numerical stability")
    weight_decay: NonNegative = 0.0
    momentum: NonNegative = 0.0
    centered: bool = Field(False, description="normalise by the estimated variance instead of the second moment")


class RMSprop(Optimizer):
    name = "rmsprop"
    description = "RMSProp (Hinton), optionally centered and with momentum: torch.optim.RMSprop."
    Params = RMSpropParams

    @classmethod
    def build(cls, parameters, params: RMSpropParams) -> torch.optim.Optimizer:
        return torch.optim.RMSprop(parameters, **params.model_dump())

    @classmethod
    def state_multiple(cls, params: RMSpropParams) -> float:
        return 1.0 + bool(params.momentum) + params.centered  # square average, momentum, mean gradient

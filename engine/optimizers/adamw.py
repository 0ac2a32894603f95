import torch
from pydantic import Field

from engine.optimizers import Beta, NonNegative, Optimizer, OptimizerParams


class AdamWParams(OptimizerParams):
    betas: tuple[Beta, Beta] = Field((0.9, 0.999), description="decay rates of the first and second moments")
    eps: float = Field(1e-8, gt=0.0, description="added to the denominator for numerical stability")
    weight_decay: NonNegative = Field(1e-2, description="decoupled weight decay coefficient")
    amsgrad: bool = Field(False, description="use the running maximum of the second moment (AMSGrad)")


class AdamW(Optimizer):
    name = "adamw"
    description = "Adam with decoupled weight decay (Loshchilov & Hutter): torch.optim.AdamW."
    Params = AdamWParams

    @classmethod
    def build(cls, parameters, params: AdamWParams) -> torch.optim.Optimizer:
        return torch.optim.AdamW(parameters, **params.model_dump())

    @classmethod
    def state_multiple(cls, params: AdamWParams) -> float:
        return 3.0 if params.amsgrad else 2.0  # the two moments, and their running maximum

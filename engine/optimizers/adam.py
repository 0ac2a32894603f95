import torch
from pydantic import Field

from engine.optimizers import Beta, NonNegative, Optimizer, OptimizerParams
from engine.transforms import TransformOptimizer, adam


class AdamParams(OptimizerParams):
    betas: tuple[Beta, Beta] = Field((0.9, 0.999), description="decay rates of the first and second moments")
    eps: float = Field(1e-8, gt=0.0, description="added to the denominator for numerical stability")
    weight_decay: NonNegative = 0.0
    amsgrad: bool = Field(False, description="use the running maximum of the second moment (AMSGrad)")
    bias_correction: bool = Field(True, description="divide the moments by 1 − β^t; off: m̂ = m and v̂ = v")


class Adam(Optimizer):
    name = "adam"
    description = "Adam (Kingma & Ba), optionally AMSGrad: torch.optim.Adam, or our own rule without bias correction."
    Params = AdamParams

    @classmethod
    def build(cls, parameters, params: AdamParams) -> torch.optim.Optimizer:
        if params.bias_correction:
            return torch.optim.Adam(parameters, **params.model_dump(exclude={"bias_correction"}))
        b1, b2 = params.betas
        rule = adam(b1, b2, params.eps, params.weight_decay, params.amsgrad, bias_correction=False)
        return TransformOptimizer(parameters, rule, lr=params.lr)

    @classmethod
    def state_multiple(cls, params: AdamParams) -> float:
        return 3.0 if params.amsgrad else 2.0  # the two moments, and their running maximum

import torch
from pydantic import Field

from engine import transforms
from engine.optimizers import Beta, NonNegative, Optimizer, OptimizerParams, TestSettings


class AdamWParams(OptimizerParams):
    betas: tuple[Beta, Beta] = Field((0.9, 0.999), description="decay rates of the first and second moments")
    eps: float = Field(1e-8, gt=0.0, description="added to the denominator for numerical stability")
    weight_decay: NonNegative = Field(1e-2, description="decoupled weight decay coefficient")
    amsgrad: bool = Field(False, description="use the running maximum of the second moment (AMSGrad)")


class AdamW(Optimizer[AdamWParams]):
    name = "adamw"
    description = "Adam with decoupled weight decay (Loshchilov & Hutter): torch.optim.AdamW."
    Params = AdamWParams
    torch_optimizer = torch.optim.AdamW
    elementwise = True
    test_settings = TestSettings(
        {"parabola": {"lr": 0.1, "weight_decay": 0.0}, "rosenbrock": {"lr": 0.02, "weight_decay": 0.0}}
    )

    @classmethod
    def rule(cls, params: AdamWParams) -> transforms.GradientTransformation:
        return transforms.adamw(*params.betas, params.eps, params.weight_decay, params.amsgrad)

    @classmethod
    def state_multiple(cls, params: AdamWParams) -> float:
        return 3.0 if params.amsgrad else 2.0  # the two moments, and their running maximum

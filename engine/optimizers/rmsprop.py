import torch
from pydantic import Field

from engine import transforms
from engine.optimizers import Beta, NonNegative, Optimizer, OptimizerParams, TestSettings


class RMSpropParams(OptimizerParams):
    lr: float = Field(1e-2, gt=0.0, description="learning rate")
    alpha: Beta = Field(0.99, description="decay rate of the running mean of squared gradients")
    eps: float = Field(1e-8, gt=0.0, description="added to the denominator for numerical stability")
    weight_decay: NonNegative = 0.0
    momentum: NonNegative = 0.0
    centered: bool = Field(False, description="normalise by the estimated variance instead of the second moment")


class RMSprop(Optimizer[RMSpropParams]):
    name = "rmsprop"
    description = "RMSProp (Hinton), optionally centered and with momentum: torch.optim.RMSprop."
    Params = RMSpropParams
    torch_optimizer = torch.optim.RMSprop
    elementwise = True
    test_settings = TestSettings(
        {"parabola": {"lr": 0.01, "momentum": 0.9}, "rosenbrock": {"lr": 1e-3, "momentum": 0.9}}
    )

    @classmethod
    def rule(cls, params: RMSpropParams) -> transforms.GradientTransformation:
        return transforms.rmsprop(params.alpha, params.eps, params.weight_decay, params.momentum, params.centered)

    @classmethod
    def state_multiple(cls, params: RMSpropParams) -> float:
        return 1.0 + bool(params.momentum) + params.centered  # square average, momentum, mean gradient

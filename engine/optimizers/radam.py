import torch
from pydantic import Field

from engine.optimizers import Beta, NonNegative, Optimizer, OptimizerParams, TestSettings


class RAdamParams(OptimizerParams):
    betas: tuple[Beta, Beta] = Field((0.9, 0.999), description="decay rates of the first and second moments")
    eps: float = Field(1e-8, gt=0.0, description="added to the denominator for numerical stability")
    weight_decay: NonNegative = 0.0


class RAdam(Optimizer[RAdamParams]):
    name = "radam"
    description = "Rectified Adam, variance-rectified adaptive step (Liu et al.): torch.optim.RAdam."
    Params = RAdamParams
    torch_optimizer = torch.optim.RAdam
    elementwise = True
    test_settings = TestSettings({"parabola": {"lr": 0.1}, "rosenbrock": {"lr": 5e-3}})

    @classmethod
    def state_multiple(cls, params: RAdamParams) -> float:
        return 2.0  # the two moments

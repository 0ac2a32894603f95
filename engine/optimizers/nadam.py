import torch
from pydantic import Field

from engine.optimizers import Beta, NonNegative, Optimizer, OptimizerParams, TestSettings


class NAdamParams(OptimizerParams):
    lr: float = Field(2e-3, gt=0.0, description="learning rate")
    betas: tuple[Beta, Beta] = Field((0.9, 0.999), description="decay rates of the first and second moments")
    eps: float = Field(1e-8, gt=0.0, description="added to the denominator for numerical stability")
    weight_decay: NonNegative = 0.0
    momentum_decay: NonNegative = Field(4e-3, description="decay of the momentum schedule ψ")


class NAdam(Optimizer[NAdamParams]):
    name = "nadam"
    description = "Adam with Nesterov momentum (Dozat): torch.optim.NAdam."
    Params = NAdamParams
    torch_optimizer = torch.optim.NAdam
    elementwise = True
    test_settings = TestSettings({"parabola": {"lr": 0.1}, "rosenbrock": {"lr": 0.02}})

    @classmethod
    def state_multiple(cls, params: NAdamParams) -> float:
        return 2.0  # the two moments

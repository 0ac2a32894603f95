import torch
from pydantic import Field

from engine.optimizers import Beta, NonNegative, Optimizer, OptimizerParams, TestSettings


class AdamaxParams(OptimizerParams):
    lr: float = Field(2e-3, gt=0.0, description="learning rate")
    betas: tuple[Beta, Beta] = Field((0.9, 0.999), description="decay rates of the first moment and the ∞-norm")
    eps: float = Field(1e-8, gt=0.0, description="added to the denominator for numerical stability")
    weight_decay: NonNegative = 0.0


class Adamax(Optimizer[AdamaxParams]):
    name = "adamax"
    description = "Adamax (Kingma & Ba), Adam with the infinity norm in the denominator: torch.optim.Adamax."
    reference = "Adam: A Method for Stochastic Optimization, https://arxiv.org/abs/1412.6980"
    Params = AdamaxParams
    torch_optimizer = torch.optim.Adamax
    elementwise = True
    test_settings = TestSettings({"parabola": {"lr": 0.1}, "rosenbrock": {"lr": 0.02}})

    @classmethod
    def state_multiple(cls, params: AdamaxParams) -> float:
        return 2.0  # the first moment and the running ∞-norm

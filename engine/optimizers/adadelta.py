import torch
from pydantic import Field

from engine.optimizers import Beta, NonNegative, Optimizer, OptimizerParams, TestSettings


class AdadeltaParams(OptimizerParams):
    lr: float = Field(1.0, gt=0.0, description="scale applied to the step")
    rho: Beta = Field(0.9, description="decay rate of the running averages")
    eps: float = Field(1e-6, gt=0.0, description="added inside the square roots for numerical stability")
    weight_decay: NonNegative = 0.0


class Adadelta(Optimizer[AdadeltaParams]):
    name = "adadelta"
    description = "Adadelta (Zeiler), steps scaled by running RMS of past updates and gradients: torch.optim.Adadelta."
    Params = AdadeltaParams
    torch_optimizer = torch.optim.Adadelta
    elementwise = True
    test_settings = TestSettings({"parabola": {"lr": 10.0}, "rosenbrock": {"lr": 10.0}})

    @classmethod
    def state_multiple(cls, params: AdadeltaParams) -> float:
        return 2.0  # running averages of squared gradients and updates

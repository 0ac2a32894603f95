import torch
from pydantic import Field

from engine.optimizers import NonNegative, Optimizer, OptimizerParams, TestSettings


class ASGDParams(OptimizerParams):
    lr: float = Field(1e-2, gt=0.0, description="learning rate")
    lambd: NonNegative = Field(1e-4, description="decay term")
    alpha: NonNegative = Field(0.75, description="power for the rate update: η_t = lr / (1 + λ·lr·t)^α")
    t0: NonNegative = Field(1e6, description="the step at which averaging starts")
    weight_decay: NonNegative = 0.0


class ASGD(Optimizer[ASGDParams]):
    name = "asgd"
    description = "Averaged SGD (Polyak & Juditsky), with a decaying rate: torch.optim.ASGD."
    reference = "Acceleration of Stochastic Approximation by Averaging, https://doi.org/10.1137/0330046"
    family = "momentum/SGD"
    Params = ASGDParams
    torch_optimizer = torch.optim.ASGD
    elementwise = True
    test_settings = TestSettings({"parabola": {"lr": 0.02}, "rosenbrock": {"lr": 1e-3}})

    @classmethod
    def state_multiple(cls, params: ASGDParams) -> float:
        return 1.0  # the averaged parameters (eta, mu and step are scalars)

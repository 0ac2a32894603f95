import torch
from pydantic import Field, model_validator

from engine import transforms
from engine.optimizers import NonNegative, Optimizer, OptimizerParams, TestSettings


class SGDParams(OptimizerParams):
    lr: float = Field(1e-2, gt=0.0, description="learning rate")
    momentum: NonNegative = 0.0
    dampening: NonNegative = 0.0
    nesterov: bool = False
    weight_decay: NonNegative = 0.0

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> "SGDParams":
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("nesterov requires momentum > 0 and dampening = 0")
        return self


class SGD(Optimizer[SGDParams]):
    name = "sgd"
    description = "Stochastic gradient descent, with optional (Nesterov) momentum: torch.optim.SGD."
    family = "momentum/SGD"
    Params = SGDParams
    torch_optimizer = torch.optim.SGD
    elementwise = True
    test_settings = TestSettings({"parabola": {"lr": 0.02}, "rosenbrock": {"lr": 1e-3, "momentum": 0.9}})

    @classmethod
    def rule(cls, params: SGDParams) -> transforms.GradientTransformation:
        return transforms.sgd(params.momentum, params.dampening, params.nesterov, params.weight_decay)

    @classmethod
    def state_multiple(cls, params: SGDParams) -> float:
        return 1.0 if params.momentum else 0.0  # the momentum buffer

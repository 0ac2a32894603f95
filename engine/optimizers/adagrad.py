import torch
from pydantic import Field

from engine.optimizers import NonNegative, Optimizer, OptimizerParams, TestSettings


class AdagradParams(OptimizerParams):
    lr: float = Field(1e-2, gt=0.0, description="learning rate")
    lr_decay: NonNegative = 0.0
    weight_decay: NonNegative = 0.0
    initial_accumulator_value: NonNegative = 0.0
    eps: float = Field(1e-10, gt=0.0, description="added to the denominator for numerical stability")


class Adagrad(Optimizer[AdagradParams]):
    name = "adagrad"
    description = "Adagrad, per-weight steps shrinking with the summed squared gradients: torch.optim.Adagrad."
    Params = AdagradParams
    torch_optimizer = torch.optim.Adagrad
    elementwise = True
    test_settings = TestSettings({"parabola": {"lr": 1.0}, "rosenbrock": {"lr": 0.5}})

    @classmethod
    def state_multiple(cls, params: AdagradParams) -> float:
        return 1.0  # the summed squares

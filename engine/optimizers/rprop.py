from typing import Annotated

import torch
from pydantic import Field, field_validator

from engine.optimizers import NonNegative, Optimizer, OptimizerParams, TestSettings

EtaMinus = Annotated[float, Field(gt=0.0, lt=1.0)]
EtaPlus = Annotated[float, Field(gt=1.0)]


class RpropParams(OptimizerParams):
    lr: float = Field(1e-2, gt=0.0, description="initial step size")
    etas: tuple[EtaMinus, EtaPlus] = Field((0.5, 1.2), description="(etaminus, etaplus): step shrink, growth factors")
    step_sizes: tuple[NonNegative, NonNegative] = Field((1e-6, 50.0), description="(minimal, maximal) step size")

    @field_validator("step_sizes")
    @classmethod
    def _min_below_max(cls, step_sizes: tuple[float, float]) -> tuple[float, float]:
        if not step_sizes[0] < step_sizes[1]:
            raise ValueError("step_sizes must be (minimal, maximal) with minimal < maximal")
        return step_sizes


class Rprop(Optimizer[RpropParams]):
    name = "rprop"
    description = "Resilient backpropagation, sign-based per-weight step sizes: torch.optim.Rprop."
    family = "sign-based"
    Params = RpropParams
    torch_optimizer = torch.optim.Rprop
    elementwise = True
    test_settings = TestSettings({"parabola": {}, "rosenbrock": {}})

    @classmethod
    def state_multiple(cls, params: RpropParams) -> float:
        return 2.0  # the previous gradient and the step sizes

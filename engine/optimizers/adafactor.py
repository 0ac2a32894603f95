from typing import Annotated

import torch
from pydantic import Field

from engine.optimizers import NonNegative, Optimizer, OptimizerParams, TestSettings

Positive = Annotated[float, Field(gt=0.0)]


class AdafactorParams(OptimizerParams):
    lr: float = Field(1e-2, gt=0.0, description="learning rate (relative: scaled by the parameter's RMS)")
    beta2_decay: float = Field(-0.8, le=0.0, description="the second moment's decay rate is 1 - t^beta2_decay")
    eps: tuple[Positive | None, Positive] = Field(
        (None, 1e-3),
        description="(eps1, eps2): eps1 added to the squared gradient (null: the dtype's eps), "
        "eps2 the floor of the parameter's RMS in the relative step",
    )
    d: Positive = Field(1.0, description="clipping threshold of the update's RMS")
    weight_decay: NonNegative = 0.0


class Adafactor(Optimizer[AdafactorParams]):
    name = "adafactor"
    description = "Adafactor (Shazeer & Stern), factored second moments for matrices: torch.optim.Adafactor."
    reference = "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost, https://arxiv.org/abs/1804.04235"
    family = "memory-efficient"
    Params = AdafactorParams
    torch_optimizer = torch.optim.Adafactor
    test_settings = TestSettings({"parabola": {"lr": 0.1}, "rosenbrock": {"lr": 0.02}})

    @classmethod
    def state_multiple(cls, params: AdafactorParams) -> float:
        return 1.0  # the row and column factors of a matrix; a vector keeps its full second moment

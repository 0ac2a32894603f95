from typing import Literal

import torch
from pydantic import Field

from engine.optimizers import Beta, NonNegative, Optimizer, OptimizerParams, TestSettings


class MuonParams(OptimizerParams):
    lr: float = Field(1e-3, gt=0.0, description="learning rate")
    weight_decay: NonNegative = Field(0.1, description="decoupled weight decay coefficient")
    momentum: Beta = Field(0.95, description="momentum factor")
    nesterov: bool = Field(True, description="use Nesterov momentum")
    ns_coefficients: tuple[float, float, float] = Field(
        (3.4445, -4.775, 2.0315), description="coefficients (a, b, c) of the quintic Newton-Schulz iteration"
    )
    eps: float = Field(1e-7, gt=0.0, description="added to the norm before Newton-Schulz, for numerical stability")
    ns_steps: int = Field(5, ge=1, le=100, description="Newton-Schulz iterations per step")
    adjust_lr_fn: Literal["original", "match_rms_adamw"] | None = Field(
        None, description="how the rate is scaled by the matrix's shape; null: torch's default ('original')"
    )


class Muon(Optimizer[MuonParams]):
    name = "muon"
    description = (
        "Muon (Jordan et al.), momentum orthogonalised by Newton-Schulz iterations, for 2-D parameters only: "
        "torch.optim.Muon. Give the other parameters to another optimizer with parameter groups."
    )
    reference = "Muon: An optimizer for hidden layers in neural networks, https://kellerjordan.github.io/posts/muon/"
    family = "matrix/orthogonalising"
    Params = MuonParams
    torch_optimizer = torch.optim.Muon
    param_shapes = "matrices"
    test_settings = TestSettings({"matrix": {"lr": 0.05, "weight_decay": 0.0}}, lands_on_minimum=False)

    @classmethod
    def state_multiple(cls, params: MuonParams) -> float:
        return 1.0  # the momentum buffer

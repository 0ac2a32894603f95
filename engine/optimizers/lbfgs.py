from typing import Literal

import torch
from pydantic import Field

from engine.optimizers import NonNegative, Optimizer, OptimizerParams, TestSettings

#: one step does up to max_iter passes over the full batch (and torch's max_eval = 1.25 × max_iter evaluations)
MAX_ITER = 1000
MAX_HISTORY = 1000


class LBFGSParams(OptimizerParams):
    lr: float = Field(1.0, gt=0.0, description="learning rate")
    max_iter: int = Field(
        20,
        ge=1,
        le=MAX_ITER,
        description="iterations per optimizer step (each a forward and "
        "backward pass over the full batch; at most 1.25 × as many loss evaluations)",
    )
    history_size: int = Field(
        100, ge=1, le=MAX_HISTORY, description="number of curvature pairs kept (each two copies of the parameters)"
    )
    tolerance_grad: NonNegative = Field(1e-7, description="stop when the largest gradient entry is below this")
    tolerance_change: NonNegative = Field(1e-9, description="stop when the loss or the step changes less than this")
    line_search_fn: Literal["strong_wolfe"] | None = None


class LBFGS(Optimizer[LBFGSParams]):
    name = "lbfgs"
    description = "Limited-memory BFGS, optionally with a strong Wolfe line search: torch.optim.LBFGS."
    family = "second-order"
    Params = LBFGSParams
    torch_optimizer = torch.optim.LBFGS
    test_settings = TestSettings(
        {
            "parabola": {},
            "rosenbrock": {"line_search_fn": "strong_wolfe"},
            "dataset": {"line_search_fn": "strong_wolfe"},
        },
        steps=20,
    )
    full_batch_only = True
    needs_closure = True
    size_param = "history_size"

    @classmethod
    def state_multiple(cls, params: LBFGSParams) -> float:
        # history_size curvature pairs; the direction, the previous and current flat gradients; a line
        # search adds a copy of the point and its gradients
        return 2.0 * params.history_size + 3.0 + (3.0 if params.line_search_fn else 0.0)

import torch
from pydantic import Field

from engine import transforms
from engine.optimizers import Beta, NonNegative, Optimizer, OptimizerParams, TestSettings


class AdamParams(OptimizerParams):
    betas: tuple[Beta, Beta] = Field((0.9, 0.999), description="decay rates of the first and second moments")
    eps: float = Field(1e-8, gt=0.0, description="added to the denominator for numerical stability")
    weight_decay: NonNegative = 0.0
    amsgrad: bool = Field(False, description="use the running maximum of the second moment (AMSGrad)")
    bias_correction: bool = Field(True, description="divide the moments by 1 − β^t; off: m̂ = m and v̂ = v")


class Adam(Optimizer[AdamParams]):
    name = "adam"
    description = "Adam (Kingma & Ba), optionally AMSGrad: torch.optim.Adam, or our own rule without bias correction."
    Params = AdamParams
    torch_optimizer = torch.optim.Adam
    torch_exclude = frozenset({"bias_correction"})
    elementwise = True
    test_settings = TestSettings({"parabola": {"lr": 0.1}, "rosenbrock": {"lr": 0.02}})

    @classmethod
    def rule(cls, params: AdamParams) -> transforms.GradientTransformation:
        return transforms.adam(*params.betas, params.eps, params.weight_decay, params.amsgrad, params.bias_correction)

    @classmethod
    def build(cls, parameters, params: AdamParams, **arguments) -> torch.optim.Optimizer:
        if params.bias_correction:
            return super().build(parameters, params, **arguments)
        return transforms.TransformOptimizer(parameters, cls.rule(params), lr=params.lr)  # torch.optim has no such Adam

    @classmethod
    def state_multiple(cls, params: AdamParams) -> float:
        return 3.0 if params.amsgrad else 2.0  # the two moments, and their running maximum

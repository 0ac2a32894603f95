import math

from torch import nn

from engine.models import Model
from engine.registry import Params


class LinearParams(Params):
    bias: bool = True


class Linear(Model[LinearParams]):
    name = "linear"
    description = "A single Linear layer: linear regression, or logistic regression with a classification loss."
    Params = LinearParams
    vmap_safe = True
    test_problem = {"dataset": {"name": "iris"}, "loss": "cross_entropy"}

    @classmethod
    def build(cls, params: LinearParams, input_shape, n_outputs) -> nn.Module:
        layer = nn.Linear(math.prod(input_shape), n_outputs, bias=params.bias)
        return nn.Sequential(nn.Flatten(), layer) if len(input_shape) > 1 else layer

    @classmethod
    def parameter_count(cls, params: LinearParams, input_shape, n_outputs) -> int:
        return math.prod(input_shape) * n_outputs + (n_outputs if params.bias else 0)

    @classmethod
    def activation_count(cls, params: LinearParams, input_shape, n_outputs) -> int:
        return n_outputs

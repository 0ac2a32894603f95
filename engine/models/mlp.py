import math
from typing import Annotated, Literal

from pydantic import Field
from torch import nn

from engine.models import Model
from engine.registry import Params

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU}


class MLPParams(Params):
    hidden: list[Annotated[int, Field(ge=1, le=65536)]] = Field(
        [100], max_length=16, description="widths of the hidden layers"
    )
    activation: Literal["relu", "tanh", "sigmoid", "gelu"] = "relu"
    bias: bool = True


class MLP(Model[MLPParams]):
    name = "mlp"
    description = "Fully connected network: Linear layers with an activation between them."
    Params = MLPParams
    vmap_safe = True
    test_problem = {
        "params": {"hidden": [8], "activation": "tanh"},
        "dataset": {"name": "iris"},
        "loss": "cross_entropy",
    }
    size_param = "hidden"

    @classmethod
    def build(cls, params: MLPParams, input_shape, n_outputs) -> nn.Module:
        widths = [math.prod(input_shape), *params.hidden, n_outputs]
        layers: list[nn.Module] = [nn.Flatten()] if len(input_shape) > 1 else []
        for i, (fan_in, fan_out) in enumerate(zip(widths, widths[1:])):
            if i:
                layers.append(_ACTIVATIONS[params.activation]())
            layers.append(nn.Linear(fan_in, fan_out, bias=params.bias))
        return nn.Sequential(*layers)

    @classmethod
    def parameter_count(cls, params: MLPParams, input_shape, n_outputs) -> int:
        widths = [math.prod(input_shape), *params.hidden, n_outputs]
        return sum(fan_in * fan_out + (fan_out if params.bias else 0) for fan_in, fan_out in zip(widths, widths[1:]))

    @classmethod
    def activation_count(cls, params: MLPParams, input_shape, n_outputs) -> int:
        return 2 * sum(params.hidden) + n_outputs  # each hidden Linear's output and its activation's

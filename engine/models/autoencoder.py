import math
from typing import Annotated, Literal

from pydantic import Field
from torch import nn

from engine.models import Model
from engine.registry import Params

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU}


class AutoencoderParams(Params):
    encoder: list[Annotated[int, Field(ge=1, le=65536)]] = Field(
        [32], max_length=8, description="widths of the encoder's hidden layers; the decoder mirrors them"
    )
    code: int = Field(8, ge=1, le=65536, description="width of the bottleneck")
    activation: Literal["relu", "tanh", "sigmoid", "gelu"] = "relu"


class Autoencoder(Model[AutoencoderParams]):
    name = "autoencoder"
    description = (
        "MLP autoencoder: Linear layers narrowing to a code and widening back, an activation between them, "
        "the output as wide as the targets (a reconstruction dataset's: its inputs)."
    )
    Params = AutoencoderParams
    vmap_safe = True
    size_param = "encoder"
    test_problem = {
        "params": {"encoder": [16], "code": 4},
        "dataset": {"name": "digits_reconstruction"},
        "loss": "mse_mean",
    }

    @classmethod
    def _widths(cls, params: AutoencoderParams, input_shape, n_outputs) -> list[int]:
        return [math.prod(input_shape), *params.encoder, params.code, *reversed(params.encoder), n_outputs]

    @classmethod
    def build(cls, params: AutoencoderParams, input_shape, n_outputs) -> nn.Module:
        widths = cls._widths(params, input_shape, n_outputs)
        layers: list[nn.Module] = [nn.Flatten()] if len(input_shape) > 1 else []
        for i, (fan_in, fan_out) in enumerate(zip(widths, widths[1:])):
            if i:
                layers.append(_ACTIVATIONS[params.activation]())
            layers.append(nn.Linear(fan_in, fan_out))
        return nn.Sequential(*layers)

    @classmethod
    def parameter_count(cls, params: AutoencoderParams, input_shape, n_outputs) -> int:
        widths = cls._widths(params, input_shape, n_outputs)
        return sum(fan_in * fan_out + fan_out for fan_in, fan_out in zip(widths, widths[1:]))

    @classmethod
    def activation_count(cls, params: AutoencoderParams, input_shape, n_outputs) -> int:
        return 2 * sum(cls._widths(params, input_shape, n_outputs)[1:-1]) + n_outputs

from typing import Annotated, Literal

import torch
from pydantic import Field, field_validator
from torch import nn

from engine.models import Model
from engine.registry import Params

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU}


class CNNParams(Params):
    channels: list[Annotated[int, Field(ge=1, le=4096)]] = Field(
        [8, 16], min_length=1, max_length=8, description="output channels of each conv block"
    )
    kernel_size: int = Field(3, ge=1, le=15, description="odd side of the square kernels, with 'same' padding")
    hidden: int = Field(64, ge=0, le=65536, description="width of the hidden Linear layer; 0 for none")
    activation: Literal["relu", "tanh", "sigmoid", "gelu"] = "relu"

    @field_validator("kernel_size")
    @classmethod
    def _odd(cls, kernel_size: int) -> int:
        if kernel_size % 2 == 0:
            raise ValueError("kernel_size must be odd, so that 'same' padding keeps the image centred")
        return kernel_size


class CNN(Model):
    name = "cnn"
    description = "Small conv net for images (C, H, W) or (H, W): conv-activation-maxpool blocks, then a Linear head."
    Params = CNNParams

    @classmethod
    def build(cls, params: CNNParams, input_shape, n_outputs) -> nn.Module:
        if len(input_shape) not in (2, 3):
            raise ValueError(
                f"cnn needs image inputs of shape (C, H, W) or (H, W), got samples of shape {tuple(input_shape)}; "
                "use an image dataset (e.g. digits with as_images=true) or a model such as mlp or linear"
            )
        layers: list[nn.Module] = []
        if len(input_shape) == 2:
            layers.append(nn.Unflatten(1, (1, input_shape[0])))  # (N, H, W) -> (N, 1, H, W)
        in_channels, height, width = (1, *input_shape) if len(input_shape) == 2 else input_shape
        for out_channels in params.channels:
            layers += [
                nn.Conv2d(in_channels, out_channels, params.kernel_size, padding="same"),
                _ACTIVATIONS[params.activation](),
            ]
            if min(height, width) >= 2:  # small images (8x8 digits) run out of pixels before the blocks do
                layers.append(nn.MaxPool2d(2))
                height, width = height // 2, width // 2
            in_channels = out_channels
        layers.append(nn.Flatten())
        with torch.no_grad():  # a probe rather than arithmetic, so the head always fits the features
            n_features = nn.Sequential(*layers)(torch.zeros(1, *input_shape)).shape[1]
        if params.hidden:
            layers += [nn.Linear(n_features, params.hidden), _ACTIVATIONS[params.activation]()]
            n_features = params.hidden
        layers.append(nn.Linear(n_features, n_outputs))
        return nn.Sequential(*layers)

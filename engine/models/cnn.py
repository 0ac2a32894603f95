from typing import Annotated, Literal

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


class CNN(Model[CNNParams]):
    name = "cnn"
    description = "Small conv net for images (C, H, W) or (H, W): conv-activation-maxpool blocks, then a Linear head."
    Params = CNNParams
    vmap_safe = True
    test_problem = {
        "params": {"channels": [2], "hidden": 4},
        "dataset": {"name": "digits", "params": {"as_images": True}},
        "loss": "cross_entropy",
    }
    input_ranks = frozenset({2, 3})
    size_param = "channels"

    @classmethod
    def build(cls, params: CNNParams, input_shape, n_outputs) -> nn.Module:
        blocks = _blocks(params, input_shape)
        layers: list[nn.Module] = []
        if len(input_shape) == 2:
            layers.append(nn.Unflatten(1, (1, input_shape[0])))  # (N, H, W) -> (N, 1, H, W)
        for in_channels, out_channels, pooled, _ in blocks:
            layers += [
                nn.Conv2d(in_channels, out_channels, params.kernel_size, padding="same"),
                _ACTIVATIONS[params.activation](),
            ]
            if pooled:
                layers.append(nn.MaxPool2d(2))
        layers.append(nn.Flatten())
        for i, (fan_in, fan_out) in enumerate(_head(params, blocks, n_outputs)):
            if i:
                layers.append(_ACTIVATIONS[params.activation]())
            layers.append(nn.Linear(fan_in, fan_out))
        return nn.Sequential(*layers)

    @classmethod
    def parameter_count(cls, params: CNNParams, input_shape, n_outputs) -> int:
        blocks = _blocks(params, input_shape)
        convs = sum(c_in * c_out * params.kernel_size**2 + c_out for c_in, c_out, _, _ in blocks)
        return convs + sum(fan_in * fan_out + fan_out for fan_in, fan_out in _head(params, blocks, n_outputs))

    @classmethod
    def activation_count(cls, params: CNNParams, input_shape, n_outputs) -> int:
        count = 0
        for _, out_channels, pooled, (height, width) in _blocks(params, input_shape):
            count += 2 * out_channels * height * width  # the convolution's output and its activation's
            if pooled:
                count += out_channels * (height // 2) * (width // 2)
        return count + (2 * params.hidden if params.hidden else 0) + n_outputs


def _blocks(params: CNNParams, input_shape) -> list[tuple[int, int, bool, tuple[int, int]]]:
    """Each conv block as (in channels, out channels, pooled, its image size); 'same' padding keeps
    the size, a 2x2 max-pool halves it while the image has two pixels a side."""
    if len(input_shape) not in (2, 3):
        raise ValueError(
            f"cnn needs image inputs of shape (C, H, W) or (H, W), got samples of shape {tuple(input_shape)}; "
            "use an image dataset (e.g. digits with as_images=true) or a model such as mlp or linear"
        )
    in_channels, height, width = (1, *input_shape) if len(input_shape) == 2 else input_shape
    blocks = []
    for out_channels in params.channels:
        pooled = min(height, width) >= 2  # small images (8x8 digits) run out of pixels before the blocks do
        blocks.append((in_channels, out_channels, pooled, (height, width)))
        if pooled:
            height, width = height // 2, width // 2
        in_channels = out_channels
    return blocks


def _head(params: CNNParams, blocks, n_outputs: int) -> list[tuple[int, int]]:
    """The Linear layers after the flatten, as (fan in, fan out)."""
    _, channels, pooled, (height, width) = blocks[-1]
    features = channels * (height // 2) * (width // 2) if pooled else channels * height * width
    widths = [features, params.hidden, n_outputs] if params.hidden else [features, n_outputs]
    return list(zip(widths, widths[1:]))

"""A residual CNN (ResNet-style) with GroupNorm, for images (C, H, W) or (H, W)."""

import math
from typing import Any

from pydantic import Field
from torch import nn

from engine.models import Model
from engine.registry import Params


class ResNetParams(Params):
    width: int = Field(16, ge=1, le=1024, description="channels of the first stage; each later stage doubles them")
    stages: int = Field(2, ge=1, le=5, description="stages; each after the first halves the image with stride 2")
    blocks: int = Field(1, ge=1, le=16, description="residual blocks per stage (two 3x3 convolutions each)")
    groups: int = Field(4, ge=1, le=64, description="GroupNorm groups (fewer where the channels are not a multiple)")


def _norm(params: ResNetParams, channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(params.groups, channels), channels)


class _Block(nn.Module):
    """conv-norm-relu-conv-norm plus the input (a strided 1x1 conv and a norm where the shape changes), then relu."""

    def __init__(self, params: ResNetParams, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False),
            _norm(params, c_out),
            nn.ReLU(),
            nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False),
            _norm(params, c_out),
        )
        changes = stride != 1 or c_in != c_out
        self.shortcut = (
            nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), _norm(params, c_out))
            if changes
            else nn.Identity()
        )
        self.relu = nn.ReLU()

    def forward(self, x: Any) -> Any:
        return self.relu(self.body(x) + self.shortcut(x))


class ResNet(Model[ResNetParams]):
    name = "resnet"
    description = (
        "Residual CNN: a 3x3 stem, stages of basic residual blocks (GroupNorm, which has no running statistics, "
        "so runs ensemble under vmap; BatchNorm's buffers would not), global average pooling and a Linear head."
    )
    Params = ResNetParams
    input_ranks = frozenset({2, 3})
    size_param = "width"
    vmap_safe = True
    test_problem = {
        "params": {"width": 4, "stages": 2, "groups": 2},
        "dataset": {"name": "digits", "params": {"as_images": True}},
        "loss": "cross_entropy",
    }

    @classmethod
    def build(cls, params: ResNetParams, input_shape, n_outputs) -> nn.Module:
        layers: list[nn.Module] = []
        if len(input_shape) == 2:
            layers.append(nn.Unflatten(1, (1, input_shape[0])))  # (N, H, W) -> (N, 1, H, W)
        channels = 1 if len(input_shape) == 2 else input_shape[0]
        layers += [nn.Conv2d(channels, params.width, 3, 1, 1, bias=False), _norm(params, params.width), nn.ReLU()]
        channels = params.width
        for stage in range(params.stages):
            out = params.width * 2**stage
            for block in range(params.blocks):
                layers.append(_Block(params, channels, out, 2 if stage and not block else 1))
                channels = out
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, n_outputs)]
        return nn.Sequential(*layers)

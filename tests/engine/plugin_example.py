"""An operator's optimizer, as an installed package would expose it (used by test_registry.py)."""

import torch
from pydantic import Field

from engine.optimizers import Optimizer, OptimizerParams


class SignSGDParams(OptimizerParams):
    lr: float = Field(0.01, gt=0.0)


class SignSGD:
    """Defined without the base class first, so importing this module registers nothing by itself."""


def make_plugin() -> type[Optimizer]:
    class PluginSignSGD(Optimizer):
        name = "plugin_signsgd"
        description = "signSGD: w <- w - lr * sign(g), from an entry point."
        Params = SignSGDParams

        @classmethod
        def build(cls, parameters, params: SignSGDParams) -> torch.optim.Optimizer:
            return torch.optim.SGD(parameters, lr=params.lr)

    return PluginSignSGD


not_a_component = object()

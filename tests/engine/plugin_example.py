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


def make_signum() -> type[Optimizer]:
    """A new elementwise optimizer written as a rule: signSGD with momentum (signum). Defining it registers
    it, with nothing edited elsewhere; the caller removes it from the registry afterwards."""
    from engine import transforms
    from engine.optimizers import TestSettings

    def scale_by_sign() -> transforms.GradientTransformation:
        return transforms.GradientTransformation(
            lambda param: {}, lambda u, state, param, h: (torch.sign(u), {}), ("scale_by_sign",)
        )

    class SignumParams(OptimizerParams):
        lr: float = Field(0.01, gt=0.0)
        momentum: float = Field(0.9, ge=0.0, lt=1.0)

    class Signum(Optimizer):
        name = "test_signum"
        description = "signSGD with momentum: w <- w - lr * sign(b), b <- momentum * b + g."
        Params = SignumParams
        elementwise = True
        test_settings = TestSettings({"parabola": {"lr": 1e-3, "momentum": 0.0}, "rosenbrock": {"lr": 1e-3}})

        @classmethod
        def rule(cls, params: SignumParams) -> transforms.GradientTransformation:
            return transforms.chain(
                transforms.trace(params.momentum), scale_by_sign(), transforms.scale_by_learning_rate()
            )

        @classmethod
        def state_multiple(cls, params: SignumParams) -> float:
            return 1.0

    return Signum

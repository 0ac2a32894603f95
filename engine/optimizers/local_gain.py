from pydantic import Field

from engine import transforms
from engine.optimizers import Optimizer, OptimizerParams, TestSettings


class LocalGainParams(OptimizerParams):
    lr: float = Field(1e-2, gt=0.0, description="learning rate")
    beta: float = Field(0.05, gt=0.0, lt=1.0, description="gain increment on agreeing signs; 1 − beta shrinks it")


class LocalGain(Optimizer[LocalGainParams]):
    name = "local_gain"
    description = "Gradient descent with a per-weight local gain, grown on agreeing and shrunk on flipping signs."
    source = "optibench"  # our own rule (engine.transforms)
    version = ""
    Params = LocalGainParams
    elementwise = True
    test_settings = TestSettings({"parabola": {"lr": 0.01}, "rosenbrock": {"lr": 1e-4}})

    @classmethod
    def rule(cls, params: LocalGainParams) -> transforms.GradientTransformation:
        return transforms.local_gain(params.beta)

    @classmethod
    def state_multiple(cls, params: LocalGainParams) -> float:
        return 2.0  # the gains and the previous gradient

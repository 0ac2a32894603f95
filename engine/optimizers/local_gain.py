import torch
from pydantic import Field

from engine.optimizers import Optimizer, OptimizerParams
from engine.transforms import TransformOptimizer, local_gain


class LocalGainParams(OptimizerParams):
    lr: float = Field(1e-2, gt=0.0, description="learning rate")
    beta: float = Field(0.05, gt=0.0, lt=1.0, description="gain increment on agreeing signs; 1 − beta shrinks it")


class LocalGain(Optimizer):
    name = "local_gain"
    description = "Gradient descent with a per-weight local gain, grown on agreeing and shrunk on flipping signs."
    Params = LocalGainParams

    @classmethod
    def build(cls, parameters, params: LocalGainParams) -> torch.optim.Optimizer:
        return TransformOptimizer(parameters, local_gain(params.beta), lr=params.lr)

    @classmethod
    def state_multiple(cls, params: LocalGainParams) -> float:
        return 2.0  # the gains and the previous gradient

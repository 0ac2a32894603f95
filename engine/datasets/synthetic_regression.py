import torch
from pydantic import Field

from engine.datasets import Data, Dataset, DataShape
from engine.registry import Params


class SyntheticRegressionParams(Params):
    n_samples: int = Field(64, ge=1, le=1_000_000)
    n_features: int = Field(1000, ge=1, le=100_000)
    n_targets: int = Field(10, ge=1, le=10_000)
    seed: int = Field(0, ge=0, le=2**31 - 1, description="seed of the data itself, not of the runs")


class SyntheticRegression(Dataset[SyntheticRegressionParams]):
    name = "synthetic_regression"
    description = "Inputs and targets drawn independently from N(0, 1), as in the reference Adam example."
    task = "regression"
    standardize_by_default = False
    Params = SyntheticRegressionParams
    size_param = "n_samples"

    @classmethod
    def load(cls, params: SyntheticRegressionParams) -> Data:
        g = torch.Generator().manual_seed(params.seed)
        x = torch.randn(params.n_samples, params.n_features, generator=g)
        y = torch.randn(params.n_samples, params.n_targets, generator=g)
        return Data(x=x, y=y, task="regression", n_outputs=params.n_targets)

    @classmethod
    def shape(cls, params: SyntheticRegressionParams) -> DataShape:
        return DataShape(params.n_samples, (params.n_features,), params.n_targets)

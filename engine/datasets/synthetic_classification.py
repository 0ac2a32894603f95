import math

import torch
from pydantic import Field

from engine.datasets import Data, Dataset, DataShape
from engine.registry import Params


class SyntheticClassificationParams(Params):
    n_samples: int = Field(512, ge=1, le=1_000_000)
    n_features: int = Field(20, ge=1, le=100_000)
    n_classes: int = Field(3, ge=2, le=10_000)
    class_sep: float = Field(
        3.0, ge=0, le=1e3, description="typical distance between two class centres, in noise standard deviations"
    )
    seed: int = Field(0, ge=0, le=2**31 - 1, description="seed of the data itself, not of the runs")


class SyntheticClassification(Dataset[SyntheticClassificationParams]):
    name = "synthetic_classification"
    description = "Gaussian blobs: one random centre per class plus N(0, 1) noise, classes balanced and shuffled."
    task = "classification"
    standardize_by_default = False  # the noise is already N(0, 1), the unit class_sep is measured in
    Params = SyntheticClassificationParams
    size_param = "n_samples"

    @classmethod
    def load(cls, params: SyntheticClassificationParams) -> Data:
        g = torch.Generator().manual_seed(params.seed)
        # centres ~ N(0, sep^2 / (2 d)) put two centres about class_sep apart whatever the dimension
        centres = torch.randn(params.n_classes, params.n_features, generator=g)
        centres *= params.class_sep / math.sqrt(2 * params.n_features)
        y = torch.arange(params.n_samples) % params.n_classes
        y = y[torch.randperm(params.n_samples, generator=g)]
        x = centres[y] + torch.randn(params.n_samples, params.n_features, generator=g)
        return Data(x=x, y=y, task="classification", n_outputs=params.n_classes)

    @classmethod
    def shape(cls, params: SyntheticClassificationParams) -> DataShape:
        return DataShape(params.n_samples, (params.n_features,), params.n_classes)

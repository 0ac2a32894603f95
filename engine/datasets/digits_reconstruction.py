import torch
from sklearn.datasets import load_digits

from engine.datasets import Data, Dataset, DataShape
from engine.registry import Params


class DigitsReconstruction(Dataset[Params]):
    name = "digits_reconstruction"
    description = (
        "scikit-learn's 1797 handwritten digits (8x8 pixels scaled to [0, 1]) as a reconstruction task: "
        "the targets are the 64 pixels themselves, for an autoencoder with a regression loss."
    )
    task = "regression"
    standardize_by_default = False  # the targets are the unscaled pixels; inputs on the same scale

    @classmethod
    def load(cls, params: Params) -> Data:
        x = torch.tensor(load_digits().data, dtype=torch.float32) / 16  # pixels are counts 0..16
        return Data(x=x, y=x.clone(), task="regression", n_outputs=64)

    @classmethod
    def shape(cls, params: Params) -> DataShape:
        return DataShape(1797, (64,), 64)

import torch
from pydantic import Field
from sklearn.datasets import load_digits

from engine.datasets import Data, Dataset, DataShape
from engine.registry import Params


class DigitsParams(Params):
    as_images: bool = Field(False, description="x of shape (n, 1, 8, 8) for cnn instead of (n, 64)")


class Digits(Dataset[DigitsParams]):
    name = "digits"
    description = "Handwritten digits 0-9, 1797 images of 8x8 pixels scaled to [0, 1] (ships with scikit-learn)."
    task = "classification"
    standardize_by_default = False  # pixels are already in [0, 1]; per-pixel z-scores blow up rare pixels
    Params = DigitsParams

    @classmethod
    def load(cls, params: DigitsParams) -> Data:
        bunch = load_digits()
        x = torch.tensor(bunch.data, dtype=torch.float32) / 16  # pixels are counts 0..16
        if params.as_images:
            x = x.reshape(-1, 1, 8, 8)
        return Data(x=x, y=torch.tensor(bunch.target, dtype=torch.int64), task="classification", n_outputs=10)

    @classmethod
    def shape(cls, params: DigitsParams) -> DataShape:
        return DataShape(1797, (1, 8, 8) if params.as_images else (64,), 10)

"""Procedural 1-D digits after Greydanus' MNIST-1D recipe (2020): ten hand-drawn templates of 12 points,
each sample padded, stretched, scaled, shifted, sheared and given correlated and i.i.d. noise, then resampled
to 40 points. Written from the published recipe; the numbers are not the mnist1d package's."""

import numpy as np
import torch
from pydantic import Field
from scipy.ndimage import gaussian_filter1d

from engine.datasets import Data, Dataset, DataShape
from engine.registry import Params

TEMPLATES = np.array(
    [
        [5, 6, 6.5, 6.75, 7, 7, 7, 7, 6.75, 6.5, 6, 5],
        [5, 3, 3, 3.4, 3.8, 4.2, 4.6, 5, 5.4, 5.8, 5, 5],
        [5, 6, 6.5, 6.5, 6, 5.25, 4.75, 4, 3.5, 3.5, 4, 5],
        [5, 6, 6.5, 6.5, 6, 5, 5, 6, 6.5, 6.5, 6, 5],
        [5, 4.4, 3.8, 3.2, 2.6, 2.6, 5, 5, 5, 5, 5, 5],
        [5, 3, 3, 3, 3, 5, 6, 6.5, 6.5, 6, 4.5, 5],
        [5, 4, 3.5, 3.25, 3, 3, 3, 3, 3.25, 3.5, 4, 5],
        [5, 7, 7, 6.6, 6.2, 5.8, 5.4, 5, 4.6, 4.2, 5, 5],
        [5, 4, 3.5, 3.5, 4, 5, 5, 4, 3.5, 3.5, 4, 5],
        [5, 4, 3.5, 3.5, 4, 5, 5, 5, 5, 4.7, 4.3, 5],
    ]
)
PADDED, FINAL = 72, 40  # template plus up to 60 points of padding; the length of a sample
PADDING, MAX_SHIFT, SCALE, SHEAR, CORRELATED, IID = (36, 60), 48, 0.4, 0.75, 0.25, 0.02


class Mnist1dParams(Params):
    n_samples: int = Field(4000, ge=10, le=1_000_000)
    as_images: bool = Field(False, description="x of shape (n, 1, 40), an image one pixel high, for cnn/resnet")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="seed of the data itself, not of the runs")


class Mnist1d(Dataset[Mnist1dParams]):
    name = "mnist1d"
    description = (
        "MNIST-1D-style signals made on the spot (no files): 40-point 1-D digits 0-9, ten classes balanced, "
        "hard for a linear model and easy for a small CNN (Greydanus 2020's recipe)."
    )
    task = "classification"
    standardize_by_default = False  # the signals are already of unit scale
    Params = Mnist1dParams
    size_param = "n_samples"

    @classmethod
    def load(cls, params: Mnist1dParams) -> Data:
        rng = np.random.default_rng(params.seed)
        y = np.arange(params.n_samples) % 10
        rng.shuffle(y)
        x = np.stack([_sample(TEMPLATES[label] - 5, rng) for label in y]).astype(np.float32)
        tensor = torch.from_numpy(x)
        return Data(
            x=tensor.unsqueeze(1) if params.as_images else tensor,
            y=torch.from_numpy(y.astype(np.int64)),
            task="classification",
            n_outputs=10,
        )

    @classmethod
    def shape(cls, params: Mnist1dParams) -> DataShape:
        return DataShape(params.n_samples, (1, FINAL) if params.as_images else (FINAL,), 10)


def _resample(signal: np.ndarray, length: int) -> np.ndarray:
    return np.interp(np.linspace(0, 1, length), np.linspace(0, 1, len(signal)), signal)


def _sample(template: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    pad = int(rng.integers(*PADDING))
    left = int(rng.integers(0, pad + 1))
    signal = np.concatenate([np.zeros(left), template, np.zeros(pad - left)])
    signal = _resample(signal, PADDED) * (1 + SCALE * (rng.random() - 0.5))
    signal = np.roll(signal, int(rng.integers(-MAX_SHIFT // 2, MAX_SHIFT // 2 + 1)))
    signal += SHEAR * (rng.random() - 0.5) * np.linspace(-1, 1, PADDED)
    signal += CORRELATED * gaussian_filter1d(rng.standard_normal(PADDED), 2)
    signal += IID * rng.standard_normal(PADDED)
    return _resample(signal, FINAL)

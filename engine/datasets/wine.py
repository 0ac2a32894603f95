import torch
from sklearn.datasets import load_wine

from engine.datasets import Data, Dataset
from engine.registry import Params


class Wine(Dataset):
    name = "wine"
    description = "UCI wine: 178 wines, 13 chemical measurements, 3 cultivars (ships with scikit-learn)."
    task = "classification"
    Params = Params

    @classmethod
    def load(cls, params: Params) -> Data:
        bunch = load_wine()
        x = torch.tensor(bunch.data, dtype=torch.float32)  # in its own units: the spec's standardize scales it
        return Data(x=x, y=torch.tensor(bunch.target, dtype=torch.int64), task="classification", n_outputs=3)

    @classmethod
    def size(cls, params: Params) -> int:
        return 178

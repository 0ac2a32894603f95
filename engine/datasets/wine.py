import torch
from pydantic import Field
from sklearn.datasets import load_wine

from engine.datasets import Data, Dataset
from engine.registry import Params


class WineParams(Params):
    standardize: bool = Field(True, description="scale each feature to mean 0, std 1 over the whole set")


class Wine(Dataset):
    name = "wine"
    description = "UCI wine: 178 wines, 13 chemical measurements, 3 cultivars (ships with scikit-learn)."
    task = "classification"
    Params = WineParams

    @classmethod
    def load(cls, params: WineParams) -> Data:
        bunch = load_wine()
        x = torch.tensor(bunch.data, dtype=torch.float64)
        if params.standardize:
            x = (x - x.mean(dim=0)) / x.std(dim=0)
        return Data(x=x.float(), y=torch.tensor(bunch.target, dtype=torch.int64), task="classification", n_outputs=3)

    @classmethod
    def size(cls, params: WineParams) -> int:
        return 178

import torch
from pydantic import Field
from sklearn.datasets import load_iris

from engine.datasets import Data, Dataset
from engine.registry import Params


class IrisParams(Params):
    standardize: bool = Field(True, description="scale each feature to mean 0, std 1 over the whole set")


class Iris(Dataset):
    name = "iris"
    description = "Fisher's iris: 150 flowers, 4 measurements, 3 species (ships with scikit-learn)."
    task = "classification"
    Params = IrisParams

    @classmethod
    def load(cls, params: IrisParams) -> Data:
        bunch = load_iris()
        x = torch.tensor(bunch.data, dtype=torch.float64)
        if params.standardize:
            x = (x - x.mean(dim=0)) / x.std(dim=0)
        return Data(x=x.float(), y=torch.tensor(bunch.target, dtype=torch.int64), task="classification", n_outputs=3)

    @classmethod
    def size(cls, params: IrisParams) -> int:
        return 150

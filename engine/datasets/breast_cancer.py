import torch
from pydantic import Field
from sklearn.datasets import load_breast_cancer

from engine.datasets import Data, Dataset
from engine.registry import Params


class BreastCancerParams(Params):
    standardize: bool = Field(True, description="scale each feature to mean 0, std 1 over the whole set")


class BreastCancer(Dataset):
    name = "breast_cancer"
    description = "Wisconsin diagnostic breast cancer: 569 tumours, 30 features, malignant or benign (ships with scikit-learn)."
    task = "classification"
    Params = BreastCancerParams

    @classmethod
    def load(cls, params: BreastCancerParams) -> Data:
        bunch = load_breast_cancer()
        x = torch.tensor(bunch.data, dtype=torch.float64)
        if params.standardize:
            x = (x - x.mean(dim=0)) / x.std(dim=0)
        return Data(x=x.float(), y=torch.tensor(bunch.target, dtype=torch.int64), task="classification", n_outputs=2)

    @classmethod
    def size(cls, params: BreastCancerParams) -> int:
        return 569

import torch
from sklearn.datasets import load_breast_cancer

from engine.datasets import Data, Dataset
from engine.registry import Params


class BreastCancer(Dataset):
    name = "breast_cancer"
    description = "Wisconsin breast cancer: 569 tumours, 30 features, malignant or benign (ships with scikit-learn)."
    task = "classification"
    Params = Params

    @classmethod
    def load(cls, params: Params) -> Data:
        bunch = load_breast_cancer()
        x = torch.tensor(bunch.data, dtype=torch.float32)  # in its own units: the spec's standardize scales it
        return Data(x=x, y=torch.tensor(bunch.target, dtype=torch.int64), task="classification", n_outputs=2)

    @classmethod
    def size(cls, params: Params) -> int:
        return 569

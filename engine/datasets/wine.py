from sklearn.datasets import load_wine

from engine.datasets import SklearnTable


class Wine(SklearnTable):
    name = "wine"
    description = "UCI wine: 178 wines, 13 chemical measurements, 3 cultivars (ships with scikit-learn)."
    loader = staticmethod(load_wine)
    n_samples = 178
    n_features = 13
    n_classes = 3

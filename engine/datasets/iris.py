from sklearn.datasets import load_iris

from engine.datasets import SklearnTable


class Iris(SklearnTable):
    name = "iris"
    description = "Fisher's iris: 150 flowers, 4 measurements, 3 species (ships with scikit-learn)."
    loader = staticmethod(load_iris)
    n_samples = 150
    n_features = 4
    n_classes = 3

from sklearn.datasets import load_breast_cancer

from engine.datasets import SklearnTable


class BreastCancer(SklearnTable):
    name = "breast_cancer"
    description = "Wisconsin breast cancer: 569 tumours, 30 features, malignant or benign (ships with scikit-learn)."
    loader = staticmethod(load_breast_cancer)
    n_samples = 569
    n_features = 30
    n_classes = 2

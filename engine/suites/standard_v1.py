"""standard-v1: lite-v1's workloads at GPU sizes (wider models, more data, longer budgets), on CUDA."""

from engine.suites import Budget, Suite, Workload
from engine.suites.lite_v1 import REDUCED


def _classification(dataset: dict, model: dict) -> dict:
    return {"dataset": dataset, "model": model, "loss": "cross_entropy", "validation_fraction": 0.2}


def _budget(steps: int, wall_s: float, eval_every: int) -> Budget:
    return Budget(steps=steps, wall_s=wall_s, eval_every=eval_every)


SUITE = Suite(
    name="standard",
    version=1,
    description="lite-v1's workloads at GPU sizes.",
    workloads=[
        Workload(
            name="mlp-digits",
            problem=_classification({"name": "digits"}, {"name": "mlp", "params": {"hidden": [1024, 1024]}}),
            batch_size=128,
            metric="val_accuracy",
            budget=_budget(3000, 120.0, 100),
            reduced=REDUCED,
        ),
        Workload(
            name="cnn-digits",
            problem=_classification(
                {"name": "digits", "params": {"as_images": True}},
                {"name": "cnn", "params": {"channels": [64, 128], "hidden": 256}},
            ),
            batch_size=128,
            metric="val_accuracy",
            budget=_budget(3000, 120.0, 100),
            reduced=REDUCED,
        ),
        Workload(
            name="logreg-breast-cancer",
            problem=_classification({"name": "breast_cancer"}, {"name": "linear"}),
            metric="val_loss",
            budget=_budget(2000, 60.0, 50),
            reduced=REDUCED,
        ),
        Workload(
            name="mlp-wine",
            problem=_classification({"name": "wine"}, {"name": "mlp", "params": {"hidden": [512, 512]}}),
            metric="val_loss",
            budget=_budget(2000, 60.0, 50),
            reduced=REDUCED,
        ),
        Workload(
            name="mlp-synthetic",
            problem=_classification(
                {
                    "name": "synthetic_classification",
                    "params": {"n_samples": 200_000, "n_features": 256, "n_classes": 20},
                },
                {"name": "mlp", "params": {"hidden": [1024, 1024, 1024]}},
            ),
            batch_size=1024,
            metric="val_accuracy",
            budget=_budget(5000, 300.0, 250),
            reduced=REDUCED,
        ),
        Workload(
            name="linreg-synthetic",
            problem={
                "dataset": {
                    "name": "synthetic_regression",
                    "params": {"n_samples": 100_000, "n_features": 2000, "n_targets": 10},
                },
                "model": {"name": "linear"},
                "loss": "mse_mean",
                "validation_fraction": 0.2,
            },
            batch_size=1024,
            metric="val_loss",
            budget=_budget(3000, 120.0, 100),
            reduced=REDUCED,
        ),
    ],
    seeds=[0, 1, 2, 3, 4],
    reduced_seeds=[0, 1],
    baselines=[
        {"name": "adamw", "label": "adamw (baseline)", "params": {"lr": 0.001, "weight_decay": 0.0001}},
        {"name": "sgd", "label": "sgd-momentum (baseline)", "params": {"lr": 0.05, "momentum": 0.9}},
    ],
    device="cuda",
)

"""lite-v1: six small workloads that fit a CPU; one optimizer × one seed over the suite in a few CPU-minutes."""

from engine.suites import Budget, Suite, Workload


def _budget(steps: int, wall_s: float, eval_every: int) -> Budget:
    return Budget(steps=steps, wall_s=wall_s, eval_every=eval_every)


REDUCED = _budget(6, 60.0, 3)


def _classification(dataset: dict, model: dict, standardize: bool | None = None) -> dict:
    problem = {"dataset": dataset, "model": model, "loss": "cross_entropy", "validation_fraction": 0.2}
    return problem | ({"standardize": standardize} if standardize is not None else {})


WORKLOADS = [
    Workload(
        name="mlp-digits",
        problem=_classification({"name": "digits"}, {"name": "mlp", "params": {"hidden": [64]}}),
        batch_size=64,
        metric="val_accuracy",
        budget=_budget(600, 60.0, 50),
        reduced=REDUCED,
    ),
    Workload(
        name="cnn-digits",
        problem=_classification(
            {"name": "digits", "params": {"as_images": True}}, {"name": "cnn", "params": {"channels": [8, 16]}}
        ),
        batch_size=64,
        metric="val_accuracy",
        budget=_budget(400, 60.0, 50),
        reduced=REDUCED,
    ),
    Workload(
        name="logreg-breast-cancer",
        problem=_classification({"name": "breast_cancer"}, {"name": "linear"}),
        metric="val_loss",
        budget=_budget(300, 30.0, 25),
        reduced=REDUCED,
    ),
    Workload(
        name="mlp-wine",
        problem=_classification({"name": "wine"}, {"name": "mlp", "params": {"hidden": [32]}}),
        metric="val_loss",
        budget=_budget(300, 30.0, 25),
        reduced=REDUCED,
    ),
    Workload(
        name="mlp-synthetic",
        problem=_classification(
            {"name": "synthetic_classification", "params": {"n_samples": 2000, "n_features": 20, "n_classes": 5}},
            {"name": "mlp", "params": {"hidden": [64, 64]}},
        ),
        batch_size=128,
        metric="val_accuracy",
        budget=_budget(600, 60.0, 50),
        reduced=REDUCED,
    ),
    Workload(
        name="linreg-synthetic",
        problem={
            "dataset": {
                "name": "synthetic_regression",
                "params": {"n_samples": 512, "n_features": 100, "n_targets": 1},
            },
            "model": {"name": "linear"},
            "loss": "mse_mean",
            "validation_fraction": 0.2,
        },
        batch_size=64,
        metric="val_loss",
        budget=_budget(400, 30.0, 25),
        reduced=REDUCED,
    ),
]

SUITE = Suite(
    name="lite",
    version=1,
    description="Small classification and regression workloads for a CPU: MLPs, a CNN and linear models.",
    workloads=WORKLOADS,
    seeds=[0, 1, 2],
    reduced_seeds=[0, 1],
    baselines=[
        {"name": "adamw", "label": "adamw (baseline)", "params": {"lr": 0.003, "weight_decay": 0.0001}},
        {"name": "sgd", "label": "sgd-momentum (baseline)", "params": {"lr": 0.05, "momentum": 0.9}},
    ],
    device="cpu",
)

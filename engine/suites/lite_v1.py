"""lite-v1: seven small workloads that fit a CPU (an MLP, a residual CNN and a GPT-style transformer, an
autoencoder, logistic regression, a noisy quadratic); one optimizer × one seed over the suite in minutes."""

from engine.suites import Budget, Suite, Workload

#: a few steps for tests and smoke runs, on every workload
REDUCED = Budget(steps=6, wall_s=60.0, eval_every=3)


def problem(dataset: dict, model: dict, loss: str = "cross_entropy", validation_fraction: float = 0.2) -> dict:
    return {"dataset": dataset, "model": model, "loss": loss, "validation_fraction": validation_fraction}


WORKLOADS = [
    Workload(
        name="mlp-digits",
        problem=problem({"name": "digits"}, {"name": "mlp", "params": {"hidden": [64]}}),
        batch_size=64,
        metric="val_accuracy",
        budget=Budget(steps=500, wall_s=60.0, eval_every=50),
        reduced=REDUCED,
    ),
    Workload(
        name="resnet-digits",
        problem=problem(
            {"name": "digits", "params": {"as_images": True}},
            {"name": "resnet", "params": {"width": 8, "stages": 2, "groups": 2}},
        ),
        batch_size=64,
        metric="val_accuracy",
        budget=Budget(steps=300, wall_s=60.0, eval_every=30),
        reduced=REDUCED,
    ),
    Workload(
        name="transformer-modular",
        problem=problem(
            {"name": "modular_arithmetic", "params": {"p": 23}},
            {"name": "transformer", "params": {"layers": 1, "heads": 2, "width": 32}},
            loss="token_cross_entropy",
            validation_fraction=0.5,
        ),
        metric="val_accuracy",
        budget=Budget(steps=300, wall_s=60.0, eval_every=30),
        reduced=REDUCED,
    ),
    Workload(
        name="autoencoder-digits",
        problem=problem(
            {"name": "digits_reconstruction"},
            {"name": "autoencoder", "params": {"encoder": [32], "code": 8}},
            loss="mse_mean",
        ),
        batch_size=64,
        metric="val_loss",
        budget=Budget(steps=500, wall_s=60.0, eval_every=50),
        reduced=REDUCED,
    ),
    Workload(
        name="logreg-breast-cancer",
        problem=problem({"name": "breast_cancer"}, {"name": "linear"}),
        metric="val_loss",
        budget=Budget(steps=300, wall_s=30.0, eval_every=30),
        reduced=REDUCED,
    ),
    Workload(
        name="noisy-quadratic",
        problem=problem(
            {"name": "noisy_quadratic", "params": {"dim": 50, "n_samples": 2000}}, {"name": "linear"}, loss="mse_mean"
        ),
        batch_size=32,
        metric="val_loss",
        budget=Budget(steps=400, wall_s=30.0, eval_every=40),
        reduced=REDUCED,
        tuned={"adamw (baseline)": {"lr": 0.03}, "sgd-momentum (baseline)": {"lr": 0.005}},
    ),
    Workload(
        name="mlp-synthetic",
        problem=problem(
            {"name": "synthetic_classification", "params": {"n_samples": 2000, "n_features": 20, "n_classes": 5}},
            {"name": "mlp", "params": {"hidden": [64, 64]}},
        ),
        batch_size=128,
        metric="val_accuracy",
        budget=Budget(steps=500, wall_s=60.0, eval_every=50),
        reduced=REDUCED,
    ),
]

SUITE = Suite(
    name="lite",
    version=1,
    description="Seven small workloads for a CPU: MLPs, a residual CNN, a GPT-style transformer on modular "
    "arithmetic, an autoencoder, logistic regression and a noisy quadratic.",
    workloads=WORKLOADS,
    seeds=[0, 1, 2],
    reduced_seeds=[0, 1],
    baselines=[
        {"name": "adamw", "label": "adamw (baseline)", "params": {"lr": 0.003, "weight_decay": 0.01}},
        {"name": "sgd", "label": "sgd-momentum (baseline)", "params": {"lr": 0.05, "momentum": 0.9}},
    ],
    device="cpu",
)

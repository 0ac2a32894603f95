"""standard-v1: lite-v1's workloads at GPU sizes (wider and deeper models, more data, longer budgets), on CUDA."""

from engine.suites import Budget, Suite, Workload
from engine.suites.lite_v1 import REDUCED, problem

SUITE = Suite(
    name="standard",
    version=1,
    description="lite-v1's seven workloads at GPU sizes.",
    workloads=[
        Workload(
            name="mlp-digits",
            problem=problem({"name": "digits"}, {"name": "mlp", "params": {"hidden": [1024, 1024]}}),
            batch_size=128,
            metric="val_accuracy",
            budget=Budget(steps=2000, wall_s=120.0, eval_every=100),
            reduced=REDUCED,
        ),
        Workload(
            name="resnet-digits",
            problem=problem(
                {"name": "digits", "params": {"as_images": True}},
                {"name": "resnet", "params": {"width": 64, "stages": 2, "blocks": 2, "groups": 8}},
            ),
            batch_size=128,
            metric="val_accuracy",
            budget=Budget(steps=2000, wall_s=180.0, eval_every=100),
            reduced=REDUCED,
        ),
        Workload(
            name="transformer-modular",
            problem=problem(
                {"name": "modular_arithmetic", "params": {"p": 97}},
                {"name": "transformer", "params": {"layers": 2, "heads": 4, "width": 128}},
                loss="token_cross_entropy",
                validation_fraction=0.6,
            ),
            batch_size=512,
            metric="val_accuracy",
            budget=Budget(steps=3000, wall_s=180.0, eval_every=100),
            reduced=REDUCED,
        ),
        Workload(
            name="autoencoder-digits",
            problem=problem(
                {"name": "digits_reconstruction"},
                {"name": "autoencoder", "params": {"encoder": [512, 256], "code": 32}},
                loss="mse_mean",
            ),
            batch_size=128,
            metric="val_loss",
            budget=Budget(steps=2000, wall_s=120.0, eval_every=100),
            reduced=REDUCED,
        ),
        Workload(
            name="logreg-breast-cancer",
            problem=problem({"name": "breast_cancer"}, {"name": "linear"}),
            metric="val_loss",
            budget=Budget(steps=1000, wall_s=60.0, eval_every=50),
            reduced=REDUCED,
        ),
        Workload(
            name="noisy-quadratic",
            problem=problem(
                {"name": "noisy_quadratic", "params": {"dim": 1000, "n_samples": 200_000}},
                {"name": "linear"},
                loss="mse_mean",
            ),
            batch_size=256,
            metric="val_loss",
            budget=Budget(steps=2000, wall_s=120.0, eval_every=100),
            reduced=REDUCED,
            tuned={"adamw (baseline)": {"lr": 0.03}, "sgd-momentum (baseline)": {"lr": 0.005}},
        ),
        Workload(
            name="mlp-synthetic",
            problem=problem(
                {
                    "name": "synthetic_classification",
                    "params": {"n_samples": 200_000, "n_features": 256, "n_classes": 20},
                },
                {"name": "mlp", "params": {"hidden": [1024, 1024, 1024]}},
            ),
            batch_size=1024,
            metric="val_accuracy",
            budget=Budget(steps=2000, wall_s=180.0, eval_every=100),
            reduced=REDUCED,
        ),
    ],
    seeds=[0, 1, 2, 3, 4],
    reduced_seeds=[0, 1],
    baselines=[
        {"name": "adamw", "label": "adamw (baseline)", "params": {"lr": 0.001, "weight_decay": 0.01}},
        {"name": "sgd", "label": "sgd-momentum (baseline)", "params": {"lr": 0.05, "momentum": 0.9}},
    ],
    device="cuda",
)

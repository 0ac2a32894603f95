"""Comparison specs that tests in more than one place build the same way."""

from __future__ import annotations

from typing import Any


def adaptive_regression(name: str, rates: dict[str, float], adaptive: dict[str, Any]) -> dict:
    """An adaptive-seeding spec: full-batch SGD under each label at its rate on a linear regression of 32 features
    for 8 samples, where lr 0.05 drives the loss some e^-9 below where lr 1e-4 leaves it, seed after seed (and the
    same rate twice trains identically)."""
    return {
        "name": name,
        "problem": {
            "model": {"name": "linear"},
            "dataset": {"name": "synthetic_regression", "params": {"n_samples": 8, "n_features": 32, "n_targets": 1}},
            "loss": "mse_mean",
        },
        "training": {"steps": 20, "batch_size": "full"},
        "optimizers": [{"name": "sgd", "params": {"lr": lr}, "label": label} for label, lr in rates.items()],
        "seeds": {"adaptive": adaptive},
        "device": "cpu",
        "dtype": "float64",
        "reuse": False,
    }

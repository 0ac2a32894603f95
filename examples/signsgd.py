"""A new optimizer in about 20 lines, compared with the catalogue's Adam on the MLP example and on lite-v1.

    OPTIBENCH_URL=http://127.0.0.1:8000 OPTIBENCH_API_KEY=ob_... python examples/signsgd.py [--comparison ID]
        [--full] [--quick]

The optimizer trains here, on this machine, through the SDK (docs/sdk.md): the server's exact problem, paired
seed by seed with the server's runs. ``--comparison`` takes an existing comparison of examples/mlp_adam_amsgrad.json
instead of submitting one; ``--full`` scores lite-v1 at its full budget (default: the reduced one, a smoke run);
``--quick`` trains the MLP for 5 epochs and scores two of lite-v1's workloads (for tests).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from optibench import sdk
from optibench.client import Client
from optibench.sdk_suites import train_suite


class SignSGD(torch.optim.Optimizer):
    """signSGD with momentum (signum, Bernstein et al. 2018): m <- beta m + (1 - beta) g; p <- p - lr sign(m)."""

    def __init__(self, params, lr: float = 1e-3, beta: float = 0.9, weight_decay: float = 0.0) -> None:
        super().__init__(params, {"lr": lr, "beta": beta, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad.add(p, alpha=group["weight_decay"]) if group["weight_decay"] else p.grad
                momentum = self.state[p].setdefault("momentum", torch.zeros_like(p))
                momentum.mul_(group["beta"]).add_(grad, alpha=1 - group["beta"])
                p.add_(momentum.sign(), alpha=-group["lr"])


LR, BETA = 1e-4, 0.9
EXAMPLE = Path(__file__).with_name("mlp_adam_amsgrad.json")
QUICK_WORKLOADS = ["logreg-breast-cancer", "noisy-quadratic"]


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def leaderboard(client: Client, comparison_id: str) -> None:
    """Each label's final loss (mean and interval over seeds) and its paired difference from Adam."""
    summary = client.summary(comparison_id)
    paired = {row["label"]: row for row in summary["paired"]}
    print(f"{'label':<12} {'final loss':>10} {'interval':>21} {'vs ' + summary.get('baseline', 'adam'):>11} {'p':>8}")
    for row in summary["rows"]:
        loss, test = row["final_loss"], paired.get(row["label"], {})
        interval = f"[{_number(loss['ci_low'])}, {_number(loss['ci_high'])}]"
        print(
            f"{row['label']:<12} {_number(loss['mean']):>10} {interval:>21} "
            f"{_number(test.get('mean_diff')):>11} {_number(test.get('t_pvalue')):>8}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comparison", help="a comparison of examples/mlp_adam_amsgrad.json (default: submit one)")
    parser.add_argument("--full", action="store_true", help="lite-v1 at its full budget (default: reduced)")
    parser.add_argument("--quick", action="store_true", help="5 epochs of the MLP and two lite-v1 workloads")
    args = parser.parse_args()

    def make(params):
        return SignSGD(params, lr=LR, beta=BETA)

    described = {"optimizer": "examples.signsgd", "params": {"lr": LR, "beta": BETA}}
    with Client() as client:  # $OPTIBENCH_URL and $OPTIBENCH_API_KEY
        comparison_id = args.comparison
        if comparison_id is None:
            spec = json.loads(EXAMPLE.read_text())
            if args.quick:
                spec["training"]["epochs"], spec["seeds"] = 5, [0, 1]
            comparison_id = client.submit(spec)["id"]
        client.wait(comparison_id)
        sdk.train(client, comparison_id, make, label="signsgd", **described)
        print(f"MLP example, comparison {comparison_id}")
        leaderboard(client, comparison_id)

        scores = train_suite(
            client,
            "lite",
            "v1",
            make,
            label="signsgd",
            budget="full" if args.full else "reduced",
            workloads=QUICK_WORKLOADS if args.quick else None,
            **described,
        )
        print(f"\n{scores['suite']} ({scores['budget']} budget)")
        print(f"{'label':<24} {'score':>6} {'by steps':>9}")
        for row in scores["optimizers"]:
            print(f"{row['label']:<24} {row['score']:>6.3f} {row['score_steps']:>9.3f}")


if __name__ == "__main__":
    main()

"""The client process of the SDK fault tests: ``python -m tests.faults.sdk_client URL COMPARISON SPOOL_DIR
STEP_DELAY_S`` trains seed 0 of the comparison with a sign-descent optimizer through ``sdk.train`` (checkpoints
every 0.2 s, rows uploaded at every flush) and prints the finished run as JSON. Each step sleeps STEP_DELAY_S,
so the run lasts long enough to be killed, or to outlive a restart of the server, mid-way."""

from __future__ import annotations

import json
import sys
import time

import torch

from optibench import sdk
from optibench.client import Client

LABEL = "sdk-client"


class SlowSignSGD(torch.optim.Optimizer):
    """p <- p - lr sign(g), then a pause."""

    def __init__(self, params, lr: float = 0.01, delay_s: float = 0.0) -> None:
        super().__init__(params, {"lr": lr})
        self.delay_s = delay_s

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad.sign(), alpha=-group["lr"])
        time.sleep(self.delay_s)


def main(url: str, comparison_id: str, spool_dir: str, step_delay_s: str) -> None:
    with Client(url) as client:
        runs = sdk.train(
            client,
            comparison_id,
            lambda params: SlowSignSGD(params, delay_s=float(step_delay_s)),
            label=LABEL,
            seeds=[0],
            spool_dir=spool_dir,
            checkpoint_interval_s=0.2,
        )
    print(json.dumps(runs[0]), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])

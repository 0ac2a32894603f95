"""The suites' workloads on device cuda, unchanged: each of lite-v1's workloads at its reduced budget trains on the
GPU and its evaluations equal the CPU's within float32 tolerance. Not a test_*.py module: the suite, which runs
where there is no GPU, never collects it; bench/gpu-check runs it by name, and without CUDA it fails."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.spec import ComparisonSpec
from engine.suites import discover
from engine.training import train

if not torch.cuda.is_available():
    raise RuntimeError("no CUDA device: torch.cuda.is_available() is False (run this on a machine with a GPU)")

LITE = discover()["lite-v1"]


def _evaluations(spec: ComparisonSpec, steps: int) -> tuple[str, np.ndarray]:
    found: list[dict] = []

    def sink(rows) -> bool:
        found.extend(rows.evals or [])
        return True

    outcome = train(spec, 0, 0, sink, total_steps=steps)
    assert outcome.status == "succeeded"
    return outcome.device, np.array([[e["val_loss"] for e in found]])


@pytest.mark.parametrize("workload", LITE.workloads, ids=lambda w: w.name)
def test_each_lite_workload_trains_on_cuda_as_on_the_cpu(workload):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    runs = {}
    for device in ("cpu", "cuda"):
        body = workload.spec(LITE.baselines[:1], [0], workload.reduced, device)
        runs[device] = _evaluations(ComparisonSpec.model_validate(body), workload.reduced.steps)
    assert runs["cuda"][0] == "cuda"
    np.testing.assert_allclose(runs["cuda"][1], runs["cpu"][1], rtol=1e-3, atol=1e-5)

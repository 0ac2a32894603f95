"""Score your own optimizer on a suite (docs/suites.md, docs/sdk.md): the server trains a catalogue baseline on
every workload, this machine trains your optimizer on the same workloads and seeds with the SDK's loop, and the
suite scores both, your label as one setting across the workloads::

    scores = train_suite(client, "lite", "v1", lambda params: SignSGD(params, lr=1e-3), label="signsgd")
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, Literal

from optibench.client import Client
from optibench.sdk import OptimizerFactory, train

#: the catalogue optimizer submitted beside the suite's own baselines when none is given
DEFAULT_BASELINE: dict[str, Any] = {"name": "adam", "label": "adam", "params": {"lr": 0.003}}


def train_suite(
    client: Client,
    name: str,
    version: str,
    make_optimizer: OptimizerFactory,
    *,
    label: str,
    optimizer: str | None = None,
    params: dict[str, Any] | None = None,
    budget: Literal["full", "reduced"] = "reduced",
    baseline: dict[str, Any] | None = None,
    workloads: Sequence[str] | None = None,
    device: str | None = None,
    spool_dir: str | os.PathLike | None = None,
    on_run: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Submit the suite with ``baseline`` (a catalogue optimizer entry; default: Adam), wait until the server
    has trained each workload's comparison, then train ``make_optimizer``'s optimizer on every workload and seed
    here as external runs labelled ``label``. Returns the suite's scores at ``budget`` (``Client.suite``), in
    which ``label`` is ranked beside the catalogue's settings, and ``comparisons``: each workload's comparison id.
    The server's runs are waited for first, so that the local runs' clock does not share the machine with a
    worker on it."""
    submission: dict[str, Any] = {"optimizers": [baseline or DEFAULT_BASELINE], "budget": budget}
    if workloads is not None:
        submission["workloads"] = list(workloads)
    made = client.submit_suite(name, version, submission)
    comparisons = {made_one["workload"]: made_one["comparison"]["id"] for made_one in made["comparisons"]}
    for comparison_id in comparisons.values():
        client.wait(comparison_id)
    for comparison_id in comparisons.values():
        train(
            client,
            comparison_id,
            make_optimizer,
            label=label,
            optimizer=optimizer,
            params=params,
            device=device,
            spool_dir=spool_dir,
            on_run=on_run,
        )
    return client.suite(name, version, budget) | {"comparisons": comparisons}

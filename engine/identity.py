"""When two runs are the same run: a canonical hash of everything that determines a run's result.

Hashed: the problem (all of it: model, dataset, loss or function, x0, the split, standardisation); the
training budget and what is recorded (epochs or steps, shuffle, drop_last, eval_every and extras: the last
two change which rows exist, so a reused run has every row a fresh one would); the optimizer's name, exact
full params, schedule, batch size and parameter groups; the seed; the dtype; the device kind; ENGINE_VERSION.
Not hashed: names, labels, tags, the other seeds, reuse, target_loss, baseline, tuning, the phase.

How a run trains is compared beside the hash, not hashed: ``execution_plan`` decides at submit whether a
run trains alone or as a member of a vectorized ensemble, the same decision the dispatcher makes. The two
modes differ in the last bits (vmapped matmuls sum in another order), so a run is reused only from one
trained the same way (db.comparisons), and each run records how it actually trained (Run.execution).

Device 'auto' counts as the kind the deployment gives it (OPTIBENCH_AUTO_DEVICE; by default 'cuda' where
the machine creating the run sees a GPU, else 'cpu'). That kind is stored on the run, routes it to the
workers of that kind, and is what the worker trains on. A dataset read from files
is identified by its parameters (its path), not by the bytes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import torch

from engine.problem import train_size
from engine.sizing import parameter_count
from engine.spec import ComparisonSpec
from engine.vectorized import Member, group_runs, should_vectorize

#: how a run trains: on its own, or as one member of a vectorized ensemble (engine.vectorized)
Execution = Literal["alone", "ensemble"]
ALONE: Execution = "alone"
ENSEMBLE: Execution = "ensemble"

#: our engine's revision and torch's: bump the first when a change to the engine changes results
ENGINE_VERSION = f"1+torch-{torch.__version__}"


def _normalised(value: Any) -> Any:
    """Integral floats as integers, so 1 and 1.0 (and -0.0 and 0) are one value; other floats are
    written by repr, which round-trips exactly."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, Mapping):
        return {str(k): _normalised(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_normalised(v) for v in value]
    return value


def canonical_json(value: Any) -> str:
    return json.dumps(_normalised(value), sort_keys=True, separators=(",", ":"), allow_nan=False)


def device_kind(requested: str, auto: str | None = None) -> str:
    """The kind a run is routed to and trained on; 'auto' is ``auto`` where the deployment sets it."""
    if requested != "auto":
        return requested
    return auto or ("cuda" if torch.cuda.is_available() else "cpu")


def run_hasher(spec: Mapping[str, Any], device: str) -> Callable[[int, Mapping[str, Any], int], str]:
    """``hash(entry_index, params, seed)``: the SHA-256 of a run's identity, for the runs of one comparison.
    ``spec`` is the validated spec in its JSON form, ``params`` a run's own optimizer params, ``device`` a
    kind from ``device_kind``. What the runs share (the problem may hold 10,000 coordinates) is hashed once."""
    shared = hashlib.sha256(
        canonical_json(
            {
                "engine": ENGINE_VERSION,
                "problem": spec["problem"],
                # the entry's batch size (filled from training.batch_size when it has none) is the one used
                "training": {k: v for k, v in spec["training"].items() if k != "batch_size"},
                "dtype": spec["dtype"],
                "device": device,
            }
        ).encode()
    )

    def run_hash(entry_index: int, params: Mapping[str, Any], seed: int) -> str:
        entry = spec["optimizers"][entry_index]
        optimizer = {
            "name": entry["name"],
            "params": params,
            "schedule": entry["schedule"],
            "batch_size": entry["batch_size"],
        }
        if entry.get("groups"):  # only where given, so the hashes of runs without groups are as they were
            optimizer["groups"] = entry["groups"]
        digest = shared.copy()  # the shared JSON object ends where it closes, so the two cannot blur
        digest.update(canonical_json({"optimizer": optimizer, "seed": seed}).encode())
        return digest.hexdigest()

    return run_hash


def run_config_hash(
    spec: Mapping[str, Any], entry_index: int, params: Mapping[str, Any], seed: int, device: str
) -> str:
    """One run's hash; ``run_hasher`` for the many runs of one comparison."""
    return run_hasher(spec, device)(entry_index, params, seed)


def execution_plan(
    spec: ComparisonSpec, members: Sequence[Member], device: str, vectorize: bool = True
) -> list[tuple[list[Member], Execution]]:
    """``members`` partitioned into the tasks that train them, each with its mode: the groups of
    ``engine.vectorized.group_runs`` that ``should_vectorize`` on ``device`` (a kind) train as one ensemble,
    every other run alone. Deterministic, from the spec alone: submit and dispatch both call it."""
    n_train = train_size(spec.problem)  # the problem's sizes, worked out once for every group
    groups = group_runs(spec, members, n_train=n_train) if vectorize else [[member] for member in members]
    n_params = parameter_count(spec) if any(len(group) > 1 for group in groups) else 0
    kind = "cuda" if device == "cuda" else "cpu"
    plan: list[tuple[list[Member], Execution]] = []
    for group in groups:
        if len(group) > 1 and should_vectorize(spec, group, kind, n_params=n_params, n_train=n_train):
            plan.append((group, ENSEMBLE))
        else:
            plan += [([member], ALONE) for member in group]
    return plan


def plan_runs(
    spec: ComparisonSpec, members: Mapping[str, Member], device: str, vectorize: bool = True
) -> list[tuple[list[str], Execution]]:
    """``execution_plan`` of runs given by id, each a distinct Member: the tasks' run ids and modes."""
    run_ids = {id(member): run_id for run_id, member in members.items()}  # params are dicts: members don't hash
    return [
        ([run_ids[id(member)] for member in group], mode)
        for group, mode in execution_plan(spec, list(members.values()), device, vectorize)
    ]

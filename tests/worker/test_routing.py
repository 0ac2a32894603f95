"""Runs are routed to the Celery queue of their device kind (on a real Redis broker), the worker
trains each run on the kind it was routed to, and the hardware it ran on is stored with it."""

from __future__ import annotations

import pytest

from db import comparisons, leases
from db.models import Run
from db.session import transaction
from engine.spec import ComparisonSpec
from optibench.settings import Settings, get_settings
from worker import dispatch


def _spec(device: str) -> dict:
    return ComparisonSpec.model_validate(
        {
            "name": f"routing {device}",
            "problem": {"function": {"name": "quadratic"}},
            "training": {"steps": 5},
            "optimizers": [{"name": "sgd"}],
            "seeds": [0, 1],
            "device": device,
        }
    ).model_dump(mode="json")


def _create(spec: dict) -> list[Run]:
    with transaction() as session:
        comparison = comparisons.create_comparison(session, spec, 5)
        session.expunge_all()
        return comparison.runs


def test_each_device_kind_has_its_queue(redis_dispatch):
    cpu_runs, cuda_runs = _create(_spec("cpu")), _create(_spec("cuda"))
    assert {r.device for r in cpu_runs} == {"cpu"} and {r.device for r in cuda_runs} == {"cuda"}
    assert dispatch.enqueue_runs({r.id: leases.Publish.of(r) for r in cpu_runs + cuda_runs}) == 4
    assert redis_dispatch.length("cpu") == 2
    assert redis_dispatch.length("gpu") == 2


@pytest.mark.parametrize("auto_device, queue", [("cuda", "gpu"), ("cpu", "cpu")])
def test_auto_means_what_the_deployment_says(redis_dispatch, monkeypatch, auto_device, queue):
    monkeypatch.setenv("OPTIBENCH_AUTO_DEVICE", auto_device)
    get_settings.cache_clear()
    runs = _create(_spec("auto"))
    assert {r.device for r in runs} == {auto_device}
    with transaction() as session:
        assert dispatch.enqueue_runs(leases.unpublished_runs(session, comparison_id=runs[0].comparison_id)) == 2
    assert redis_dispatch.length(queue) == 2


def test_the_device_kind_is_part_of_the_run_identity(use_database, monkeypatch):
    monkeypatch.setenv("OPTIBENCH_AUTO_DEVICE", "cuda")
    get_settings.cache_clear()
    on_gpu = _create(_spec("auto"))
    monkeypatch.setenv("OPTIBENCH_AUTO_DEVICE", "cpu")
    get_settings.cache_clear()
    on_cpu = _create(_spec("auto"))
    get_settings.cache_clear()
    assert {r.config_hash for r in on_gpu}.isdisjoint({r.config_hash for r in on_cpu})
    assert [r.config_hash for r in on_cpu] == [r.config_hash for r in _create(_spec("cpu"))]


def test_queue_names():
    settings = Settings(queue="team")
    assert (settings.queue_for("cpu"), settings.queue_for("cuda")) == ("team.cpu", "team.gpu")


def test_a_run_routed_to_a_gpu_trains_there_or_fails_clearly(use_database):
    import torch

    from worker.tasks import train_run

    run = _create(_spec("cuda"))[0]
    status = train_run.apply(args=[run.id]).get()
    with transaction() as session:
        stored = session.get(Run, run.id)
    if torch.cuda.is_available():
        assert (status, stored.device, stored.hardware["gpu"]) == ("succeeded", "cuda", torch.cuda.get_device_name(0))
    else:
        assert status == "failed" and "no CUDA device" in stored.error


def test_the_hardware_is_stored_with_the_run(use_database):
    import torch

    from worker.tasks import train_run

    run = _create(_spec("cpu"))[0]
    assert train_run.apply(args=[run.id]).get() == "succeeded"
    with transaction() as session:
        hardware = session.get(Run, run.id).hardware
    assert hardware["torch"] == torch.__version__ and hardware["cpu"] and hardware["gpu"] is None

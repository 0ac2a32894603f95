"""The team deployment's docker-compose.yml: its structure (parsed with PyYAML), and what a Compose
implementation makes of it (`docker compose config`, or Debian's v1 `docker-compose config`). Nothing
here needs a Docker engine."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yml"
SERVICES = {"postgres", "redis", "migrate", "api", "worker", "cpu-worker"}
APP_SERVICES = ("migrate", "api", "worker", "cpu-worker")
IMAGE = "optibench:latest"
DATABASE_URL = "postgresql+psycopg://optibench:optibench@postgres:5432/optibench"
BROKER_URL = "redis://redis:6379/0"
IN_CI = os.environ.get("CI", "") == "true"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def _environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # ["KEY=value", ...]
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {key: (None if value is None else str(value)) for key, value in env.items()}


def _depends_on(service: dict) -> dict[str, str]:
    depends = service.get("depends_on") or {}
    if isinstance(depends, list):  # short syntax: only "service_started"
        return {name: "service_started" for name in depends}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in depends.items()}


def _published_ports(service: dict) -> set[tuple[int, int]]:
    """(published, target) pairs, from the short ("[ip:]host:container[/proto]") or the long syntax."""
    pairs = set()
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            if port.get("published") is not None:
                pairs.add((int(port["published"]), int(port["target"])))
            continue
        parts = str(port).split("/")[0].split(":")
        if len(parts) >= 2:
            pairs.add((int(parts[-2]), int(parts[-1])))
    return pairs


def _named_volumes(service: dict) -> dict[str, str]:
    """Named volume -> mount path; bind mounts (paths) are left out."""
    named = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            if volume.get("type", "volume") == "volume" and volume.get("source"):
                named[volume["source"]] = volume["target"]
            continue
        parts = str(volume).split(":")
        if len(parts) >= 2 and not parts[0].startswith((".", "/", "~", "$")):
            named[parts[0]] = parts[1]
    return named


def test_the_services_exist(services):
    assert set(services) == SERVICES


def test_gpu_worker_reserves_the_gpus_and_runs_one_worker_per_gpu(services):
    worker = services["worker"]
    assert worker["command"] == ["optibench", "worker", "--gpus", "all"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any(
        device.get("driver") == "nvidia" and device.get("count") == "all" and "gpu" in device.get("capabilities", [])
        for device in devices
    ), devices
    # the API has no GPU: 'auto' runs must be routed to the GPU workers
    assert _environment(worker).get("OPTIBENCH_AUTO_DEVICE") == "${OPTIBENCH_AUTO_DEVICE:-cuda}"


def test_workers_can_be_scaled(services):
    for name in ("worker", "cpu-worker"):
        # `docker compose up --scale NAME=N` refuses a fixed container name, and N containers cannot
        # all publish the same host port
        assert "container_name" not in services[name], name
        assert not services[name].get("ports"), name
    assert services["cpu-worker"]["command"] == ["optibench", "worker", "--device", "cpu"]


def test_migrate_is_one_shot_and_the_app_waits_for_it(services):
    migrate = services["migrate"]
    assert migrate["command"] in (["optibench", "db", "upgrade"], "optibench db upgrade")
    assert str(migrate.get("restart")) == "no"
    assert _depends_on(migrate).get("postgres") == "service_healthy"
    for name in ("api", "worker", "cpu-worker"):
        depends = _depends_on(services[name])
        assert depends.get("migrate") == "service_completed_successfully", name
        assert depends.get("redis") == "service_healthy", name


def test_api_serves_without_a_worker_on_port_8000(services):
    api = services["api"]
    assert api["command"] in (["optibench", "serve", "--no-worker"], "optibench serve --no-worker")
    assert (8000, 8000) in _published_ports(api)
    assert _environment(api).get("OPTIBENCH_HOST") == "0.0.0.0"


def test_postgres_and_redis_keep_their_data_in_declared_named_volumes(compose, services):
    declared = set(compose.get("volumes") or {})
    postgres = _named_volumes(services["postgres"])
    assert "/var/lib/postgresql/data" in postgres.values()
    redis = _named_volumes(services["redis"])
    assert "/data" in redis.values()
    assert set(postgres) | set(redis) <= declared


def test_postgres_and_redis_have_healthchecks(services):
    postgres = services["postgres"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert {
        key: _environment(postgres).get(key) for key in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB")
    } == dict.fromkeys(("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"), "optibench")
    redis = services["redis"]
    assert "redis-cli ping" in " ".join(redis["healthcheck"]["test"])
    command = redis["command"] if isinstance(redis["command"], str) else " ".join(redis["command"])
    assert "--appendonly yes" in command


def test_the_image_is_built_once_and_every_service_using_it_can_get_it(services):
    builders = {name: service for name, service in services.items() if "build" in service}
    assert len(builders) == 1, f"build the image once, not in {sorted(builders)}"
    (builder,) = builders.values()
    assert builder.get("image") == IMAGE
    built_images = {service["image"] for service in builders.values()}
    for name, service in services.items():
        assert "build" in service or "image" in service, name
        if "build" not in service and not service["image"].startswith(("postgres:", "redis:")):
            assert service["image"] in built_images, f"{name} runs {service['image']}, which no service builds"
    for name in APP_SERVICES:
        assert services[name]["image"] == IMAGE, name


def test_the_app_services_share_the_database_and_the_broker(services):
    for name in APP_SERVICES:
        env = _environment(services[name])
        assert env.get("OPTIBENCH_DATABASE_URL") == DATABASE_URL, name
        assert env.get("OPTIBENCH_BROKER_URL") == BROKER_URL, name
        assert env.get("OPTIBENCH_AUTH") == "required", name


def _compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True)
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_a_compose_implementation_accepts_the_file():
    command = _compose_command()
    if command is None:
        reason = (
            "neither `docker compose` nor `docker-compose` is installed; "
            "`.ci/run` must install Debian's docker-compose (apt-get install docker-compose)"
        )
        if IN_CI:
            pytest.fail(f"{reason} (CI=true)", pytrace=False)
        pytest.skip(reason)
    result = subprocess.run(
        [*command, "-f", str(COMPOSE_FILE), "config"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"{' '.join(command)} config failed:\n{result.stderr}"
    normalised = yaml.safe_load(result.stdout)
    assert set(normalised["services"]) == SERVICES
    assert normalised["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"]


def test_the_dockerfile_builds_the_image_the_compose_file_expects():
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in dockerfile
    for arg in ("ARG TORCH_INDEX_URL=", "ARG TORCH_VERSION="):
        assert arg in dockerfile, arg
    assert "USER optibench" in dockerfile  # not root
    assert "/healthz" in dockerfile.split("HEALTHCHECK", 1)[1]
    assert 'CMD ["optibench", "serve", "--no-worker"]' in dockerfile
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert {".venv", ".optibench", ".git", "**/__pycache__"} <= ignored

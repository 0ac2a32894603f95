import uuid
from dataclasses import dataclass

import pytest
import redis


@dataclass(frozen=True)
class Broker:
    client: redis.Redis
    prefix: str  # OPTIBENCH_QUEUE: the test's queues are <prefix>.cpu and <prefix>.gpu


@pytest.fixture
def redis_dispatch(redis_url, use_database, monkeypatch) -> Broker:
    """worker.dispatch publishes to the machine's Redis, under a queue prefix of this test's own."""
    from optibench.settings import get_settings
    from worker import dispatch
    from worker.celery_app import create_celery

    prefix = f"test-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("OPTIBENCH_QUEUE", prefix)
    monkeypatch.setenv("OPTIBENCH_BROKER_URL", redis_url)
    get_settings.cache_clear()
    monkeypatch.setattr(dispatch, "celery_app", create_celery(get_settings()))
    client = redis.Redis.from_url(redis_url)
    yield Broker(client, prefix)
    client.delete(f"{prefix}.cpu", f"{prefix}.gpu")
    get_settings.cache_clear()

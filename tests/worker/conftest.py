import uuid
from dataclasses import dataclass

import pytest
import redis

#: kombu's Redis transport keeps a priority's messages in the list <queue><PRIORITY_SEP><priority> (0: <queue>)
PRIORITY_SEP = "\x06\x16"


def priority_list(queue: str, priority: int) -> str:
    return f"{queue}{PRIORITY_SEP}{priority}" if priority else queue


@dataclass(frozen=True)
class Broker:
    client: redis.Redis
    prefix: str  # OPTIBENCH_QUEUE: the test's queues are <prefix>.cpu and <prefix>.gpu

    def lists(self, kind: str) -> list[str]:
        """The Redis lists of the queue of ``kind`` ('cpu' or 'gpu'), one per priority."""
        return [priority_list(f"{self.prefix}.{kind}", priority) for priority in range(10)]

    def length(self, kind: str) -> int:
        """Messages waiting on the queue of ``kind``, whatever their priority."""
        return sum(self.client.llen(name) for name in self.lists(kind))

    def messages(self, kind: str) -> list[bytes]:
        return [m for name in self.lists(kind) for m in self.client.lrange(name, 0, -1)]


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
    broker = Broker(client, prefix)
    client.delete(*broker.lists("cpu"), *broker.lists("gpu"), f"{prefix}.sent")
    get_settings.cache_clear()

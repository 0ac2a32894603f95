"""The app in-process for a test on both databases. Files whose tests must not run the app's lifespan (its
sweeper thread would requeue the 'running' runs they write) define their own ``client`` without it."""

import pytest
from fastapi.testclient import TestClient


@pytest.fixture
def client(use_database):
    """The API with its lifespan (the sweeper thread) on ``use_database``."""
    from api.main import create_app

    with TestClient(create_app()) as test_client:
        yield test_client

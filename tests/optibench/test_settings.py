"""The secret key that signs sessions and share links: from the environment, else generated once."""

from __future__ import annotations

import os
import secrets
import stat
import subprocess
import sys

import pytest
from pydantic import ValidationError

from optibench.settings import Settings


def test_without_a_configured_key_one_is_generated_once_and_kept_private(tmp_path, monkeypatch):
    monkeypatch.delenv("OPTIBENCH_SECRET_KEY", raising=False)
    first = Settings(data_dir=tmp_path / "data").signing_key()
    assert len(first) >= 64
    key_file = tmp_path / "data" / "secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert Settings(data_dir=tmp_path / "data").signing_key() == first  # a restart keeps it
    assert Settings(data_dir=tmp_path / "other").signing_key() != first
    assert [path.name for path in key_file.parent.iterdir()] == ["secret_key"]


def test_the_configured_key_wins_and_an_empty_one_counts_as_unset(tmp_path, monkeypatch):
    monkeypatch.setenv("OPTIBENCH_SECRET_KEY", "from-the-environment")
    settings = Settings(data_dir=tmp_path)
    assert settings.signing_key() == "from-the-environment"
    assert "from-the-environment" not in repr(settings)
    assert not (tmp_path / "secret_key").exists()
    monkeypatch.setenv("OPTIBENCH_SECRET_KEY", "")
    assert Settings(data_dir=tmp_path).secret_key is None
    assert Settings(data_dir=tmp_path).signing_key() == (tmp_path / "secret_key").read_text()


GENERATE = "python -c 'import secrets; print(secrets.token_urlsafe(48))'"


@pytest.mark.parametrize("key", ["s3cret", "short-but-varied-key", "ab" * 32, "0123456789" * 3])
def test_a_weak_key_is_refused_with_auth_required_saying_how_to_make_one(tmp_path, monkeypatch, key):
    monkeypatch.setenv("OPTIBENCH_AUTH", "required")
    monkeypatch.setenv("OPTIBENCH_SECRET_KEY", key)
    with pytest.raises(ValidationError) as refused:
        Settings(data_dir=tmp_path)
    message = str(refused.value)
    assert "OPTIBENCH_SECRET_KEY is too weak" in message and GENERATE in message
    assert key not in message  # the error never quotes the key


def test_strong_generated_and_local_keys_are_accepted(tmp_path, monkeypatch):
    monkeypatch.setenv("OPTIBENCH_AUTH", "required")
    for key in (secrets.token_urlsafe(48), secrets.token_hex(32)):
        monkeypatch.setenv("OPTIBENCH_SECRET_KEY", key)
        assert Settings(data_dir=tmp_path).signing_key() == key
    monkeypatch.delenv("OPTIBENCH_SECRET_KEY")  # the persisted, generated key
    assert len(Settings(data_dir=tmp_path).signing_key()) >= 64
    monkeypatch.setenv("OPTIBENCH_AUTH", "off")  # one person on a loopback address
    monkeypatch.setenv("OPTIBENCH_SECRET_KEY", "a")
    assert Settings(data_dir=tmp_path).signing_key() == "a"


def test_serve_refuses_to_start_with_a_weak_key(tmp_path):
    environment = {
        **os.environ,
        "OPTIBENCH_DATA_DIR": str(tmp_path),
        "OPTIBENCH_AUTH": "required",
        "OPTIBENCH_SECRET_KEY": "s3cret",
        "OPTIBENCH_PORT": "1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "optibench.cli", "serve", "--no-worker"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "OPTIBENCH_SECRET_KEY is too weak" in done.stderr and GENERATE in done.stderr
    assert "s3cret" not in done.stderr + done.stdout
    assert not (tmp_path / "optibench.db").exists()

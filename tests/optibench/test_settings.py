"""The secret key that signs sessions and share links: from the environment, else generated once."""

from __future__ import annotations

import stat

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

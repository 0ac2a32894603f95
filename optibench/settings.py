"""The one configuration object shared by the API, the worker and the CLI."""

import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

HARD_LIMIT_GRACE_S = 60.0
#: OPTIBENCH_SECRET_KEY with OPTIBENCH_AUTH=required: at least this long, with this many distinct characters
MIN_SECRET_KEY_CHARS, MIN_SECRET_KEY_DISTINCT_CHARS = 32, 10


class Settings(BaseSettings):
    # errors never quote the input: it holds the secret key and the database password
    model_config = SettingsConfigDict(
        env_prefix="OPTIBENCH_", env_file=".env", extra="ignore", hide_input_in_errors=True
    )

    data_dir: Path = Path(".optibench")
    database_url: str = Field("", description="SQLAlchemy URL; default: SQLite file under data_dir")
    broker_url: str = Field("", description="Celery broker; default: embedded SQLite broker under data_dir")
    idx_root: Path = Field(Path("data"), description="the only directory the 'idx' dataset may read")
    queue: str = Field("optibench", description="prefix of the Celery queues: runs go to <queue>.cpu or <queue>.gpu")
    auto_device: Literal["cpu", "cuda"] | None = Field(
        None,
        description="what a spec's device 'auto' means in this deployment; default: 'cuda' where this "
        "machine has a GPU, else 'cpu' (set 'cuda' on a GPU-less API whose workers have GPUs)",
    )
    host: str = "127.0.0.1"
    api_workers: int = Field(
        1, ge=1, description="API processes (uvicorn workers); the team deployment runs one per core"
    )
    api_threads: int = Field(
        4,
        ge=1,
        description="threads per API process that run requests' database work; more "
        "only queue for Python's lock, and a request holding a row lock waits behind them",
    )
    port: int = Field(8000, ge=1, le=65535)
    auth: Literal["off", "required"] = Field(
        "off",
        description="'required' for a team deployment: every "
        "request needs an API key; 'off' only on a loopback address",
    )
    secret_key: SecretStr | None = Field(
        None, description="signs session cookies and share links; default: generated once into data_dir/secret_key"
    )
    session_https_only: bool = Field(False, description="send the dashboard session cookie over HTTPS only")

    worker_concurrency: int = Field(1, ge=1, description="training processes per worker")
    worker_restart_backoff_s: float = Field(
        1.0,
        ge=0,
        description="`optibench serve`: seconds before restarting a crashed worker, doubled at each "
        "crash within a minute (the fifth stops the server)",
    )
    worker_memory_bytes: int = Field(
        4 * 1024**3,
        ge=64 * 1024**2,
        description="memory one run (or one "
        "vectorized ensemble) may use: a submit whose estimate exceeds it gets 422, "
        "and a worker fails a run over it with 'out of memory budget'",
    )
    vectorize: bool = Field(
        True,
        description="train a comparison's small runs that share a problem and an "
        "optimizer as one vectorized ensemble where that pays (docs/vectorized.md)",
    )
    torch_threads: int = Field(0, ge=0, description="threads per training process; 0 = cores / concurrency")
    flush_every_steps: int = Field(10_000, ge=1, description="steps buffered before a write, at most")
    flush_interval_s: float = Field(1.0, gt=0, description="seconds between writes, whichever comes first")
    lease_timeout_s: float = Field(60.0, gt=0, description="a run whose heartbeat is older lost its worker")
    max_attempts: int = Field(3, ge=1, description="deliveries of a run before the watchdog fails it")
    checkpoint_interval_s: float = Field(30.0, gt=0, description="seconds between resumable checkpoints of a run")
    sweep_interval_s: float = Field(10.0, gt=0, description="how often the watchdog and the outbox run")
    republish_after_s: float = Field(
        900.0,
        gt=0,
        description="publish a still-queued run again after this long, "
        "in case the broker lost its message (runs are leased: duplicates are harmless)",
    )
    time_limit_base_s: float = Field(600.0, gt=0, description="a run's soft time limit: base + steps x per_step")
    time_limit_per_step_s: float = Field(1.0, gt=0)
    max_body_bytes: int = Field(1_048_576, ge=1024, description="larger request bodies get 413")
    # uploads of external runs' step rows (docs/ingest.md)
    ingest_max_body_bytes: int = Field(64 * 1024**2, ge=1024, description="a larger batch gets 413")
    ingest_rows_per_s: float = Field(5_000_000.0, gt=0, description="per team, over every upload (else 429)")
    ingest_bytes_per_s: float = Field(256 * 1024**2, gt=0, description="per team, over every upload (else 429)")
    # per-team limits; a team's own non-NULL limit (`optibench admin set-limits`) overrides these
    max_runs_per_comparison: int = Field(1000, ge=1)
    max_steps_per_comparison: int = Field(100_000_000, ge=1, description="total steps over all runs")
    max_running_comparisons: int = Field(100, ge=1, description="queued or running comparisons per team")
    max_steps_per_run: int = Field(10_000_000, ge=1)
    public_url: str | None = Field(
        None,
        description="the address users reach the server at, e.g. "
        "https://optibench.example.com: share links and every absolute URL the server "
        "builds use it, never a request's Host header",
    )

    @model_validator(mode="after")
    def _embedded_defaults(self) -> "Settings":
        if not self.database_url:
            self.database_url = f"sqlite:///{(self.data_dir / 'optibench.db').resolve()}"
        if not self.broker_url:
            self.broker_url = f"sqla+sqlite:///{(self.data_dir / 'broker.db').resolve()}"
        if self.secret_key is not None and not self.secret_key.get_secret_value():
            self.secret_key = None  # an empty variable, e.g. compose's ${OPTIBENCH_SECRET_KEY:-}
        if self.auth == "required" and self.secret_key is not None:
            _refuse_a_weak_secret_key(self.secret_key.get_secret_value())
        self.public_url = _checked_public_url(self.public_url) if self.public_url else None
        return self

    def soft_time_limit_s(self, steps: int) -> float:
        return self.time_limit_base_s + steps * self.time_limit_per_step_s

    @property
    def longest_run_s(self) -> float:
        """The hard limit of the longest run the limits allow."""
        return self.soft_time_limit_s(self.max_steps_per_run) + HARD_LIMIT_GRACE_S

    def queue_for(self, device_kind: str) -> str:
        """The Celery queue of runs on a device kind ('cpu' or 'cuda')."""
        return f"{self.queue}.{'gpu' if device_kind == 'cuda' else 'cpu'}"

    @property
    def embedded_broker(self) -> bool:
        return self.broker_url.startswith("sqla+")

    def ensure_data_dir(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def signing_key(self) -> str:
        """OPTIBENCH_SECRET_KEY, else the key persisted under data_dir, so restarts keep sessions and
        share links valid."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value()
        self.ensure_data_dir()
        return _persisted_secret(self.data_dir / "secret_key")


def _refuse_a_weak_secret_key(key: str) -> None:
    """Whoever guesses the key forges sessions and share links: a team deployment needs a long one
    that is not one character repeated (the generated key has 64 characters of 64 kinds)."""
    distinct = len(set(key))
    if len(key) < MIN_SECRET_KEY_CHARS or distinct < MIN_SECRET_KEY_DISTINCT_CHARS:
        raise ValueError(
            f"OPTIBENCH_SECRET_KEY is too weak for OPTIBENCH_AUTH=required ({len(key)} characters, {distinct} "
            f"distinct): anyone who guesses it can forge sessions and share links. Use at least "
            f"{MIN_SECRET_KEY_CHARS} characters with at least {MIN_SECRET_KEY_DISTINCT_CHARS} distinct ones, e.g. "
            f"from python -c 'import secrets; print(secrets.token_urlsafe(48))', or unset it to use the key "
            f"generated into OPTIBENCH_DATA_DIR/secret_key"
        )


def _checked_public_url(url: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(
            f"OPTIBENCH_PUBLIC_URL must be an http(s) address such as https://optibench.example.com "
            f"(optionally with a path prefix), not {url!r}"
        )
    return url.strip().rstrip("/")


def _persisted_secret(path: Path) -> str:
    """Read the key, or create it readable by its owner only. The link is atomic: when processes
    start together, one key wins and every process reads that one."""
    if not path.exists():
        draft = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(secrets.token_urlsafe(48))
        try:
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return path.read_text().strip()


@lru_cache
def get_settings() -> Settings:
    return Settings()

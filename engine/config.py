"""What the engine takes from the process that runs it. The service's settings live above the engine: the
API (when its app is created) and the worker (in each pool process, and again for each run it trains) copy
the values the engine needs in here."""

from dataclasses import dataclass
from pathlib import Path


@dataclass
class EngineConfig:
    #: the only directory the 'idx' dataset may read; a relative root is resolved at each use
    data_root: Path = Path("data")


config = EngineConfig()


def configure(*, data_root: Path) -> None:
    config.data_root = Path(data_root)

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends
from sqlalchemy.orm import Session

from db.models import ADMIN, LOCAL_TEAM_ID
from db.session import new_session
from optibench.settings import Settings, get_settings


def _session() -> Iterator[Session]:
    with new_session() as session:
        yield session


SessionDep = Annotated[Session, Depends(_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


@dataclass(frozen=True)
class Principal:
    """Who is calling: every read and write is scoped to ``team_id``."""

    team_id: str
    role: str
    #: recorded as the submitter of comparisons
    name: str
    key_id: str | None = None


def current_principal() -> Principal:
    return Principal(team_id=LOCAL_TEAM_ID, role=ADMIN, name="local")


PrincipalDep = Annotated[Principal, Depends(current_principal)]

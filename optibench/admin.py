"""`optibench admin`: the operator's side of teams and API keys. Team admins also manage their own
team's keys over HTTP (/api/v1/admin/keys). Keys are printed once, at creation; only their SHA-256
is stored.

The database modules are imported in the commands: the client commands of the same CLI (submit, ls,
...) then start without loading the server's stack."""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

import typer

from optibench.settings import get_settings

if TYPE_CHECKING:
    from db.models import Team

admin_app = typer.Typer(help="Teams, API keys, limits and purging deleted comparisons.", no_args_is_help=True)

NAME_MAX = 100  # the length of the name columns
MAX_RUNS = typer.Option(None, "--max-runs", min=0, help="runs per comparison (0: back to the server's setting)")
MAX_STEPS = typer.Option(None, "--max-steps", min=0, help="total steps per comparison (0: the setting)")
MAX_RUNNING = typer.Option(None, "--max-running", min=0, help="comparisons queued or running at once (0: the setting)")


class Role(StrEnum):
    member = "member"
    admin = "admin"


def _fail(message: str) -> typer.Exit:
    typer.echo(message, err=True)
    return typer.Exit(1)


def _check_name(what: str, name: str) -> None:
    if not name.strip() or len(name) > NAME_MAX:
        raise _fail(f"the {what} name must have 1 to {NAME_MAX} characters")


def _team(session, name_or_id: str) -> Team:
    from db import teams

    team = teams.find_team(session, name_or_id)
    if team is None:
        raise _fail(f"no team {name_or_id!r}: `optibench admin create-team NAME` creates one")
    return team


def _print_key(team_name: str, key, secret: str) -> None:
    typer.echo(f"{key.role} key {key.name!r} of team {team_name!r} (id {key.id}, prefix {key.prefix})")
    typer.echo("Store the key now: it is shown this once and cannot be recovered.")
    typer.echo(secret)


@admin_app.command("create-team")
def create_team(
    name: str,
    max_runs: int = MAX_RUNS,
    max_steps: int = MAX_STEPS,
    max_running: int = MAX_RUNNING,
    key_name: str = typer.Option("admin", help="name of the team's first admin key"),
) -> None:
    """Create a team and its first admin key, printed once. Limits left out follow the server's settings."""
    from db import teams
    from db.session import transaction
    from services import keys

    _check_name("team", name)
    _check_name("key", key_name)
    with transaction() as session:
        if teams.find_team(session, name) is not None:
            raise _fail(f"a team {name!r} exists already")
        team = teams.create_team(session, name)
        teams.set_limits(
            team,
            max_runs_per_comparison=max_runs,
            max_steps_per_comparison=max_steps,
            max_running_comparisons=max_running,
        )
        key, secret = keys.issue_key(session, team.id, key_name, Role.admin.value)
    typer.echo(f"team {name!r} created (id {team.id})")
    _print_key(name, key, secret)


@admin_app.command("create-key")
def create_key(
    team: str, name: str, role: Role = typer.Option(Role.member, help="admins also manage keys and delete")
) -> None:
    """Create an API key for TEAM (a name or id), printed once."""
    from db.session import transaction
    from services import keys

    _check_name("key", name)
    with transaction() as session:
        found = _team(session, team)
        key, secret = keys.issue_key(session, found.id, name, role.value)
    _print_key(found.name, key, secret)


@admin_app.command("revoke-key")
def revoke_key(key_id_or_prefix: str) -> None:
    """Revoke a key, by its id or its displayed prefix; its next request is answered 401."""
    from db import teams
    from db.session import transaction

    with transaction() as session:
        keys = teams.keys_by_id_or_prefix(session, key_id_or_prefix)
        if len(keys) != 1:
            raise _fail(
                f"no key {key_id_or_prefix!r}"
                if not keys
                else f"{len(keys)} keys match {key_id_or_prefix!r}; use the id: " + ", ".join(k.id for k in keys)
            )
        teams.revoke_key(keys[0])
        typer.echo(f"revoked key {keys[0].name!r} ({keys[0].prefix}) of team {keys[0].team.name!r}")


@admin_app.command("list-keys")
def list_keys(team: str) -> None:
    """The keys of TEAM, revoked ones included: id, prefix, role, name, created, last used, revoked."""
    from db import teams
    from db.session import transaction

    def when(moment) -> str:
        return moment.strftime("%Y-%m-%d %H:%M") if moment else "-"

    with transaction() as session:
        for key in teams.list_keys(session, _team(session, team).id):
            state = f"revoked {when(key.revoked_at)}" if key.revoked_at else "active"
            typer.echo(
                "\t".join((key.id, key.prefix, key.role, key.name, when(key.created_at), when(key.last_used_at), state))
            )


@admin_app.command("set-limits")
def set_limits(team: str, max_runs: int = MAX_RUNS, max_steps: int = MAX_STEPS, max_running: int = MAX_RUNNING) -> None:
    """Set TEAM's own limits, overriding the OPTIBENCH_MAX_* settings; 0 returns one to the setting."""
    from db import teams
    from db.session import transaction

    with transaction() as session:
        found = _team(session, team)
        teams.set_limits(
            found,
            max_runs_per_comparison=max_runs,
            max_steps_per_comparison=max_steps,
            max_running_comparisons=max_running,
        )
        session.flush()
        for limit in teams.limits_of(found, get_settings()).values():
            typer.echo(f"{limit.name} = {limit.value} ({'this team' if limit.per_team else 'the setting'})")


@admin_app.command()
def purge(older_than_days: float = typer.Option(0.0, min=0, help="only comparisons deleted this long ago")) -> None:
    """Delete soft-deleted comparisons for good, with every run, step and evaluation of theirs."""
    from db import teams
    from db.models import utcnow
    from db.session import transaction

    with transaction() as session:
        purged = teams.purge_deleted(session, utcnow() - timedelta(days=older_than_days))
    typer.echo(f"purged {purged} deleted comparison{'s' * (purged != 1)}")

"""API keys below HTTP, so the API and the admin CLI mint and check them alike; and the one kind of host
on which the service may run with no keys at all."""

from __future__ import annotations

import hashlib
import ipaddress
import secrets

from sqlalchemy.orm import Session

from db import teams
from db.models import ApiKey

KEY_PREFIX = "ob_"
#: shown in listings to tell keys apart: "ob_" and 8 random characters (48 of the key's 256 bits)
DISPLAY_CHARS = 11


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def issue_key(session: Session, team_id: str, name: str, role: str) -> tuple[ApiKey, str]:
    """A new key: the secret is returned here once and never stored."""
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    return teams.add_key(session, team_id, name, role, hash_key(secret), secret[:DISPLAY_CHARS]), secret


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach ``host``: the only place authentication may be off."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False

"""The typed objects the calls return, parsed from Custody's JSON.

Frozen dataclasses, no validation library. Unknown fields are ignored so a newer server does not
break an older SDK. Times are timezone-aware `datetime`s in UTC. Objects that carry a secret
(`Token.access_token`, `SignIn.user_token`) keep it out of `repr()`, so printing or logging one
never leaks it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, List, Mapping, Optional, Tuple

__all__ = ["ConnectSession", "Grant", "SignIn", "Token", "User"]

_FRACTION = re.compile(r"\.(\d+)")


def parse_time(value: Any) -> Optional[datetime]:
    """RFC 3339 (`2026-11-22T10:00:00Z`, with or without fractions) to an aware datetime."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"expected an RFC 3339 time, got {type(value).__name__}")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    # Python 3.9's fromisoformat takes at most six fraction digits, and exactly 3 or 6.
    text = _FRACTION.sub(lambda m: "." + (m.group(1) + "000000")[:6], text, count=1)
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def _required_time(value: Any) -> datetime:
    parsed = parse_time(value)
    if parsed is None:
        raise ValueError("a required time is missing")
    return parsed


def _strings(value: Any) -> Tuple[str, ...]:
    if value is None:
        return ()
    return tuple(str(item) for item in value)


def _opt_str(value: Any) -> Optional[str]:
    return None if value is None else str(value)


@dataclass(frozen=True)
class User:
    """The signed-in user of `GET /v1/me` (`user_id` in JSON is `id` here)."""

    id: str
    subject: str
    status: str
    email: Optional[str]
    name: Optional[str]
    groups: Tuple[str, ...]
    roles: Tuple[str, ...]
    created_at: Optional[datetime] = None
    last_seen_at: Optional[datetime] = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> User:
        return cls(
            id=str(data.get("user_id") or data.get("id")),
            subject=str(data["subject"]),
            status=str(data["status"]),
            email=_opt_str(data.get("email")),
            name=_opt_str(data.get("name")),
            groups=_strings(data.get("groups")),
            roles=_strings(data.get("roles")),
            created_at=parse_time(data.get("created_at")),
            last_seen_at=parse_time(data.get("last_seen_at")),
        )


@dataclass(frozen=True)
class Token:
    """A handed-out provider access token (`POST /v1/token`). `repr()` hides the token."""

    access_token: str = field(repr=False)
    token_type: str
    expires_at: Optional[datetime]
    grant_id: str
    provider: str
    scopes: Tuple[str, ...]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Token:
        return cls(
            access_token=str(data["access_token"]),
            token_type=str(data.get("token_type") or "Bearer"),
            expires_at=parse_time(data.get("expires_at")),
            grant_id=str(data["grant_id"]),
            provider=str(data["provider"]),
            scopes=_strings(data.get("scopes")),
        )


@dataclass(frozen=True)
class Grant:
    """A user's grant for a provider; never carries a token."""

    id: str
    provider: str
    status: str
    scopes: Tuple[str, ...]
    account: Optional[str]
    user_id: str
    created_at: Optional[datetime]
    updated_at: Optional[datetime]
    last_used_at: Optional[datetime]
    revoked_at: Optional[datetime]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Grant:
        return cls(
            id=str(data["id"]),
            provider=str(data["provider"]),
            status=str(data["status"]),
            scopes=_strings(data.get("scopes")),
            account=_opt_str(data.get("account")),
            user_id=str(data.get("user_id")),
            created_at=parse_time(data.get("created_at")),
            updated_at=parse_time(data.get("updated_at")),
            last_used_at=parse_time(data.get("last_used_at")),
            revoked_at=parse_time(data.get("revoked_at")),
        )

    @classmethod
    def list_from_json(cls, data: Any) -> List[Grant]:
        items = data.get("items", []) if isinstance(data, Mapping) else data
        return [cls.from_json(item) for item in items]


@dataclass(frozen=True)
class ConnectSession:
    """Where to send the user's browser to connect a provider, and until when it works."""

    connect_url: str
    expires_at: datetime

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ConnectSession:
        return cls(
            connect_url=str(data["connect_url"]),
            expires_at=_required_time(data["expires_at"]),
        )


@dataclass(frozen=True)
class SignIn:
    """The result of `authenticate()`: the user token (the ID token; hidden in `repr()`) and
    the user it stands for."""

    user_token: str = field(repr=False)
    user: User

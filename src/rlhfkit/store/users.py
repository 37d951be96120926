"""Accounts, API tokens and the optional, consented rater profile.

Passwords are hashed with argon2id (OWASP's minimum parameters: 19 MiB, 2 passes), tokens are
stored only as SHA-256 digests.

Example::

    uid = create_user(engine, "alice", "correct horse", role="admin")
    token = create_token(engine, uid, "laptop")
    assert user_for_token(engine, token)["username"] == "alice"
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Engine, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from rlhfkit.errors import InputError
from rlhfkit.store import limits
from rlhfkit.store.engine import reading, writing
from rlhfkit.store.errors import Conflict, NotFound
from rlhfkit.store.schema import PROFILE_FIELDS, ROLES, api_tokens, users

_HASHER = PasswordHasher(time_cost=2, memory_cost=19_456, parallelism=1)
# Verified against when a username is unknown, so both cases cost the same time.
_DUMMY_HASH = _HASHER.hash("not a password")


def now_utc() -> datetime:
    return datetime.now(UTC)


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def create_user(engine: Engine, username: str, password: str, role: str = "rater") -> int:
    """Add an account; the username must be new. Returns its id."""
    username = limits.text(username, "username", limits.USERNAME).strip()  # type: ignore[union-attr]
    if not username.replace("_", "").replace("-", "").replace(".", "").isalnum():
        raise InputError("username: use letters, digits, '.', '-' and '_' only")
    limits.text(password, "password", limits.PASSWORD)
    if len(password) < 8:
        raise InputError("password: at least 8 characters expected")
    if role not in ROLES:
        raise InputError(f"role: expected one of {', '.join(ROLES)}, got {role!r}")
    pw_hash = hash_password(password)
    try:
        with writing(engine) as conn:
            return conn.execute(
                insert(users)
                .values(
                    username=username,
                    password_hash=pw_hash,
                    role=role,
                    active=True,
                    profile_consent=False,
                    created_at=now_utc(),
                )
                .returning(users.c.id)
            ).scalar_one()
    except IntegrityError:
        raise Conflict(f"username {username!r} is taken") from None


def authenticate(engine: Engine, username: str, password: str) -> dict[str, Any] | None:
    """The user's row when the password matches and the account is active, else None."""
    if not isinstance(username, str) or not isinstance(password, str):
        return None
    if len(username) > limits.USERNAME or len(password) > limits.PASSWORD:
        return None
    if not limits.is_storable(username):
        return None
    with reading(engine) as conn:
        row = conn.execute(select(users).where(users.c.username == username)).mappings().first()
    try:
        _HASHER.verify(row["password_hash"] if row else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    if row is None or not row["active"]:
        return None
    return dict(row)


def get_user(engine: Engine, user_id: int) -> dict[str, Any]:
    with reading(engine) as conn:
        row = conn.execute(select(users).where(users.c.id == user_id)).mappings().first()
    if row is None:
        raise NotFound(f"user {user_id}: no such user")
    return dict(row)


def find_user(engine: Engine, username: str) -> dict[str, Any] | None:
    if not isinstance(username, str) or not limits.is_storable(username):
        return None
    with reading(engine) as conn:
        row = conn.execute(select(users).where(users.c.username == username)).mappings().first()
    return dict(row) if row else None


def list_users(engine: Engine, role: str | None = None) -> list[dict[str, Any]]:
    query = select(users).order_by(users.c.id)
    if role:
        query = query.where(users.c.role == role)
    with reading(engine) as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def _token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(engine: Engine, user_id: int, name: str = "api") -> str:
    """A new bearer token for ``user_id``; only its digest is stored, so show it once."""
    limits.text(name, "token name", 100)
    token = "rk_" + secrets.token_urlsafe(32)
    with writing(engine) as conn:
        conn.execute(
            insert(api_tokens).values(
                user_id=user_id,
                token_hash=_token_digest(token),
                name=name,
                created_at=now_utc(),
                revoked=False,
            )
        )
    return token


_USER_FOR_TOKEN = (  # built once: every API request runs it
    select(users)
    .join(api_tokens, api_tokens.c.user_id == users.c.id)
    .where(
        api_tokens.c.token_hash == bindparam("digest"),
        api_tokens.c.revoked.is_(False),
        users.c.active.is_(True),
    )
)


def user_for_token(engine: Engine, token: str) -> dict[str, Any] | None:
    """The active user a bearer token belongs to, or None."""
    if not token or len(token) > 200:
        return None
    with reading(engine) as conn:
        row = conn.execute(_USER_FOR_TOKEN, {"digest": _token_digest(token)}).mappings().first()
    return dict(row) if row else None


def update_profile(engine: Engine, user_id: int, consent: bool, fields: dict[str, Any]) -> None:
    """Store the rater's self-described profile. Without consent nothing is kept."""
    unknown = set(fields) - set(PROFILE_FIELDS)
    if unknown:
        raise InputError(f"profile: unknown field(s) {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {f: None for f in PROFILE_FIELDS}
    if consent:
        for name, value in fields.items():
            cleaned = limits.text(value, f"profile.{name}", limits.PROFILE, required=False)
            values[name] = cleaned.strip() if cleaned else None
    with writing(engine) as conn:
        done = conn.execute(
            update(users)
            .where(users.c.id == user_id)
            .values(profile_consent=bool(consent), **values)
        ).rowcount
    if not done:
        raise NotFound(f"user {user_id}: no such user")


def delete_profile(engine: Engine, user_id: int) -> None:
    """Forget every profile field and withdraw consent."""
    update_profile(engine, user_id, False, {})


def profile_of(user: dict[str, Any]) -> dict[str, str | None]:
    """The profile fields of a user row (all None without consent)."""
    if not user.get("profile_consent"):
        return {f: None for f in PROFILE_FIELDS}
    return {f: user.get(f) for f in PROFILE_FIELDS}


def delete_user_tokens(engine: Engine, user_id: int) -> None:
    with writing(engine) as conn:
        conn.execute(delete(api_tokens).where(api_tokens.c.user_id == user_id))

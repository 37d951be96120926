"""Sessions, CSRF and request size limits.

- Session cookies are signed (itsdangerous) and carry the user id and a CSRF token; they are
  HttpOnly and SameSite=Lax, and expire after ``SESSION_MAX_AGE``.
- Every form carries the session's CSRF token; a POST without the matching token is refused.
- Request bodies above a limit are refused with 413 before they are read into memory.
"""

from __future__ import annotations

import hmac
import json
import secrets
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import IntegrityError

from rlhfkit.store.engine import writing
from rlhfkit.store.schema import site

SESSION_COOKIE = "rk_session"
SESSION_MAX_AGE = 12 * 3600
MAX_BODY = 1 << 20
"""Largest request body in bytes (JSON and forms)."""
MAX_UPLOAD = 32 << 20
"""Largest body for item imports (file uploads and item lists)."""


def site_secret(engine: Engine) -> str:
    """The cookie signing key kept in the database, created once; shared by all workers and
    kept across restarts, so sessions survive both."""
    with writing(engine) as conn:
        value = conn.execute(select(site.c.value).where(site.c.key == "secret_key")).scalar()
        if value is None:
            value = secrets.token_urlsafe(48)
            try:
                conn.execute(insert(site).values(key="secret_key", value=value))
            except IntegrityError:  # another worker created it first
                conn.rollback()
                return site_secret(engine)
    return value


class Sessions:
    """Sign and read session cookies."""

    def __init__(self, secret: str):
        self._serializer = URLSafeTimedSerializer(secret, salt="rlhfkit-session")

    def dump(self, data: dict[str, Any]) -> str:
        return self._serializer.dumps(data)

    def load(self, cookie: str | None) -> dict[str, Any]:
        if not cookie or len(cookie) > 4096:
            return {}
        try:
            data = self._serializer.loads(cookie, max_age=SESSION_MAX_AGE)
        except BadSignature:
            return {}
        return data if isinstance(data, dict) else {}


def new_csrf() -> str:
    return secrets.token_urlsafe(24)


def csrf_matches(expected: str | None, given: str | None) -> bool:
    return bool(expected and given) and hmac.compare_digest(str(expected), str(given))


class BodyLimit:
    """ASGI middleware: 413 for bodies over the limit (by Content-Length, or while streaming)."""

    def __init__(self, app, max_body: int = MAX_BODY, max_upload: int = MAX_UPLOAD):
        self.app = app
        self.max_body = max_body
        self.max_upload = max_upload

    def _limit(self, path: str) -> int:
        upload = path.endswith("/items") or path.endswith("/import")
        return self.max_upload if upload else self.max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self._limit(scope["path"])
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > limit
                except ValueError:
                    too_big = True
                if too_big:
                    return await _too_large(send, limit, scope["path"])
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _BodyTooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _BodyTooLarge:
            await _too_large(send, limit, scope["path"])


class _BodyTooLarge(Exception):
    pass


async def _too_large(send, limit: int, path: str = "") -> None:
    message = f"request body too large: at most {limit} bytes"
    if path.startswith("/v1/"):  # OpenAI clients read errors in OpenAI's shape
        error = {"message": message, "type": "invalid_request_error", "param": None, "code": None}
        body = json.dumps({"error": error}).encode()
    else:
        body = json.dumps({"detail": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})

"""Dependencies shared by the routers: the engine, the current user (bearer token for the API,
signed cookie for pages), role checks, CSRF and templates."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from functools import partial
from typing import Annotated, Any, TypeVar

import anyio
import anyio.to_thread
from fastapi import Depends, HTTPException, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine

from rlhfkit.store import users as store_users
from rlhfkit.store.engine import WouldWait, is_sqlite, waiting_at_most
from rlhfkit.store.projects import is_member
from rlhfkit.web.security import SESSION_COOKIE, csrf_matches

Id = Annotated[int, Path(ge=1, le=2_147_483_647)]
"""A row id in a path; bounded so that absurd numbers are a 422, not a database error."""

_bearer = HTTPBearer(auto_error=False, description="A token from POST /api/v1/auth/token")


async def get_engine(request: Request) -> Engine:
    # async: no I/O, so it need not take a trip through the thread pool on every request
    return request.app.state.engine


EngineDep = Annotated[Engine, Depends(get_engine)]

T = TypeVar("T")


def store_threads(engine: Engine, configured: int = 0) -> int:
    """Calls at once in the store lane (``RLHFKIT_DB_THREADS``; 0: 1 on SQLite, 8 on
    PostgreSQL)."""
    return configured or (1 if is_sqlite(engine) else 8)


INLINE_WAIT_S = 0.02
"""Longest the event loop waits for SQLite's write lock before handing a call to the lane."""


async def run_store(request: Request, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Run the store work of the API's hot path (the token check of every request, next task,
    submit).

    **SQLite: on the event loop.** A call runs right here, in the loop's thread. Reads (the
    token check) never wait for anyone. A write waits for the database's write lock at most
    ``INLINE_WAIT_S`` (20 ms; the lock is held about a millisecond per judgment, by one writer
    at a time across all workers); if it stays taken (a large import, say), the call gives up
    before writing anything and goes to the store lane below. Once a call has waited in the
    lane longer than that too (a long writer, not the usual turn-taking), writes go to the lane
    without waiting on the loop until the lane's waiting calls are through, so a long writer
    costs the loop one 20 ms wait, not one per request. (Sending writes to the lane whenever it
    was busy at all fed on itself under full load: the lock is taken most of the time then, so
    each fallback caused more.) Measured with two workers and 200 raters
    (docs/platform.md, seventh session): about 1.2 instead of 1.4-1.9 ms of server CPU per
    judgment, and p99 latency 37-63 ms instead of 85-88 ms in the same minutes. The trip to the
    lane's thread cost more than the store work itself: handing the job over, waking the
    thread, and then the two threads taking turns at the interpreter lock while the write lock
    waited for the one holding it.

    **The store lane** (PostgreSQL always; on SQLite the calls that would wait, and every call
    where the write lock cannot be tried, see ``rlhfkit.store.engine.can_bound_the_wait``): a
    limiter of the app's own over worker threads, ``store_threads`` calls at once (1 on
    SQLite, 8 on PostgreSQL), instead of the shared limit of 40, which only made forty threads
    fight over the interpreter lock."""
    state = request.app.state
    loop = asyncio.get_running_loop()
    lane = getattr(state, "store_lane", None)
    if lane is None or lane[0] is not loop:  # one per event loop (tests run several)
        lane = (loop, anyio.CapacityLimiter(state.store_threads), {})
        state.store_lane = lane
    _, limiter, fallbacks = lane  # fallbacks: calls sent to the lane by a wait -> since when
    if not state.store_inline:
        return await anyio.to_thread.run_sync(partial(fn, *args, **kwargs), limiter=limiter)
    now = time.monotonic()
    long_writer = any(now - since > INLINE_WAIT_S for since in fallbacks.values())
    try:
        with waiting_at_most(0.0 if long_writer else INLINE_WAIT_S):
            return fn(*args, **kwargs)
    except WouldWait:
        pass  # nothing was written: run the same call where waiting is harmless
    key = object()
    fallbacks[key] = time.monotonic()  # from entering the lane, after the wait just spent
    try:
        return await anyio.to_thread.run_sync(partial(fn, *args, **kwargs), limiter=limiter)
    finally:
        del fallbacks[key]


async def api_user(
    request: Request,
    engine: EngineDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> dict[str, Any]:
    if credentials is None:
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    user = await run_store(request, store_users.user_for_token, engine, credentials.credentials)
    if user is None:
        raise HTTPException(401, "invalid or revoked token", headers={"WWW-Authenticate": "Bearer"})
    return user


def api_admin(user: Annotated[dict, Depends(api_user)]) -> dict[str, Any]:
    if user["role"] != "admin":
        raise HTTPException(403, "admins only")
    return user


CurrentUser = Annotated[dict[str, Any], Depends(api_user)]
CurrentAdmin = Annotated[dict[str, Any], Depends(api_admin)]


def require_project_access(engine: Engine, user: dict[str, Any], project_id: int) -> None:
    """Admins see every project; raters only those they were invited to."""
    if user["role"] != "admin" and not is_member(engine, project_id, user["id"]):
        raise HTTPException(403, f"project {project_id}: you are not a rater on this project")


class LoginRequired(Exception):
    """Raised by page dependencies; answered with a redirect to the login page."""


class PageForbidden(Exception):
    """A signed-in user asked for a page of another role."""


def session_of(request: Request) -> dict[str, Any]:
    return request.app.state.sessions.load(request.cookies.get(SESSION_COOKIE))


def page_user(request: Request, engine: EngineDep) -> dict[str, Any]:
    data = session_of(request)
    uid = data.get("uid")
    if not isinstance(uid, int):
        raise LoginRequired
    try:
        user = store_users.get_user(engine, uid)
    except store_users.NotFound:
        raise LoginRequired from None
    if not user["active"]:
        raise LoginRequired
    user["csrf"] = data.get("csrf", "")
    return user


def page_admin(user: Annotated[dict, Depends(page_user)]) -> dict[str, Any]:
    if user["role"] != "admin":
        raise PageForbidden
    return user


def page_rater(user: Annotated[dict, Depends(page_user)]) -> dict[str, Any]:
    if user["role"] != "rater":
        raise PageForbidden
    return user


PageUser = Annotated[dict[str, Any], Depends(page_user)]
PageAdmin = Annotated[dict[str, Any], Depends(page_admin)]
PageRater = Annotated[dict[str, Any], Depends(page_rater)]


def check_csrf(user: dict[str, Any], token: str | None) -> None:
    if not csrf_matches(user.get("csrf"), token):
        raise HTTPException(403, "the form's security token is missing or stale; reload the page")


def render(
    request: Request,
    template: str,
    user: dict[str, Any] | None = None,
    status_code: int = 200,
    **context: Any,
):
    """Render a template (autoescaped) with the user and CSRF token available."""
    templates = request.app.state.templates
    context = {"user": user, "csrf": (user or {}).get("csrf", ""), **context}
    return templates.TemplateResponse(request, template, context, status_code=status_code)

"""Sign in and out with a signed session cookie."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse

from rlhfkit.store import users as store_users
from rlhfkit.web.deps import EngineDep, render, session_of
from rlhfkit.web.security import SESSION_COOKIE, SESSION_MAX_AGE, csrf_matches, new_csrf

router = APIRouter()


def _set_session(request: Request, response, data: dict) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        request.app.state.sessions.dump(data),
        max_age=SESSION_MAX_AGE,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )


@router.get("/")
def home(request: Request, engine: EngineDep):
    uid = session_of(request).get("uid")
    if not isinstance(uid, int):
        return RedirectResponse("/login", status_code=303)
    try:
        role = store_users.get_user(engine, uid)["role"]
    except store_users.NotFound:
        return RedirectResponse("/login", status_code=303)
    return RedirectResponse("/admin" if role == "admin" else "/rate", status_code=303)


@router.get("/login")
def login_page(request: Request, error: str | None = None):
    # A sign-in form needs a CSRF token too (login CSRF), kept in a pre-session cookie.
    data = session_of(request)
    if not data.get("csrf"):
        data = {"csrf": new_csrf()}
    response = render(request, "login.html", None, error=error, csrf=data["csrf"])
    _set_session(request, response, data)
    return response


@router.post("/login")
def login(
    request: Request,
    engine: EngineDep,
    username: Annotated[str, Form(max_length=64)] = "",
    password: Annotated[str, Form(max_length=256)] = "",
    csrf_token: Annotated[str, Form(max_length=100)] = "",
):
    if not csrf_matches(session_of(request).get("csrf"), csrf_token):
        return RedirectResponse("/login?error=expired", status_code=303)
    user = store_users.authenticate(engine, username, password)
    if user is None:
        return RedirectResponse("/login?error=wrong", status_code=303)
    response = RedirectResponse("/admin" if user["role"] == "admin" else "/rate", status_code=303)
    # A fresh CSRF token per session, so a token seen before sign-in is worthless after it.
    _set_session(request, response, {"uid": user["id"], "csrf": new_csrf()})
    return response


@router.post("/logout")
def logout(request: Request, csrf_token: Annotated[str, Form(max_length=100)] = ""):
    response = RedirectResponse("/login", status_code=303)
    if csrf_matches(session_of(request).get("csrf"), csrf_token):
        response.delete_cookie(SESSION_COOKIE)
    return response

"""The FastAPI application: rater pages, admin pages, the chat page, the JSON API and the
OpenAI-compatible ``/v1`` endpoints.

Example::

    app = create_app()                    # database from RLHFKIT_DATABASE_URL
    # uvicorn.run(app)  or  `rlhfkit serve`
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

import jinja2
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from rlhfkit.errors import InputError
from rlhfkit.settings import Settings, get_settings
from rlhfkit.store import Conflict, Forbidden, NotFound, make_engine
from rlhfkit.store.engine import can_bound_the_wait
from rlhfkit.web import deps, security
from rlhfkit.web.api import admin as api_admin
from rlhfkit.web.api import auth as api_auth
from rlhfkit.web.api import openai as api_openai
from rlhfkit.web.api import projects as api_projects
from rlhfkit.web.api import tasks as api_tasks
from rlhfkit.web.connections import KeepAliveCap
from rlhfkit.web.deps import LoginRequired, PageForbidden, session_of
from rlhfkit.web.pages import admin as pages_admin
from rlhfkit.web.pages import auth as pages_auth
from rlhfkit.web.pages import chat as pages_chat
from rlhfkit.web.pages import rater as pages_rater
from rlhfkit.web.serving import ModelRegistry

HERE = Path(__file__).parent
_STATUS = [(NotFound, 404), (Forbidden, 403), (Conflict, 409), (InputError, 422)]


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app on ``settings.database_url`` (which must already be migrated:
    ``rlhfkit serve`` and ``rlhfkit db upgrade`` do that)."""
    settings = settings or get_settings()
    engine = make_engine(settings.database_url)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        engine.dispose()

    app = FastAPI(
        lifespan=lifespan,
        title="rlhfkit rater platform",
        version="1",
        description="Queue, judgments, pay ledger and exports of the rlhfkit rater platform.",
        docs_url="/api/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.engine = engine
    app.state.store_threads = deps.store_threads(engine, settings.db_threads)
    app.state.store_inline = can_bound_the_wait(engine)  # see deps.run_store
    app.state.models = ModelRegistry.from_setting(settings.runs_dir, settings.chat_models)
    app.state.sessions = security.Sessions(settings.secret_key or security.site_secret(engine))
    # Autoescape every template whatever its name: model and user text is untrusted.
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True, trim_blocks=True
    )
    app.state.templates = Jinja2Templates(env=env)
    app.add_middleware(security.BodyLimit)
    app.add_middleware(KeepAliveCap, max_age_s=settings.keepalive_max_s)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    for module in (api_auth, api_tasks, api_projects, api_admin, api_openai):
        app.include_router(module.router)
    for module in (pages_auth, pages_rater, pages_admin, pages_chat):
        app.include_router(module.router, include_in_schema=False)
    _add_error_handlers(app)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def _wants_html(request: Request) -> bool:
    path = request.url.path
    return not path.startswith(("/api/", "/v1/", "/chat/api/")) and path != "/openapi.json"


_OPENAI_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error"}


def _openai_error(status: int, message: str, param=None, code=None, headers=None):
    """OpenAI's error shape; OpenAI answers every invalid request with 400, never 422."""
    status = 400 if status == 422 else status
    kind = _OPENAI_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    if status == 404 and code is None:
        code = "model_not_found" if message.startswith("model ") else "not_found"
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def _error(request: Request, status: int, detail: str, headers=None):
    if request.url.path.startswith("/v1/"):
        return _openai_error(status, detail, headers=headers)
    if _wants_html(request):
        templates = request.app.state.templates
        data = session_of(request)
        return templates.TemplateResponse(
            request,
            "error.html",
            {"user": None, "csrf": data.get("csrf", ""), "status": status, "detail": detail},
            status_code=status,
            headers=headers,
        )
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(InputError)
    async def store_error(request: Request, exc: InputError):
        status = next(code for cls, code in _STATUS if isinstance(exc, cls))
        return _error(request, status, str(exc))

    @app.exception_handler(api_openai.OpenAIError)
    async def openai_error(request: Request, exc: api_openai.OpenAIError):
        return _openai_error(exc.status, exc.message, exc.param, exc.code)

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, exc: LoginRequired):
        return RedirectResponse("/login", status_code=303)

    @app.exception_handler(PageForbidden)
    async def page_forbidden(request: Request, exc: PageForbidden):
        return _error(request, 403, "This page is not for your role.")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return _error(request, exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        if request.url.path.startswith("/v1/"):
            first = exc.errors()[0] if exc.errors() else {}
            loc = [str(x) for x in first.get("loc", ()) if x != "body"]
            where = ".".join(loc)
            message = f"{where}: {first.get('msg', 'invalid input')}" if where else "invalid body"
            return _openai_error(400, message, where or None)
        if _wants_html(request):
            first = exc.errors()[0] if exc.errors() else {}
            where = ".".join(str(x) for x in first.get("loc", ()))
            return _error(request, 422, f"{where}: {first.get('msg', 'invalid input')}")
        errors = [{k: e.get(k) for k in ("loc", "msg", "type")} for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

"""Run the platform: migrate the database, then serve the app under uvicorn.

Example::

    serve(host="127.0.0.1", port=8000, workers=1)   # what `rlhfkit serve` runs
"""

from __future__ import annotations

from rlhfkit.errors import InputError


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    database_url: str | None = None,
    log_level: str = "info",
    models: str | None = None,
) -> None:
    """Apply migrations once, then start ``workers`` uvicorn processes on ``host:port``.

    SQLite takes one writer at a time, so one worker is the right default there; PostgreSQL
    gains from several. ``models``: the comma-separated models the chat page and ``/v1`` serve
    (default: the ``chat_models`` setting; empty there too: default, tiny and every run).
    """
    import os

    import uvicorn

    from rlhfkit.settings import get_settings
    from rlhfkit.store import make_engine, upgrade

    if not 1 <= workers <= 64:
        raise InputError(f"--workers: expected 1 to 64, got {workers}")
    if not 0 < port < 65536:
        raise InputError(f"--port: expected 1 to 65535, got {port}")
    url = database_url or get_settings().database_url
    # Workers are fresh processes that read the environment: hand them the same database.
    os.environ["RLHFKIT_DATABASE_URL"] = url
    if models is not None:
        os.environ["RLHFKIT_CHAT_MODELS"] = models
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    uvicorn.run(
        "rlhfkit.web.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        access_log=False,
    )

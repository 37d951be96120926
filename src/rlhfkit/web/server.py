"""Run the platform: migrate the database, then serve the app under uvicorn.

Example::

    serve(host="127.0.0.1", port=8000, workers=1)   # what `rlhfkit serve` runs
"""

from __future__ import annotations

import logging
import socket
import sys

from rlhfkit.errors import InputError


def reuseport_socket(host: str, port: int, reuse_port: bool = True) -> socket.socket:
    """A TCP socket bound to ``host:port`` with ``SO_REUSEPORT``: several of them, one per
    worker process, share the port, and the kernel spreads new connections over them.
    ``reuse_port=False`` binds without it, which fails while anything else holds the port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise InputError(f"--host/--port: cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


def _worker_socket(host: str, port: int) -> socket.socket:
    """What a :class:`PerWorkerSocket` unpickles as, in the worker. A worker that cannot bind
    exits as uvicorn's start-up failures do, so that the supervisor stops rather than
    restarting it for ever."""
    try:
        return reuseport_socket(host, port)
    except InputError as exc:
        from uvicorn.config import STARTUP_FAILURE

        print(f"rlhfkit serve: {exc}", file=sys.stderr)
        sys.exit(STARTUP_FAILURE)


def event_loop(engine) -> str:
    """uvicorn's event loop for a server on ``engine``: asyncio's own where the hot path runs on
    the loop (SQLite with its lock file), uvloop (when installed) otherwise.

    On SQLite the API's hot path does its store work on the event loop itself
    (``rlhfkit.web.deps.run_store``), so under full load the loop never pauses. uvloop then left
    new connections unserved for seconds: with 200 raters and no think time, requests on a
    fresh connection (after a keep-alive limit ended the old one) waited 7 s at the median,
    p99 over all requests 2.4-4.5 s. asyncio's loop takes them in turn (p99 296 ms), and with
    think time the two loops measured within a few percent of each other (docs/platform.md)."""
    from rlhfkit.store.engine import can_bound_the_wait

    # the same test create_app uses to run the hot path on the loop (app.state.store_inline)
    return "asyncio" if can_bound_the_wait(engine) else "auto"


class PerWorkerSocket:
    """Stands in for the listening socket handed to each of uvicorn's worker processes: it is
    pickled on the way, and unpickles in the worker as a socket of the worker's own bound with
    ``SO_REUSEPORT`` (a worker that uvicorn restarts gets a fresh one the same way).

    Why: with one socket shared by every worker, the worker that wakes first accepts the whole
    backlog. With a socket each, the kernel hashes every new connection to one of them, evenly
    whatever the timing. (A burst that arrives while only one worker listens, as after a
    restart, still lands on that one: ``rlhfkit.web.connections`` spreads it again.)"""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port

    def __reduce__(self):
        return _worker_socket, (self.host, self.port)


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    database_url: str | None = None,
    log_level: str = "info",
    models: str | None = None,
) -> None:
    """Apply migrations once, then start ``workers`` uvicorn processes on ``host:port``.

    PostgreSQL gains from a worker per core. On SQLite one worker serves about as much as two
    (its hot path runs on the event loop and the writers of all workers take turns at one
    write lock; measured 840-873 against 861-888 judgments/s on two cores, docs/platform.md),
    but two keep serving while one restarts. ``models``: the comma-separated models the chat page and
    ``/v1`` serve (default: the ``chat_models`` setting; empty there too: default, tiny and
    every run).
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
    options = dict(factory=True, host=host, port=port, log_level=log_level, access_log=False)
    options["loop"] = event_loop(engine)
    if workers == 1 or not sys.platform.startswith("linux"):  # Linux spreads SO_REUSEPORT
        uvicorn.run("rlhfkit.web.app:create_app", workers=workers, **options)
        return
    # Several workers: uvicorn's supervisor (it restarts a worker that dies), but each worker
    # listens on a socket of its own (PerWorkerSocket). A port in use is a clear error here
    # rather than in every worker: binding without SO_REUSEPORT fails while anything holds the
    # port, another server with SO_REUSEPORT (a second `serve --workers`) included. The parent
    # then keeps a socket bound, not listening (it receives no connections), until it exits.
    from uvicorn.supervisors import Multiprocess

    config = uvicorn.Config("rlhfkit.web.app:create_app", workers=workers, **options)
    reuseport_socket(host, port, reuse_port=False).close()
    with reuseport_socket(host, port):
        # uvicorn says where it listens when it binds the shared socket itself; say it here
        shown = f"[{host}]" if ":" in host else host
        logging.getLogger("uvicorn.error").info(
            "Uvicorn running on http://%s:%d, %d workers each on a socket of its own"
            " (Press CTRL+C to quit)",
            shown,
            port,
            workers,
        )
        Multiprocess(config, sockets=[PerWorkerSocket(host, port)]).run()

"""Engines and transactions: SQLite (WAL, busy timeout) by default, PostgreSQL by URL.

Every write that one click causes runs in one transaction opened by :func:`writing`. On SQLite
that transaction starts with ``BEGIN IMMEDIATE`` (the write lock is taken up front, so two
writers never both read and then both try to upgrade) and writers of one process queue on a
lock instead of spinning in SQLite's busy handler; writers of several processes (``serve
--workers N``) queue on an advisory lock of a file beside the database, for the same reason:
SQLite's busy handler sleeps and retries, so under load a waiting writer sleeps long after the
lock is free. On PostgreSQL queue queries use
``FOR UPDATE SKIP LOCKED``.

Example::

    engine = make_engine("sqlite:///rlhfkit.db")
    with writing(engine) as conn:
        conn.execute(...)
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from rlhfkit.errors import InputError

try:
    import fcntl
except ImportError:  # Windows: no flock, so processes fall back to SQLite's busy handler
    fcntl = None


def _close_fd(holder: dict) -> None:
    if holder.get("fd") is not None:
        os.close(holder.pop("fd"))


class _WriteLock:
    """The write lock of one SQLite engine.

    Threads of this process queue on a thread lock. Other processes on the same file queue on
    ``flock`` of ``<database>-writelock``: a waiter blocks in the kernel and wakes as soon as
    the lock is free (SQLite's busy handler sleeps ever longer, up to 100 ms), and the kernel
    drops the lock of a process that dies (kill -9 included). :meth:`acquire` has no time
    limit: a writer waits as long as another process holds the lock, which it does only inside
    a write transaction; a stopped (SIGSTOP) holder stalls writers, where SQLite alone would
    fail them after its 30 s busy timeout. (Polling with a deadline instead, in a worker
    thread, cost a quarter of the throughput with two workers, each poll fighting for the
    interpreter lock.) :meth:`try_acquire` does poll, with a short deadline: it is for the
    web app's event loop, which must not wait long (:func:`waiting_at_most`). Without
    ``fcntl`` (Windows), for in-memory or URI databases, or when the file cannot be opened,
    processes fall back to SQLite's own busy handler: correct, slower under contention.
    """

    def __init__(self, database: str | None):
        self._thread = threading.Lock()
        self._path: str | None = None
        self._fd: dict = {}  # {"fd": n, "pid": owner}; a dict so the finalizer sees reopens
        self._one_process = not database or database == ":memory:"
        if fcntl is None or not database or database == ":memory:" or database.startswith("file:"):
            return
        # realpath: a database reached through a symbolic link locks the same file
        self._path = os.path.realpath(f"{database}-writelock")
        weakref.finalize(self, _close_fd, self._fd)

    def _descriptor(self) -> int | None:
        """This process's descriptor of the lock file (a forked child opens its own: an
        inherited one shares the parent's lock)."""
        if self._fd.get("pid") != os.getpid():
            if self._fd.get("fd") is not None:
                os.close(self._fd.pop("fd"))
            try:
                self._fd["fd"] = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError:
                self._path = None  # cannot lock across processes: SQLite's busy handler
                return None
            self._fd["pid"] = os.getpid()
        return self._fd["fd"]

    def _flock(self) -> None:
        fd = self._descriptor() if self._path else None
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)

    @property
    def can_try(self) -> bool:
        """Whether :meth:`try_acquire` sees every other writer: with the lock file, or for an
        in-memory database (one process). Otherwise another process's writer is only seen by
        SQLite's busy handler, which waits up to 30 s."""
        return self._path is not None or self._one_process

    def acquire(self) -> None:
        self._thread.acquire()
        try:
            self._flock()
        except BaseException:
            self._thread.release()
            raise

    def try_acquire(self, wait_s: float) -> bool:
        """Take the lock if it is free within ``wait_s`` seconds; if not, False, holding
        nothing. The file lock is polled every ``_POLL_S`` (a blocking ``flock`` cannot be given
        a deadline)."""
        deadline = time.monotonic() + wait_s
        if not self._thread.acquire(timeout=max(wait_s, 0.0)):
            return False
        try:
            fd = self._descriptor() if self._path else None
            while fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        self._thread.release()
                        return False
                    time.sleep(_POLL_S)
        except BaseException:
            self._thread.release()
            raise
        return True

    def release(self) -> None:
        try:
            if self._path and self._fd.get("pid") == os.getpid():
                fcntl.flock(self._fd["fd"], fcntl.LOCK_UN)
        finally:
            self._thread.release()


_POLL_S = 0.0001
"""How often :meth:`_WriteLock.try_acquire` looks at the file lock. The holder's turn is about
a millisecond and it takes the lock again within a fraction of one, so a waiter that looks
less often loses turns: polling up to every 1 ms gave 995-1,008 judgments/s at full load with
two workers, every 0.1 ms 1,055-1,070/s (docs/platform.md)."""

# One lock per SQLite engine (see _WriteLock), gone with the engine.
_WRITE_LOCKS: weakref.WeakKeyDictionary[Engine, _WriteLock] = weakref.WeakKeyDictionary()


def is_sqlite(engine: Engine | Connection) -> bool:
    return engine.dialect.name == "sqlite"


def make_engine(url: str | None = None, *, pool_size: int = 20) -> Engine:
    """An engine for ``url`` (default: ``get_settings().database_url``).

    SQLite gets WAL journaling (readers never block the writer), a 30 s busy timeout for other
    processes and foreign keys. Its ``synchronous`` level defaults to NORMAL: in WAL mode a
    committed write then survives any crash or kill of the process (the load benchmark kills
    the server with SIGKILL and checks); add ``?synchronous=full`` to the URL to also survive
    an operating-system crash or power cut, at about twice the cost per write.
    ``postgresql://`` URLs use psycopg 3.
    """
    if url is None:
        from rlhfkit.settings import get_settings

        url = get_settings().database_url
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise InputError(f"database URL {url!r}: expected e.g. sqlite:///path.db") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    try:
        if parsed.drivername in ("sqlite", "sqlite+pysqlite"):
            synchronous = parsed.query.get("synchronous", "normal")
            if str(synchronous).upper() not in ("NORMAL", "FULL", "EXTRA"):
                raise InputError(f"database URL {url!r}: synchronous= normal, full or extra")
            parsed = parsed.difference_update_query(["synchronous"])
            engine = create_engine(
                parsed,
                connect_args={"check_same_thread": False, "timeout": 30},
                pool_size=pool_size,
            )
            _configure_sqlite(engine, str(synchronous).upper())
            _WRITE_LOCKS[engine] = _WriteLock(parsed.database)
            return engine
        if parsed.drivername == "postgresql+psycopg":
            return create_engine(parsed, pool_size=pool_size, max_overflow=20, pool_pre_ping=True)
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise InputError(f"database URL {url!r}: {exc}") from None
    raise InputError(f"database URL {url!r}: expected a sqlite:/// or postgresql:// URL")


def _configure_sqlite(engine: Engine, synchronous: str) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        # Let SQLAlchemy's "begin" event below decide how each transaction starts.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        immediate = conn.get_execution_options().get("rlhfkit_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class WouldWait(Exception):
    """Raised by :func:`writing` inside :func:`waiting_at_most` when the write lock stayed taken
    for the whole allowance. Nothing was written: the caller may make the same call again where
    waiting is harmless (a worker thread)."""


class _Allowance:
    """How long the first transaction of a call may wait, and whether it has been taken."""

    __slots__ = ("seconds", "spent")

    def __init__(self, seconds: float):
        self.seconds, self.spent = seconds, False


_ALLOWANCE: ContextVar[_Allowance | None] = ContextVar("rlhfkit_wait_allowance", default=None)


def can_bound_the_wait(engine: Engine) -> bool:
    """Whether :func:`waiting_at_most` bounds the wait on ``engine``: a SQLite engine whose write
    lock sees every other writer (:attr:`_WriteLock.can_try`). PostgreSQL's row locks are taken
    inside the statements and cannot be tried first."""
    lock = _WRITE_LOCKS.get(engine)
    return lock is not None and lock.can_try


@contextmanager
def waiting_at_most(seconds: float) -> Iterator[None]:
    """Inside this block the first :func:`writing` on a SQLite engine waits at most ``seconds``
    for the write lock, then raises :class:`WouldWait` having done nothing. Only the first: a
    call that has written and then gave up would be half done, so later transactions of the
    call wait as usual (the web app's hot calls have one transaction, see
    ``rlhfkit.web.deps.run_store``). A block inside another one shares the outer allowance.

    SQLite's own busy handler is not bounded by this: a writer that does not take the lock
    file (a migration run by hand, another program on the database) still makes ``BEGIN
    IMMEDIATE`` wait up to its 30 s busy timeout."""
    if _ALLOWANCE.get() is not None:
        yield
        return
    token = _ALLOWANCE.set(_Allowance(seconds))
    try:
        yield
    finally:
        _ALLOWANCE.reset(token)


@contextmanager
def writing(engine: Engine) -> Iterator[Connection]:
    """One write transaction: committed when the block ends, rolled back on any error."""
    lock = _WRITE_LOCKS.get(engine)
    allowance = _ALLOWANCE.get()
    if lock is not None and allowance is not None and not allowance.spent:
        if not lock.can_try or not lock.try_acquire(allowance.seconds):
            raise WouldWait  # (without the lock file a wait could not be bounded)
        allowance.spent = True
    elif lock is not None:
        lock.acquire()
    try:
        with engine.connect() as conn:
            conn = conn.execution_options(rlhfkit_write=True)
            with conn.begin():
                yield conn
    finally:
        if lock is not None:
            lock.release()


@contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """A read-only transaction (a consistent snapshot on both backends)."""
    with engine.connect() as conn, conn.begin():
        yield conn

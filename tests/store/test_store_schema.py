import os
import sys
import threading

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from rlhfkit.errors import InputError
from rlhfkit.store import make_engine, upgrade
from rlhfkit.store.engine import writing
from rlhfkit.store.schema import metadata


def test_migration_creates_the_schema_the_code_expects(engine):
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []
    assert set(metadata.tables) <= set(inspect(engine).get_table_names())


def test_upgrade_twice_is_harmless(engine):
    assert upgrade(engine) == "0002"


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path):
    eng = make_engine(f"sqlite:///{tmp_path}/x.db")
    with eng.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    full = make_engine(f"sqlite:///{tmp_path}/x.db?synchronous=full")
    with full.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2


@pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX")
def test_sqlite_writers_of_other_processes_queue_on_a_file_lock(tmp_path):
    """A writer holds an flock beside the database for its whole transaction, so writers of
    other processes wait in the kernel instead of sleeping in SQLite's busy handler."""
    import fcntl

    eng = make_engine(f"sqlite:///{tmp_path}/x.db")
    upgrade(eng)
    other = os.open(tmp_path / "x.db-writelock", os.O_RDWR | os.O_CREAT)  # as another process
    try:
        with writing(eng) as conn:
            conn.exec_driver_sql("SELECT 1")
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free once committed
        entered = threading.Event()

        def write():
            with writing(eng):
                entered.set()

        waiter = threading.Thread(target=write)
        waiter.start()
        assert not entered.wait(0.3)  # held by "the other process"
        fcntl.flock(other, fcntl.LOCK_UN)
        assert entered.wait(5)
        waiter.join()
    finally:
        os.close(other)
    with pytest.raises(ValueError), writing(eng):  # released after an error too
        raise ValueError
    again = os.open(tmp_path / "x.db-writelock", os.O_RDWR)
    try:
        fcntl.flock(again, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(again)


@pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX")
def test_a_bounded_wait_gives_up_before_writing_anything(tmp_path):
    """Inside waiting_at_most, the first transaction waits at most the allowance for a writer
    of another process (or thread), then raises WouldWait having written nothing; once it has
    the lock, later transactions of the same call wait as usual."""
    import fcntl
    import time

    from rlhfkit.store.engine import WouldWait, can_bound_the_wait, waiting_at_most

    eng = make_engine(f"sqlite:///{tmp_path}/x.db")
    upgrade(eng)
    assert can_bound_the_wait(eng) and can_bound_the_wait(make_engine("sqlite://"))
    other = os.open(tmp_path / "x.db-writelock", os.O_RDWR | os.O_CREAT)  # as another process
    try:
        fcntl.flock(other, fcntl.LOCK_EX)
        started = time.monotonic()
        with pytest.raises(WouldWait), waiting_at_most(0.05), writing(eng) as conn:
            conn.exec_driver_sql("CREATE TABLE never (x INTEGER)")
        assert 0.05 <= time.monotonic() - started < 2
        assert "never" not in inspect(eng).get_table_names()

        # released during the allowance: it goes ahead
        threading.Timer(0.05, fcntl.flock, (other, fcntl.LOCK_UN)).start()
        with waiting_at_most(5), writing(eng) as conn:
            conn.exec_driver_sql("CREATE TABLE first (x INTEGER)")
            # a writer in another thread of this process is held off (and gives up) as well
            outcome = []
            worker = threading.Thread(target=lambda: outcome.append(_try_write(eng)))
            worker.start()
            worker.join()
            assert isinstance(outcome[0], WouldWait)
        assert "first" in inspect(eng).get_table_names()

        # after one transaction the allowance is spent: the next one waits for the lock
        entered = threading.Event()

        def call():
            with waiting_at_most(0.01):
                with writing(eng):
                    pass
                fcntl.flock(other, fcntl.LOCK_EX)  # "the other process" takes it back
                entered.set()
                with writing(eng):
                    entered.clear()

        fcntl.flock(other, fcntl.LOCK_UN)
        caller = threading.Thread(target=call)
        caller.start()
        assert entered.wait(5)
        time.sleep(0.1)
        assert entered.is_set()  # still waiting, well past the allowance, no WouldWait
        fcntl.flock(other, fcntl.LOCK_UN)
        caller.join(5)
        assert not caller.is_alive() and not entered.is_set()
    finally:
        os.close(other)


def test_a_nested_bounded_wait_shares_the_outer_allowance(tmp_path):
    """Once a call has written, no later transaction of it may give up, even one inside a
    nested waiting_at_most block."""
    import fcntl

    from rlhfkit.store.engine import waiting_at_most

    eng = make_engine(f"sqlite:///{tmp_path}/x.db")
    upgrade(eng)
    with waiting_at_most(0.01):
        with waiting_at_most(0.01), writing(eng) as conn:
            conn.exec_driver_sql("CREATE TABLE one (x INTEGER)")
        other = os.open(tmp_path / "x.db-writelock", os.O_RDWR)
        try:
            fcntl.flock(other, fcntl.LOCK_EX)
            threading.Timer(0.1, fcntl.flock, (other, fcntl.LOCK_UN)).start()
            with writing(eng) as conn:  # waits for the lock rather than raising WouldWait
                conn.exec_driver_sql("CREATE TABLE two (x INTEGER)")
        finally:
            os.close(other)
    assert {"one", "two"} <= set(inspect(eng).get_table_names())


def _try_write(eng):
    from rlhfkit.store.engine import WouldWait, waiting_at_most

    try:
        with waiting_at_most(0.01), writing(eng):
            return "wrote while another thread held the lock"
    except WouldWait as exc:
        return exc


def test_in_memory_sqlite_needs_no_lock_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    eng = make_engine("sqlite://")
    with writing(eng) as conn:
        conn.exec_driver_sql("SELECT 1")
    assert list(tmp_path.iterdir()) == []


def test_default_url_comes_from_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("RLHFKIT_DATABASE_URL", f"sqlite:///{tmp_path}/from-env.db")
    eng = make_engine()
    upgrade(eng)
    assert (tmp_path / "from-env.db").exists()


@pytest.mark.parametrize(
    "url", ["", "nonsense", "mysql://u@h/db", "sqlite+foo://x", "sqlite:///x.db?synchronous=off"]
)
def test_garbage_database_url_is_a_clear_error(url):
    with pytest.raises(InputError, match="database URL"):
        make_engine(url)

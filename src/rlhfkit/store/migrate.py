"""Alembic migrations shipped inside the package, applied programmatically.

Example::

    upgrade("sqlite:///rlhfkit.db")   # what `rlhfkit db upgrade` and `rlhfkit serve` run
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

from rlhfkit.store.engine import make_engine

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(url_or_engine: str | Engine | None = None, revision: str = "head") -> str:
    """Bring the database to ``revision``; returns the revision it is at afterwards."""
    engine = url_or_engine if isinstance(url_or_engine, Engine) else make_engine(url_or_engine)
    command.upgrade(alembic_config(engine), revision)
    return current_revision(engine)


def current_revision(engine: Engine) -> str:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision() or ""


def open_store(url: str | None = None) -> Engine:
    """An engine on ``url`` (default: the settings' database) with migrations applied."""
    engine = make_engine(url)
    upgrade(engine)
    return engine

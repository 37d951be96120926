"""Process-wide settings, read from the environment (prefix ``RLHFKIT_``).

Nothing is read at import time: call :func:`get_settings` where a value is needed, so tests can
point the cache or the database somewhere temporary with ``monkeypatch.setenv``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RLHFKIT_", extra="ignore")

    cache_dir: Path = Field(
        default_factory=lambda: Path.home() / ".cache" / "rlhfkit",
        description="Where converted models and other derived artifacts are kept.",
    )
    database_url: str = Field(
        default="sqlite:///./rlhfkit.db",
        description="SQLAlchemy URL of the platform store; SQLite (WAL) by default.",
    )
    secret_key: str = Field(
        default="",
        description="Key that signs session cookies; a random one per process when empty.",
    )
    db_threads: int = Field(
        default=0,
        ge=0,
        le=20,
        description="Per server process, how many of the API's hot-path calls (token check,"
        " next task, submit) may use the store lane's threads at once; 0: 1 on SQLite, 8 on"
        " PostgreSQL. At most 20, the connection pool's size. On SQLite the hot path runs on"
        " the event loop and takes the lane only when the write lock is held long; SQLite"
        " writes take turns anyway, and more threads only fight over Python's interpreter lock.",
    )
    keepalive_max_s: float = Field(
        default=10.0,
        ge=0,
        le=3_600,
        description="Seconds a keep-alive connection may carry requests before the server ends"
        " it and the client reconnects, so that the load spreads again over the workers after a"
        " burst of connections (a restart, say) landed on one. 0: never.",
    )
    runs_dir: Path = Field(default=Path("runs"), description="Where run directories go.")
    chat_models: str = Field(
        default="",
        description="Comma-separated models the chat page and /v1 endpoints serve: default,"
        " tiny, run names (runs/NAME/model) or model directories; empty: all of them.",
    )


def get_settings() -> Settings:
    """Build the settings from the current environment (cheap; not cached on purpose)."""
    return Settings()

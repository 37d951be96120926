"""Shared fixtures. Real data is read from ../shared/data (beside the project root); a test that
needs a file that is absent is skipped with the reason, never passed silently."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def shared_file(relative: str) -> Path:
    """Path of a file under ../shared/data, or skip the calling test when it is absent."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"shared data file {path} is absent")
    return path


@pytest.fixture
def shared_data():
    return shared_file


@pytest.fixture(autouse=True)
def _isolated_settings(tmp_path_factory, monkeypatch):
    # Never write into the user's cache or database from a test, unless a test opts in.
    cache = tmp_path_factory.getbasetemp() / "rlhfkit-cache"
    monkeypatch.setenv("RLHFKIT_CACHE_DIR", str(cache))
    monkeypatch.setenv("RLHFKIT_DATABASE_URL", f"sqlite:///{tmp_path_factory.getbasetemp()}/t.db")

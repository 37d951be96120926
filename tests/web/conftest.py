import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "store"))

import pytest  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from rlhfkit_test_db import database_url, engine  # noqa: E402,F401

from rlhfkit.settings import Settings  # noqa: E402
from rlhfkit.store import users  # noqa: E402


class Platform:
    """A migrated app with an admin and two raters, each with an API token."""

    def __init__(self, eng, url):
        from rlhfkit.web.app import create_app

        self.engine = eng
        self.app = create_app(Settings(database_url=url, secret_key="test-secret"))
        self.client = TestClient(self.app)
        self.admin_id = users.create_user(eng, "admin", "admin-password", "admin")
        self.rater_ids = [users.create_user(eng, f"rater{i}", "rater-password") for i in (1, 2)]
        self.admin = {"Authorization": f"Bearer {users.create_token(eng, self.admin_id)}"}
        self.raters = [
            {"Authorization": f"Bearer {users.create_token(eng, uid)}"} for uid in self.rater_ids
        ]

    def project(self, items, **settings):
        """Create a project with ``items`` and both raters invited; returns its id."""
        body = {"name": settings.pop("name", "p"), "gold_share": 0.0, **settings}
        r = self.client.post("/api/v1/projects", json=body, headers=self.admin)
        assert r.status_code == 201, r.text
        pid = r.json()["id"]
        r = self.client.post(
            f"/api/v1/projects/{pid}/items", json={"items": items}, headers=self.admin
        )
        assert r.status_code == 201, r.text
        for uid in self.rater_ids:
            r = self.client.post(
                f"/api/v1/projects/{pid}/members", json={"user_id": uid}, headers=self.admin
            )
            assert r.status_code == 204, r.text
        return pid

    def login(self, username, password):
        """A separate browser-like client signed in through the login form."""
        c = TestClient(self.app)
        page = c.get("/login")
        token = page.text.split('name="csrf_token" value="')[1].split('"')[0]
        r = c.post(
            "/login",
            data={"username": username, "password": password, "csrf_token": token},
            follow_redirects=False,
        )
        assert r.status_code == 303, r.text
        return c

    @staticmethod
    def csrf(page_html: str) -> str:
        return page_html.split('name="csrf_token" value="')[1].split('"')[0]


@pytest.fixture
def platform(engine, database_url):  # noqa: F811
    p = Platform(engine, database_url)
    yield p
    p.client.close()

import re

import pytest

XSS = "<script>alert('owned')</script>"


def _project(platform, **kw):
    items = [
        {"prompt": f"Prompt {XSS}", "response_a": f"Reply {XSS}", "response_b": "<b>bold?</b>"},
        {"prompt": "q2", "response_a": "a2", "response_b": "b2"},
    ]
    return platform.project(items, **kw)


def test_signed_out_users_are_sent_to_login(platform):
    for path in ("/rate", "/admin", "/admin/ledger", "/me/profile", "/rate/1"):
        r = platform.client.get(path, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/login", path


def test_wrong_password_and_forged_cookie(platform):
    c = platform.client
    page = c.get("/login")
    token = platform.csrf(page.text)
    r = c.post(
        "/login",
        data={"username": "rater1", "password": "bad", "csrf_token": token},
        follow_redirects=False,
    )
    assert r.headers["location"] == "/login?error=wrong"
    c.cookies.set("rk_session", "eyJ1aWQiOjF9.forged.sig")
    assert c.get("/rate", follow_redirects=False).status_code == 303


def test_login_needs_the_form_token(platform):
    r = platform.client.post(
        "/login", data={"username": "rater1", "password": "rater-password"}, follow_redirects=False
    )
    assert r.headers["location"] == "/login?error=expired"


def test_model_and_user_text_is_escaped(platform):
    pid = _project(platform)
    rater = platform.login("rater1", "rater-password")
    html = rater.get(f"/rate/{pid}").text
    assert XSS not in html
    assert "&lt;script&gt;alert(&#39;owned&#39;)&lt;/script&gt;" in html
    assert "&lt;b&gt;bold?&lt;/b&gt;" in html
    # the rater's own comment comes back escaped on the admin review page
    form = _task_form(html)
    rater.post(form["action"], data={**form["fields"], "choice": "A", "comment": XSS})
    admin = platform.login("admin", "admin-password")
    review = admin.get(f"/admin/projects/{pid}/review").text
    assert XSS not in review and "&lt;script&gt;" in review


def _task_form(html):
    action = re.search(r'<form method="post" action="(/rate/\d+/\d+)"', html).group(1)
    fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', html))
    fields.pop("time_on_task_ms", None)
    return {"action": action, "fields": fields}


def test_rating_through_the_page(platform, engine):
    pid = _project(platform, overlap_k=1, pay_per_comparison_cents=12)
    rater = platform.login("rater1", "rater-password")
    for _ in range(2):
        form = _task_form(rater.get(f"/rate/{pid}").text)
        data = {
            **form["fields"],
            "choice": "B",
            "strength": "3",
            "labels_A": ["harmful"],
            "labels_B": ["helpful", "polite"],
            "time_on_task_ms": "4000",
        }
        r = rater.post(form["action"], data=data, follow_redirects=False)
        assert r.status_code == 303
        # a double click resubmits the same form: stored once
        assert rater.post(form["action"], data=data, follow_redirects=False).status_code == 303
    page = rater.get(f"/rate/{pid}").text
    assert 'id="queue-empty"' in page and "Earned 0.24" in page
    mine = platform.client.get("/api/v1/me/judgments", headers=platform.raters[0]).json()
    assert len(mine) == 2 and mine[0]["labels"]["B"]["polite"] is True
    assert mine[0]["labels"]["A"] == {
        "helpful": False,
        "harmful": True,
        "evasive": False,
        "polite": False,
        "honest": False,
        "verbose": False,
    }


def test_hourly_warning_on_the_rater_page(platform):
    # 1 cent per comparison in 60 s is 0.60/h, below a 15.00 minimum
    pid = _project(platform, pay_per_comparison_cents=1, min_hourly_wage_cents=1500)
    from datetime import timedelta

    from rlhfkit.store import JudgmentInput, next_task, submit_judgment
    from rlhfkit.store.users import now_utc

    t0 = now_utc()
    task = next_task(platform.engine, pid, platform.rater_ids[0], now=t0)
    submit_judgment(
        platform.engine,
        task.assignment_id,
        platform.rater_ids[0],
        JudgmentInput("k", "A", time_on_task_ms=60_000),
        now=t0 + timedelta(seconds=60),
    )
    rater = platform.login("rater1", "rater-password")
    assert 'id="wage-warning"' in rater.get(f"/rate/{pid}").text
    admin = platform.login("admin", "admin-password")
    assert "below the 15.00 minimum" in admin.get("/admin/ledger").text


def test_forms_without_csrf_token_are_refused(platform):
    pid = _project(platform)
    rater = platform.login("rater1", "rater-password")
    form = _task_form(rater.get(f"/rate/{pid}").text)
    data = {**form["fields"], "csrf_token": "forged", "choice": "A"}
    assert rater.post(form["action"], data=data).status_code == 403
    admin = platform.login("admin", "admin-password")
    r = admin.post("/admin/projects", data={"name": "x"})
    assert r.status_code == 403
    r = admin.post("/admin/users", data={"username": "eve", "password": "password1"})
    assert r.status_code == 403


@pytest.mark.parametrize(
    "path",
    [
        "/admin",
        "/admin/ledger",
        "/admin/projects/new",
        "/admin/projects/1",
        "/admin/projects/1/review",
        "/admin/projects/1/export/preferences",
        "/admin/ledger.csv",
    ],
)
def test_raters_cannot_open_admin_pages(platform, path):
    _project(platform)
    rater = platform.login("rater1", "rater-password")
    r = rater.get(path, follow_redirects=False)
    assert r.status_code == 403 and "not for your role" in r.text


def test_admin_sets_up_a_project_through_pages(platform, tmp_path):
    admin = platform.login("admin", "admin-password")
    csrf = platform.csrf(admin.get("/admin/projects/new").text)
    r = admin.post(
        "/admin/projects",
        data={
            "csrf_token": csrf,
            "name": "From pages",
            "label_set": "helpful, harmful",
            "overlap_k": "2",
            "gold_share": "0",
            "pay_per_comparison": "0.15",
        },
        follow_redirects=False,
    )
    assert r.status_code == 303
    url = r.headers["location"]
    pid = int(url.rsplit("/", 1)[1])
    items = tmp_path / "items.jsonl"
    items.write_text('{"prompt": "hi", "response_a": "hello", "response_b": "yo"}\n')
    with items.open("rb") as fh:
        r = admin.post(
            f"/admin/projects/{pid}/import",
            data={"csrf_token": csrf},
            files={"file": ("items.jsonl", fh)},
            follow_redirects=False,
        )
    assert r.status_code == 303
    r = admin.post(
        f"/admin/projects/{pid}/members",
        data={"csrf_token": csrf, "username": "newbie", "password": "newbie-pass"},
        follow_redirects=False,
    )
    assert r.status_code == 303
    page = admin.get(url).text
    assert "newbie" in page and "<b>1</b> items" in page
    newbie = platform.login("newbie", "newbie-pass")
    assert "hello" in newbie.get(f"/rate/{pid}").text
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "hi", "response_a": "x"}\n')
    with bad.open("rb") as fh:
        r = admin.post(
            f"/admin/projects/{pid}/import",
            data={"csrf_token": csrf},
            files={"file": ("bad.jsonl", fh)},
        )
    assert r.status_code == 422 and "response_b" in r.text


def test_profile_page_edit_and_delete(platform, engine):
    rater = platform.login("rater2", "rater-password")
    csrf = platform.csrf(rater.get("/me/profile").text)
    rater.post("/me/profile", data={"csrf_token": csrf, "consent": "true", "country": "PE"})
    assert 'value="PE"' in rater.get("/me/profile").text
    rater.post("/me/profile/delete", data={"csrf_token": csrf})
    assert 'value="PE"' not in rater.get("/me/profile").text


def test_admin_cannot_use_rater_pages_and_garbage_ids_are_clean_errors(platform):
    admin = platform.login("admin", "admin-password")
    assert admin.get("/rate").status_code == 403
    assert admin.get("/admin/projects/999").status_code == 404
    assert admin.get("/admin/projects/abc").status_code == 422
    assert admin.get("/admin/projects/99999999999999999999").status_code == 422

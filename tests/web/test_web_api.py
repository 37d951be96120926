import pytest

ITEMS = [
    {"prompt": "What is 2+2?", "response_a": "4", "response_b": "22"},
    {"prompt": [{"role": "user", "content": "Hi"}], "response_a": "Hello", "response_b": "Go away"},
    {"prompt": "Name a colour", "response_a": "Blue", "response_b": "Seven"},
    {"prompt": "Capital of France?", "response_a": "Paris", "response_b": "Lyon", "gold": "A"},
]


def _next(platform, pid, who=0):
    return platform.client.post(f"/api/v1/projects/{pid}/tasks/next", headers=platform.raters[who])


def test_token_login(platform):
    c = platform.client
    r = c.post("/api/v1/auth/token", json={"username": "rater1", "password": "rater-password"})
    assert r.status_code == 200
    me = c.get("/api/v1/me", headers={"Authorization": f"Bearer {r.json()['token']}"})
    assert me.json()["username"] == "rater1" and me.json()["role"] == "rater"
    bad = c.post("/api/v1/auth/token", json={"username": "rater1", "password": "nope"})
    assert bad.status_code == 401
    assert c.get("/api/v1/me").status_code == 401
    assert c.get("/api/v1/me", headers={"Authorization": "Bearer junk"}).status_code == 401


def test_judging_through_the_api(platform):
    pid = platform.project(ITEMS, overlap_k=2)
    task = _next(platform, pid).json()
    assert [r["id"] for r in task["responses"]] in (["A", "B"], ["B", "A"])
    assert "gold" not in str(task)
    body = {"client_key": "c1", "choice": "A", "strength": 3, "labels": {"A": {"helpful": True}}}
    url = f"/api/v1/assignments/{task['assignment_id']}/judgment"
    first = platform.client.post(url, json=body, headers=platform.raters[0])
    assert first.status_code == 201 and first.json()["created"] is True
    again = platform.client.post(url, json=body, headers=platform.raters[0])
    assert (
        again.status_code == 200
        and again.json()["judgment"]["id"] == first.json()["judgment"]["id"]
    )
    other = platform.client.post(url, json={**body, "client_key": "c2"}, headers=platform.raters[0])
    assert other.status_code == 409
    # submit-and-next in one request
    t2 = _next(platform, pid).json()
    r = platform.client.post(
        f"/api/v1/assignments/{t2['assignment_id']}/judgment?next=true",
        json={"client_key": "c3", "choice": "tie"},
        headers=platform.raters[0],
    )
    assert r.status_code == 201 and r.json()["next"]["item_id"] not in (
        task["item_id"],
        t2["item_id"],
    )
    mine = platform.client.get("/api/v1/me/judgments", headers=platform.raters[0]).json()
    assert len(mine) == 2
    earnings = platform.client.get("/api/v1/me/earnings", headers=platform.raters[0]).json()
    assert earnings[0]["tasks"] == 2 and earnings[0]["total_cents"] == 20


def test_queue_runs_dry_with_204(platform):
    pid = platform.project(ITEMS[:1], overlap_k=1)  # one ordinary item, one slot
    t = _next(platform, pid).json()
    platform.client.post(
        f"/api/v1/assignments/{t['assignment_id']}/judgment",
        json={"client_key": "x", "choice": "B"},
        headers=platform.raters[0],
    )
    assert _next(platform, pid).status_code == 204
    assert _next(platform, pid, who=1).status_code == 204


@pytest.mark.parametrize(
    "method,path",
    [
        ("post", "/api/v1/projects"),
        ("get", "/api/v1/items/{item}"),
        ("post", "/api/v1/items/{item}/adjudication"),
        ("get", "/api/v1/ledger"),
        ("get", "/api/v1/ledger.csv"),
        ("post", "/api/v1/ledger/bonuses"),
        ("get", "/api/v1/users"),
        ("post", "/api/v1/users"),
        ("post", "/api/v1/users/1/tokens"),
        ("get", "/api/v1/projects/{pid}/judgments"),
        ("get", "/api/v1/projects/{pid}/raters"),
        ("get", "/api/v1/projects/{pid}/progress"),
        ("get", "/api/v1/projects/{pid}/groups"),
        ("post", "/api/v1/projects/{pid}/items"),
        ("post", "/api/v1/projects/{pid}/members"),
        ("get", "/api/v1/projects/{pid}/export/preferences"),
        ("get", "/api/v1/projects/{pid}/export/demonstrations"),
    ],
)
def test_raters_cannot_reach_admin_resources(platform, method, path):
    pid = platform.project(ITEMS)
    url = path.format(pid=pid, item=3)
    bodies = {"post": {"json": {}}, "get": {}}
    r = getattr(platform.client, method)(url, headers=platform.raters[0], **bodies[method])
    assert r.status_code == 403, (url, r.status_code, r.text)
    anonymous = getattr(platform.client, method)(url, **bodies[method])
    assert anonymous.status_code == 401


def test_raters_see_only_their_own_work(platform):
    pid = platform.project(ITEMS, overlap_k=2)
    t = _next(platform, pid, who=0).json()
    platform.client.post(
        f"/api/v1/assignments/{t['assignment_id']}/judgment",
        json={"client_key": "mine", "choice": "A"},
        headers=platform.raters[0],
    )
    assert platform.client.get("/api/v1/me/judgments", headers=platform.raters[1]).json() == []
    # rater 2 cannot answer rater 1's task, even knowing its id
    t1 = _next(platform, pid, who=0).json()
    r = platform.client.post(
        f"/api/v1/assignments/{t1['assignment_id']}/judgment",
        json={"client_key": "steal", "choice": "B"},
        headers=platform.raters[1],
    )
    assert r.status_code == 404
    # and sees only projects they were invited to
    other = platform.client.post(
        "/api/v1/projects", json={"name": "secret"}, headers=platform.admin
    ).json()
    listed = platform.client.get("/api/v1/projects", headers=platform.raters[1]).json()
    assert [p["id"] for p in listed] == [pid]
    assert (
        platform.client.get(
            f"/api/v1/projects/{other['id']}", headers=platform.raters[1]
        ).status_code
        == 403
    )
    assert _next(platform, other["id"], who=1).status_code == 403


def test_admin_views_exports_and_bonus(platform):
    pid = platform.project(ITEMS, overlap_k=2, gold_share=1.0)
    for who in (0, 1):
        while (r := _next(platform, pid, who)).status_code == 200:
            t = r.json()
            platform.client.post(
                f"/api/v1/assignments/{t['assignment_id']}/judgment",
                json={"client_key": f"{who}-{t['item_id']}", "choice": "A"},
                headers=platform.raters[who],
            )
    h = platform.admin
    prog = platform.client.get(f"/api/v1/projects/{pid}/progress", headers=h).json()
    assert prog["judgments"] == 8 and prog["complete_items"] == 3
    stats = platform.client.get(f"/api/v1/projects/{pid}/raters", headers=h).json()
    assert {s["username"] for s in stats} == {"rater1", "rater2"}
    assert all(s["gold_accuracy"] is not None for s in stats)
    item = platform.client.get("/api/v1/items/4", headers=h).json()
    assert item["gold_answer"] == "A"
    adj = platform.client.post("/api/v1/items/1/adjudication", json={"answer": "B"}, headers=h)
    assert adj.json()["adjudication"] == "B"
    prefs = platform.client.get(f"/api/v1/projects/{pid}/export/preferences", headers=h)
    assert prefs.status_code == 200 and len(prefs.text.strip().splitlines()) == 8
    assert '"rater_id": "rater-' in prefs.text
    mix = platform.client.get(
        f"/api/v1/projects/{pid}/export/preferences?target_mix=country=FR:1", headers=h
    )
    assert mix.status_code == 422 and "no judgments" in mix.json()["detail"]
    bonus = platform.client.post(
        "/api/v1/ledger/bonuses",
        json={"rater_id": platform.rater_ids[0], "project_id": pid, "amount_cents": 100},
        headers=h,
    )
    assert bonus.status_code == 201
    csv_text = platform.client.get("/api/v1/ledger.csv?totals=true", headers=h).text
    assert "rater1" in csv_text and "140" in csv_text  # 4 tasks * 10 + 100 bonus


def test_profile_via_api(platform):
    h = platform.raters[0]
    r = platform.client.put(
        "/api/v1/me/profile", json={"consent": True, "country": "KE", "gender": "woman"}, headers=h
    )
    assert r.json()["profile"]["country"] == "KE"
    r = platform.client.delete("/api/v1/me/profile", headers=h)
    assert r.json()["profile"] == {
        "consent": False,
        "country": None,
        "languages": None,
        "age_band": None,
        "gender": None,
        "education": None,
        "expertise": None,
    }


def test_request_size_limit(platform):
    big = "x" * (2 << 20)
    r = platform.client.post(
        "/api/v1/auth/token", content=big, headers={"content-type": "application/json"}
    )
    assert r.status_code == 413


def test_openapi_document(platform):
    doc = platform.client.get("/openapi.json").json()
    assert "/api/v1/assignments/{assignment_id}/judgment" in doc["paths"]
    assert not any(p.startswith("/admin") or p.startswith("/rate") for p in doc["paths"])
    assert "HTTPBearer" in doc["components"]["securitySchemes"]


def test_hot_path_store_work_runs_in_a_lane_of_its_own(platform, monkeypatch):
    """Token checks and next task / submit use the store at most ``store_threads`` at a time,
    whatever the number of requests in flight."""
    import asyncio
    import threading
    import time

    import httpx

    from rlhfkit.store import queue
    from rlhfkit.store import users as store_users

    sqlite = platform.engine.dialect.name == "sqlite"
    assert platform.app.state.store_threads == (1 if sqlite else 8)
    assert platform.app.state.store_inline == sqlite  # a file database: see the next test
    platform.app.state.store_inline = False  # the lane, as after a long wait on SQLite
    pid = platform.project(
        [{"prompt": f"q{i}", "response_a": "a", "response_b": "b"} for i in range(4)]
    )
    cond, running, peak, width = threading.Condition(), [0], [0], [1]

    def counted(real):
        def wrapper(*args, **kwargs):
            with cond:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
                cond.notify_all()
                # hold the calls until as many are inside at once as the lane allows (5 s at
                # most), so the peak shows the lane's width however the threads are scheduled
                cond.wait_for(lambda: peak[0] >= width[0], timeout=5)
            time.sleep(0.02)  # still inside: a lane wider than allowed shows as a higher peak
            with cond:
                running[0] -= 1
            return real(*args, **kwargs)

        return wrapper

    async def burst(threads, path):
        platform.app.state.store_threads = threads
        peak[0], width[0] = 0, threads
        transport = httpx.ASGITransport(app=platform.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            calls = [
                client.post(path, headers=platform.raters[i % 2])
                if "tasks" in path
                else client.get(path, headers=platform.raters[0])
                for i in range(6)
            ]
            return [r.status_code for r in await asyncio.gather(*calls)], peak[0]

    monkeypatch.setattr(store_users, "user_for_token", counted(store_users.user_for_token))
    assert asyncio.run(burst(1, "/api/v1/me")) == ([200] * 6, 1)
    assert asyncio.run(burst(3, "/api/v1/me")) == ([200] * 6, 3)
    monkeypatch.undo()

    monkeypatch.setattr(queue, "next_task", counted(queue.next_task))
    assert asyncio.run(burst(1, f"/api/v1/projects/{pid}/tasks/next")) == ([200] * 6, 1)
    assert asyncio.run(burst(2, f"/api/v1/projects/{pid}/tasks/next")) == ([200] * 6, 2)
    monkeypatch.undo()


def test_sqlite_hot_path_runs_on_the_event_loop_unless_a_writer_holds_on(platform, monkeypatch):
    """On SQLite the hot path's store work runs in the event loop's own thread; when another
    writer keeps the write lock past the allowance, the call moves to the lane and the loop
    goes on answering other requests meanwhile."""
    import asyncio
    import threading
    import time

    import httpx

    from rlhfkit.store import queue
    from rlhfkit.store.engine import writing
    from rlhfkit.web import deps

    if platform.engine.dialect.name != "sqlite":
        assert platform.app.state.store_inline is False  # PostgreSQL: always the lane
        return
    pid = platform.project(
        [{"prompt": f"q{i}", "response_a": "a", "response_b": "b"} for i in range(4)]
    )
    ran_in = []
    real = queue.next_task

    def spy(*args, **kwargs):
        ran_in.append(threading.current_thread())
        return real(*args, **kwargs)

    monkeypatch.setattr(queue, "next_task", spy)
    path = f"/api/v1/projects/{pid}/tasks/next"

    async def scenario():
        loop_thread = threading.current_thread()
        transport = httpx.ASGITransport(app=platform.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            first = await client.post(path, headers=platform.raters[0])
            assert first.status_code == 200
            assert ran_in == [loop_thread]

            # another writer (a long import, say) holds the write lock for 0.5 s
            held, release = threading.Event(), threading.Event()

            def long_writer():
                with writing(platform.engine):
                    held.set()
                    release.wait(5)

            writer = threading.Thread(target=long_writer)
            writer.start()
            assert held.wait(5)
            started = time.perf_counter()
            pending = asyncio.ensure_future(client.post(path, headers=platform.raters[1]))
            await asyncio.sleep(3 * deps.INLINE_WAIT_S)
            health = await client.get("/healthz")  # the loop is free while the call waits
            assert health.status_code == 200 and not pending.done()
            # with the lane busy, the next write goes there without a wait on the loop
            third = asyncio.ensure_future(client.post(path, headers=platform.raters[0]))
            await asyncio.sleep(3 * deps.INLINE_WAIT_S)
            assert not third.done()
            release.set()
            second = await pending
            assert (await third).status_code == 200
            writer.join()
            return second.status_code, time.perf_counter() - started, loop_thread

    allowances = []
    real_wait = deps.waiting_at_most

    def recorded(seconds):
        allowances.append(seconds)
        return real_wait(seconds)

    monkeypatch.setattr(deps, "waiting_at_most", recorded)
    status, waited, loop_thread = asyncio.run(scenario())
    assert status == 200
    # rater 1: inline (gave up, nothing written), then in the lane; rater 0's second request:
    # inline without a wait (the lane was busy), then in the lane
    assert len(ran_in) == 5
    assert ran_in[1] is loop_thread and ran_in[2] is not loop_thread
    assert ran_in[3] is loop_thread and ran_in[4] is not loop_thread
    assert [a for a in allowances if a == 0.0]  # token checks and writes while the lane waited
    assert allowances[0] == deps.INLINE_WAIT_S
    assert waited >= 3 * deps.INLINE_WAIT_S


@pytest.mark.parametrize("value", ["-1", "lots", "21"])
def test_garbage_db_threads_setting_names_the_variable(monkeypatch, value):
    from pydantic import ValidationError

    from rlhfkit.settings import get_settings

    monkeypatch.setenv("RLHFKIT_DB_THREADS", value)
    with pytest.raises(ValidationError, match="db_threads"):
        get_settings()

"""CPU cost of the rater's hot API request in process: the whole ASGI app, no sockets.

``POST /api/v1/assignments/{id}/judgment?next=true`` (judge, get the next pair) called on the
app built by ``rlhfkit.web.app.create_app`` over a fresh SQLite database, ``--raters`` raters
taking turns, one request at a time. What it measures is the app's CPU per request: routing,
token check, body validation, the store's transaction, serialising the answer, and any trips
to the store lane's thread (none on SQLite since the hot path runs on the event loop; this
script is how that change was measured, see docs/platform.md). It leaves out uvicorn's HTTP parsing and the sockets (in
``benchmarks/platform_load.py``), and the queueing of concurrent requests. CPU time, not wall
time, so it is steadier than the load benchmark on a shared machine; still compare two versions
back to back (``--repeat`` alternates nothing, it repeats).

    python benchmarks/api_ops.py                  # 20 raters x 100 rounds, 3 repeats
    python benchmarks/api_ops.py --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path


class Asgi:
    """Calls an ASGI app with one HTTP request at a time and collects the answer."""

    def __init__(self, app):
        self.app = app

    async def request(self, method: str, path: str, token: str, body: dict | None = None):
        path, _, query = path.partition("?")
        payload = json.dumps(body).encode() if body is not None else b""
        headers = [
            (b"host", b"bench"),
            (b"authorization", f"Bearer {token}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
        ]
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 8000),
            "state": {},
        }
        sent = False

        async def receive():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": payload, "more_body": False}
            await asyncio.sleep(3600)  # no disconnect while the app works
            return {"type": "http.disconnect"}

        status, chunks = 0, []

        async def send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, send)
        data = b"".join(chunks)
        return status, (json.loads(data) if data else None)


def setup(url: str, raters: int, items: int) -> tuple[int, list[str]]:
    from rlhfkit.store import ProjectSettings, add_items, create_project
    from rlhfkit.store.migrate import open_store
    from rlhfkit.store.projects import add_member
    from rlhfkit.store.users import create_token, create_user

    engine = open_store(url)
    pid = create_project(engine, ProjectSettings(name="api-ops", overlap_k=2, gold_share=0.05))
    rows = [
        {"prompt": f"Question {i}?", "response_a": f"A {i}", "response_b": f"B {i}"}
        for i in range(items)
    ]
    add_items(engine, pid, rows)
    tokens = []
    for i in range(raters):
        uid = create_user(engine, f"api{uuid.uuid4().hex[:8]}{i}", "api-password")
        add_member(engine, pid, uid)
        tokens.append(create_token(engine, uid, "bench"))
    engine.dispose()
    return pid, tokens


async def measure(app, pid: int, tokens: list[str], rounds: int) -> dict:
    client = Asgi(app)
    tasks = {}
    for token in tokens:
        status, task = await client.request("POST", f"/api/v1/projects/{pid}/tasks/next", token)
        assert status == 200, (status, task)
        tasks[token] = task
    calls = 0
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(rounds):
        for token in tokens:
            task = tasks[token]
            body = {"client_key": uuid.uuid4().hex, "choice": "A", "strength": 2}
            status, data = await client.request(
                "POST",
                f"/api/v1/assignments/{task['assignment_id']}/judgment?next=true",
                token,
                body,
            )
            if status not in (200, 201) or data["next"] is None:
                raise SystemExit(f"unexpected answer {status}: {data}")
            tasks[token] = data["next"]
            calls += 1
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {
        "calls": calls,
        "cpu_ms_per_call": 1000 * cpu / calls,
        "wall_ms_per_call": 1000 * wall / calls,
    }


def run_once(raters: int, rounds: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'api.db'}"
        pid, tokens = setup(url, raters, items=raters * rounds + 100)
        os.environ["RLHFKIT_DATABASE_URL"] = url
        from rlhfkit.settings import Settings
        from rlhfkit.web.app import create_app

        app = create_app(Settings(database_url=url, secret_key="bench" * 8))
        try:
            return asyncio.run(measure(app, pid, tokens, rounds))
        finally:
            app.state.engine.dispose()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--raters", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3, help="fresh database each time")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    for name in ("raters", "rounds", "repeat"):
        if getattr(args, name) < 1:
            ap.error(f"--{name}: must be at least 1, got {getattr(args, name)}")
    runs = [run_once(args.raters, args.rounds) for _ in range(args.repeat)]
    cpu = [r["cpu_ms_per_call"] for r in runs]
    result = {
        "calls_per_run": runs[0]["calls"],
        "cpu_ms_per_call": [round(x, 3) for x in cpu],
        "cpu_ms_per_call_median": round(statistics.median(cpu), 3),
        "wall_ms_per_call_median": round(statistics.median(r["wall_ms_per_call"] for r in runs), 3),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{result['calls_per_run']} judgments per run: {result['cpu_ms_per_call_median']} ms"
            f" CPU per request (median of {args.repeat}: {result['cpu_ms_per_call']})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

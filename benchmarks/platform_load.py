"""Load test of the rater platform: N concurrent simulated raters against a real server process
on loopback, a kill -9 of the server in the middle, a restart, and the queue's invariants
checked in the database afterwards.

Each rater loops: ask for a task, think (``--think-ms``, exponentially distributed; none by
default), submit a judgment with a fresh client key (asking for the next task in the same
request). When the server dies mid-request the rater retries the same
submission with the same key after the restart: idempotency must turn that into exactly one
stored judgment. Afterwards:

- lost: acknowledged judgments (HTTP 200/201 seen) missing from the database;
- duplicated: an assignment or (item, rater) pair with more than one judgment;
- over_k: ordinary items with more than k judgments.

Usage::

    python benchmarks/platform_load.py --raters 200 --seconds 60 --json
    python benchmarks/platform_load.py --database-url postgresql://postgres@127.0.0.1/test --workers 4
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import func, select


def _nonnegative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {text!r}")
    return value


RECOVERY_S = 5.0
"""Seconds after the restarted server answers that count as its recovery (see ``phases``)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Http:
    """A minimal keep-alive HTTP/1.1 client: the load generator shares two cores with the
    server, so it must cost far less per request than the server does."""

    def __init__(self, port: int, token: str):
        self.port = port
        self.auth = f"Authorization: Bearer {token}\r\n"
        self.reader = self.writer = None
        self.reconnects = 0  # connections the server closed after a response (keep-alive cap)

    async def request(self, method: str, path: str, body: dict | None = None):
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        payload = json.dumps(body).encode() if body is not None else b""
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: bench\r\n{self.auth}"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        )
        try:
            self.writer.write(head.encode() + payload)
            status_line = await self.reader.readline()
            if not status_line:
                raise ConnectionError("closed")
            status = int(status_line.split()[1])
            length, keep = 0, True
            while (line := await self.reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                name = name.lower()
                if name == "content-length":
                    length = int(value)
                elif name == "connection" and "close" in value.lower():
                    keep = False  # the server ends the connection: the next request reconnects
            data = await self.reader.readexactly(length) if length else b""
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            self.close()
            raise ConnectionError("request failed") from None
        if not keep:
            self.close()
            self.reconnects += 1
        return status, (json.loads(data) if data else None)

    def close(self):
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class Server:
    def __init__(self, url: str, port: int, workers: int):
        self.url, self.port, self.workers = url, port, workers
        self.proc: subprocess.Popen | None = None

    def start(self) -> float:
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rlhfkit.cli",
                "serve",
                "--port",
                str(self.port),
                "--workers",
                str(self.workers),
            ],
            env={**os.environ, "RLHFKIT_DATABASE_URL": self.url},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, so kill -9 reaches the workers
        )
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return time.perf_counter() - t0
            except OSError:
                if self.proc.poll() is not None:
                    raise SystemExit("server failed to start") from None
                time.sleep(0.05)

    def cpu_seconds(self) -> float:
        """CPU time used so far by the server's process group (Linux /proc)."""
        total = 0.0
        tick = os.sysconf("SC_CLK_TCK")
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == self.proc.pid:  # process group id
                total += (int(fields[11]) + int(fields[12])) / tick
        return total

    def kill9(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=30)


def setup(url: str, raters: int, items: int, k: int) -> tuple[int, list[tuple[int, str]]]:
    from rlhfkit.store import ProjectSettings, add_items, create_project
    from rlhfkit.store.migrate import open_store
    from rlhfkit.store.projects import add_member
    from rlhfkit.store.users import create_token, create_user

    engine = open_store(url)
    pid = create_project(
        engine, ProjectSettings(name=f"load-{uuid.uuid4().hex[:6]}", overlap_k=k, gold_share=0.05)
    )
    rows = [
        {
            "prompt": f"Question {i}?",
            "response_a": f"Answer {i} one",
            "response_b": f"Answer {i} two",
        }
        for i in range(items)
    ]
    rows += [
        {"prompt": f"Gold {i}", "response_a": "right", "response_b": "wrong", "gold": "A"}
        for i in range(20)
    ]
    for start in range(0, len(rows), 5000):
        add_items(engine, pid, rows[start : start + 5000])
    people = []
    for i in range(raters):
        uid = create_user(engine, f"load{uuid.uuid4().hex[:8]}{i}", "load-password")
        add_member(engine, pid, uid)
        people.append((uid, create_token(engine, uid, "load")))
    engine.dispose()
    return pid, people


async def rater(port, pid, token, stop_at, stats, acked, rng, think_s=0.0, start_after=0.0):
    await asyncio.sleep(start_after)
    http = Http(port, token)
    try:
        await _judge(http, pid, stop_at, stats, acked, rng, think_s)
    finally:
        http.close()
        stats["reconnects"] += http.reconnects


async def _judge(http, pid, stop_at, stats, acked, rng, think_s):
    task = None
    pending = None  # (assignment_id, body) of a submission whose answer we have not seen
    while time.perf_counter() < stop_at:
        try:
            t0 = time.perf_counter()
            if pending is not None:
                aid, body = pending
                status, data = await http.request(
                    "POST", f"/api/v1/assignments/{aid}/judgment?next=true", body
                )
                stats["latency"].append((t0, time.perf_counter() - t0))
                if status in (200, 201):
                    acked.append(body["client_key"])
                    stats["created" if status == 201 else "replayed"] += 1
                    task = data["next"]
                elif status == 409:  # expired while the server was down: move on
                    stats["conflicts"] += 1
                    task = None
                else:
                    stats["errors"] += 1
                    task = None
                pending = None
            elif task is None:
                status, data = await http.request("POST", f"/api/v1/projects/{pid}/tasks/next")
                stats["latency"].append((t0, time.perf_counter() - t0))
                if status == 204:
                    stats["dry"] += 1
                    return
                if status != 200:
                    stats["errors"] += 1
                    await asyncio.sleep(0.05)
                    continue
                task = data
            else:
                if think_s > 0:  # reading the pair; exponential, so arrivals stay irregular
                    await asyncio.sleep(rng.expovariate(1 / think_s))
                choice = rng.choice(["A", "A", "B", "tie"])
                body = {
                    "client_key": uuid.uuid4().hex,
                    "choice": choice,
                    "time_on_task_ms": rng.randint(2000, 30000),
                }
                pending = (task["assignment_id"], body)
                task = None
        except ConnectionError:
            stats["retries"] += 1
            # The server is down: keep `pending` and try again after a jittered pause, as real
            # clients do (all 200 reconnecting at once would pile onto one worker, see --ramp-s).
            await asyncio.sleep(rng.uniform(0.05, 0.5))
            if task is None and pending is None:
                continue


async def load(port, pid, people, seconds, stats, acked, seed, think_s=0.0, ramp_s=0.0):
    stop_at = time.perf_counter() + seconds
    rngs = [random.Random(seed + i) for i in range(len(people))]
    await asyncio.gather(
        *(
            rater(port, pid, tok, stop_at, stats, acked, rng, think_s, i * ramp_s / len(people))
            for i, ((_, tok), rng) in enumerate(zip(people, rngs, strict=True))
        )
    )


def check(url: str, pid: int, k: int, acked: list[str]) -> dict:
    from rlhfkit.store import make_engine
    from rlhfkit.store.schema import items, judgments

    engine = make_engine(url)
    with engine.connect() as conn:
        stored = set(
            conn.execute(
                select(judgments.c.client_key).where(judgments.c.project_id == pid)
            ).scalars()
        )
        twice = conn.execute(
            select(func.count()).select_from(
                select(judgments.c.item_id, judgments.c.rater_id)
                .where(judgments.c.project_id == pid)
                .group_by(judgments.c.item_id, judgments.c.rater_id)
                .having(func.count() > 1)
                .subquery()
            )
        ).scalar_one()
        per_assignment = conn.execute(
            select(func.count()).select_from(
                select(judgments.c.assignment_id)
                .where(judgments.c.project_id == pid)
                .group_by(judgments.c.assignment_id)
                .having(func.count() > 1)
                .subquery()
            )
        ).scalar_one()
        over_k = conn.execute(
            select(func.count()).select_from(
                select(judgments.c.item_id)
                .join(items, items.c.id == judgments.c.item_id)
                .where(judgments.c.project_id == pid, items.c.is_gold.is_(False))
                .group_by(judgments.c.item_id)
                .having(func.count() > k)
                .subquery()
            )
        ).scalar_one()
        complete = conn.execute(
            select(func.count()).where(
                items.c.project_id == pid, items.c.n_done == k, items.c.is_gold.is_(False)
            )
        ).scalar_one()
    engine.dispose()
    acked_set = set(acked)
    return {
        "stored": len(stored),
        "acknowledged": len(acked_set),
        "lost": len(acked_set - stored),
        # a key acknowledged twice is a replay of one judgment, not a duplicate row
        "duplicated": twice + per_assignment,
        "over_k": over_k,
        "complete_items": complete,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--raters", type=int, default=200, help="concurrent simulated raters")
    ap.add_argument("--seconds", type=float, default=60, help="length of the load")
    ap.add_argument("--database-url", default=None, help="default: SQLite in a temp directory")
    ap.add_argument(
        "--json",
        nargs="?",
        const="-",
        default=None,
        help="write the result as JSON to this file ('-' or no value: stdout)",
    )
    ap.add_argument("--workers", type=int, default=1, help="server worker processes")
    ap.add_argument("--items", type=int, default=None, help="ordinary items (default: plenty)")
    ap.add_argument("--k", type=int, default=3, help="judgments per item")
    ap.add_argument(
        "--kill-at",
        type=float,
        default=0.5,
        help="kill -9 the server at this fraction of the run, then restart (0: never)",
    )
    ap.add_argument(
        "--think-ms",
        type=_nonnegative,
        default=0,
        help="mean time a rater spends on a pair between getting it and submitting (0: none, "
        "every rater hammers the server; see docs/benchmarks.md for why latency needs a pause)",
    )
    ap.add_argument(
        "--ramp-s",
        type=_nonnegative,
        default=2.0,
        help="raters arrive one by one over this many seconds. With several workers, 200 "
        "connections opened at the same instant mostly land on one worker (it accepts a whole "
        "backlog per wake-up) and stay there, since connections are kept alive",
    )
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    tmp = tempfile.mkdtemp(prefix="rlhfkit-load-")
    url = args.database_url or f"sqlite:///{tmp}/load.db"
    schema = None
    if url.startswith("postgres"):
        # A schema of its own, dropped afterwards: the database may be shared.
        url, schema = _fresh_schema(url)
    try:
        return _run(args, url)
    finally:
        if schema:
            _drop_schema(args.database_url, schema)


def _admin_engine(url: str):
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    return create_engine(make_url(url).set(drivername="postgresql+psycopg"))


def _fresh_schema(url: str) -> tuple[str, str]:
    from urllib.parse import quote

    from sqlalchemy import text

    schema = f"rk_load_{uuid.uuid4().hex[:10]}"
    engine = _admin_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine.dispose()
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options={quote('-csearch_path=' + schema)}", schema


def _drop_schema(url: str, schema: str) -> None:
    from sqlalchemy import text

    engine = _admin_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


def _run(args, url: str) -> int:
    items = args.items or max(2000, int(args.raters * args.seconds * 4))
    t0 = time.perf_counter()
    pid, people = setup(url, args.raters, items, args.k)
    setup_s = time.perf_counter() - t0
    server = Server(url, _free_port(), args.workers)
    server.start()
    cpu_at_start = server.cpu_seconds()
    stats = {
        "latency": [],
        "created": 0,
        "replayed": 0,
        "conflicts": 0,
        "errors": 0,
        "retries": 0,
        "reconnects": 0,
        "dry": 0,
    }
    acked: list[str] = []
    restart_s = None
    kill_t = back_t = None  # perf_counter at the kill, and when the restarted server answered
    t_start = time.perf_counter()
    client_cpu_at_start = time.process_time()

    async def run():
        nonlocal restart_s, kill_t, back_t
        job = asyncio.create_task(
            load(
                server.port,
                pid,
                people,
                args.seconds,
                stats,
                acked,
                args.seed,
                args.think_ms / 1000,
                args.ramp_s,
            )
        )
        if args.kill_at > 0:
            await asyncio.sleep(args.seconds * args.kill_at)
            kill_t = time.perf_counter()
            server.kill9()
            restart_s = await asyncio.to_thread(server.start)
            back_t = time.perf_counter()
        await job

    asyncio.run(run())
    elapsed = time.perf_counter() - t_start
    client_cpu = time.process_time() - client_cpu_at_start
    server_cpu = server.cpu_seconds() - (cpu_at_start if args.kill_at == 0 else 0)
    server.stop()
    invariants = check(url, pid, args.k, acked)
    lat = sorted(dt for _, dt in stats["latency"])

    def pct(p, values=lat):
        return (
            round(values[min(len(values) - 1, int(p * len(values)))] * 1000, 2) if values else None
        )

    phases = None
    if kill_t is not None:
        # The restart's tail apart from steady state: every rater's retried submission lands on
        # the fresh server within half a second, so the first seconds after it are a burst.
        settled = back_t + RECOVERY_S
        before = sorted(dt for t, dt in stats["latency"] if t + dt < kill_t)
        recovery = sorted(dt for t, dt in stats["latency"] if t + dt >= kill_t and t < settled)
        after = sorted(dt for t, dt in stats["latency"] if t >= settled)
        phases = {
            "recovery_window_s": RECOVERY_S,
            "p99_before_kill_ms": pct(0.99, before),
            "recovery_requests": len(recovery),
            "recovery_p99_ms": pct(0.99, recovery),
            "recovery_max_ms": pct(1.0, recovery),
            "p99_after_recovery_ms": pct(0.99, after),
        }

    backend = url.split(":", 1)[0].split("+")[0]
    result = {
        "backend": backend,
        "workers": args.workers,
        "raters": args.raters,
        "think_ms": args.think_ms,
        "ramp_s": args.ramp_s,
        "seconds": round(elapsed, 2),
        "judgments": stats["created"],
        "judgments_per_s": round(stats["created"] / elapsed, 1),
        "requests": len(lat),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "lost": invariants["lost"],
        "duplicated": invariants["duplicated"],
        "over_k_items": invariants["over_k"],
        "complete_items": invariants["complete_items"],
        "acknowledged": invariants["acknowledged"],
        "stored": invariants["stored"],
        "replayed_after_kill": stats["replayed"],
        "expired_conflicts": stats["conflicts"],
        "errors": stats["errors"],
        "connection_retries": stats["retries"],
        # keep-alive connections the server ended after a response (RLHFKIT_KEEPALIVE_MAX_S)
        "server_closed_connections": stats["reconnects"],
        "killed_at_s": round(args.seconds * args.kill_at, 1) if args.kill_at > 0 else None,
        "restart_s": round(restart_s, 2) if restart_s is not None else None,
        # latency before the kill, in the RECOVERY_S after the restart, and after that
        "phases": phases,
        "setup_s": round(setup_s, 1),
        # robust to other load on the machine: server CPU per judgment (after any restart)
        "server_cpu_s": round(server_cpu, 2),
        "server_cpu_ms_per_judgment": round(server_cpu * 1000 / max(1, stats["created"]), 2)
        if args.kill_at == 0
        else None,
        # the simulated raters share the machine: what they cost is not the server's to spend
        "client_cpu_ms_per_judgment": round(client_cpu * 1000 / max(1, stats["created"]), 2),
        "cpus": os.cpu_count(),
    }
    summary = (
        f"{backend} x{args.workers}: {result['judgments_per_s']} judgments/s, "
        f"p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, lost {result['lost']}, "
        f"duplicated {result['duplicated']}, over k {result['over_k_items']}, "
        f"server CPU {result['server_cpu_ms_per_judgment']} ms/judgment"
    )
    if phases:
        summary += (
            f"; p99 before the kill {phases['p99_before_kill_ms']} ms, in the {RECOVERY_S:g} s "
            f"after the restart {phases['recovery_p99_ms']} ms, after that "
            f"{phases['p99_after_recovery_ms']} ms"
        )
    print(summary, file=sys.stderr)
    if args.json == "-":
        print(json.dumps(result, indent=2))
    elif args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    ok = result["lost"] == 0 and result["duplicated"] == 0 and result["over_k_items"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

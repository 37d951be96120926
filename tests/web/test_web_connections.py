"""Spreading connections over workers: the keep-alive age limit, and a listening socket of
its own for each worker (SO_REUSEPORT)."""

import asyncio
import os
import pickle
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from rlhfkit.errors import InputError
from rlhfkit.web.connections import KeepAliveCap
from rlhfkit.web.server import PerWorkerSocket, reuseport_socket


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


async def _echo(scope, receive, send):
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"connection", b"keep-alive")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})


def _request(cap, client=("127.0.0.1", 5000)):
    sent = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "client": client, "path": "/", "headers": []}
    asyncio.run(cap(scope, receive, send))
    headers = sent[0]["headers"]
    closes = (b"connection", b"close") in headers
    assert [k for k, _ in headers].count(b"connection") == 1  # replaced, never doubled
    return closes


def test_a_connection_is_ended_by_its_first_request_past_the_age_limit():
    clock = Clock()
    cap = KeepAliveCap(_echo, max_age_s=10, clock=clock)
    a, b = ("127.0.0.1", 5000), ("127.0.0.1", 5001)
    assert not _request(cap, a)  # a is born at 100
    clock.now = 105
    assert not _request(cap, b)  # b is born at 105
    clock.now = 109.9
    assert not _request(cap, a) and not _request(cap, b)
    clock.now = 110.0
    assert _request(cap, a)  # 10 s old: this response says Connection: close
    assert not _request(cap, b)
    assert not _request(cap, a)  # the client came back on the same port: a new connection
    clock.now = 115.0
    assert _request(cap, b)


def test_age_limit_zero_never_closes_and_garbage_is_refused():
    clock = Clock()
    cap = KeepAliveCap(_echo, max_age_s=0, clock=clock)
    for t in range(0, 10_000, 1000):
        clock.now = t
        assert not _request(cap)
    assert cap.born == {}
    for bad in (-1, float("nan")):
        with pytest.raises(ValueError, match="max_age_s"):
            KeepAliveCap(_echo, max_age_s=bad)


def test_addresses_of_gone_connections_are_swept():
    clock = Clock()
    cap = KeepAliveCap(_echo, max_age_s=10, clock=clock)
    largest = 0
    for i in range(20_000):  # connections that each made one request and left, 100 a second
        clock.now = 100 + i * 0.01
        _request(cap, ("10.0.0.1", i))
        largest = max(largest, len(cap.born))
    # about twice what the last 20 s (twice the age limit) brought (2,000), not all 20,000
    assert largest <= 4100
    # the sweep keeps what may still be open: everything under twice the age limit
    assert ("10.0.0.1", 19_999) in cap.born and ("10.0.0.1", 18_100) in cap.born


@pytest.mark.parametrize("value", ["-1", "soon", "1e9"])
def test_garbage_keepalive_setting_names_the_variable(monkeypatch, value):
    from pydantic import ValidationError

    from rlhfkit.settings import get_settings

    monkeypatch.setenv("RLHFKIT_KEEPALIVE_MAX_S", value)
    with pytest.raises(ValidationError, match="keepalive_max_s"):
        get_settings()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_each_worker_gets_a_socket_of_its_own_on_the_same_port():
    port = _free_port()
    first = reuseport_socket("127.0.0.1", port)
    # what a worker receives: the stand-in, unpickled into a fresh bound socket
    second = pickle.loads(pickle.dumps(PerWorkerSocket("127.0.0.1", port)))
    try:
        assert isinstance(second, socket.socket) and second.fileno() != first.fileno()
        assert second.getsockname() == first.getsockname() == ("127.0.0.1", port)
        first.listen()
        second.listen()
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
    finally:
        first.close()
        second.close()


def test_a_port_held_by_another_reuseport_server_is_refused_by_the_plain_check():
    held = reuseport_socket("127.0.0.1", 0)
    held.listen()
    port = held.getsockname()[1]
    try:
        reuseport_socket("127.0.0.1", port).close()  # a second worker's socket: allowed
        with pytest.raises(InputError, match="cannot listen"):
            reuseport_socket("127.0.0.1", port, reuse_port=False)  # what serve checks first
    finally:
        held.close()


def test_the_app_ends_a_connection_past_the_age_limit():
    from fastapi.testclient import TestClient

    from rlhfkit.settings import Settings
    from rlhfkit.web.app import create_app

    app = create_app(Settings(database_url="sqlite://", keepalive_max_s=0.3, secret_key="k"))
    with TestClient(app) as client:  # one client address throughout, as one connection
        assert client.get("/healthz").headers.get("connection") != "close"
        time.sleep(0.35)
        assert client.get("/healthz").headers.get("connection") == "close"
        assert client.get("/healthz").headers.get("connection") != "close"  # a new one


def test_a_port_already_taken_is_a_clear_error():
    with socket.socket() as taken:  # a plain listener, as another program would hold
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(InputError, match=f"--host/--port: cannot listen on 127.0.0.1:{port}"):
            reuseport_socket("127.0.0.1", port)


def _ss(*args: str) -> str:
    return subprocess.run(["ss", "-H", *args], capture_output=True, text=True).stdout


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT spreads on Linux")
@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2) to see the sockets")
def test_serve_with_two_workers_spreads_connections_and_stops_cleanly(tmp_path):
    port = _free_port()
    env = {**os.environ, "RLHFKIT_DATABASE_URL": f"sqlite:///{tmp_path}/served.db"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "rlhfkit.cli", "serve", "--port", str(port), "--workers", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group: the workers can be killed with it
    )
    listeners: set[str] = set()
    try:
        deadline = time.time() + 120  # a loaded 2-core machine
        while len(listeners) < 2:  # both workers listen, each on its own socket
            if time.time() > deadline or proc.poll() is not None:
                os.killpg(proc.pid, signal.SIGKILL)  # first: a live pipe would be read for ever
                pytest.fail(f"workers did not start: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.3)
            listeners = set(re.findall(r"pid=(\d+)", _ss("-tlnp", f"sport = :{port}")))
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            assert client.get("/healthz").json() == {"status": "ok"}
        conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(64)]
        deadline = time.time() + 10
        while True:  # until both workers have accepted every connection
            out = _ss("-tnp", "state", "established", f"sport = :{port}")
            per_worker = [out.count(f"pid={pid},") for pid in listeners]
            if sum(per_worker) == 64 or time.time() > deadline:
                break
            time.sleep(0.1)
        for c in conns:
            c.close()
        assert sum(per_worker) == 64 and min(per_worker) >= 10, per_worker
    finally:
        proc.terminate()
        code = proc.wait(timeout=20)
    assert code == 0
    # where it listens is said once, as uvicorn says it with one worker
    assert f"Uvicorn running on http://127.0.0.1:{port}" in proc.stderr.read().decode()
    for pid in listeners:  # the workers went with the parent
        with pytest.raises(ProcessLookupError):
            os.kill(int(pid), 0)

import json
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

from rlhfkit.cli import main
from rlhfkit.store import (
    JudgmentInput,
    ProjectSettings,
    add_items,
    create_project,
    next_task,
    submit_judgment,
)
from rlhfkit.store.migrate import open_store
from rlhfkit.store.projects import add_member
from rlhfkit.store.users import authenticate, create_user


def test_db_upgrade_and_create_user(tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/cli.db"
    assert main(["db", "upgrade", "--database-url", url]) == 0
    assert json.loads(capsys.readouterr().out) == {"revision": "0002"}
    args = ["admin", "create-user", "--username", "root", "--password", "password1"]
    assert main([*args, "--role", "admin", "--database-url", url]) == 0
    assert authenticate(open_store(url), "root", "password1")["role"] == "admin"
    assert main([*args, "--database-url", url]) == 2
    assert "taken" in capsys.readouterr().err
    assert (
        main(
            [
                "admin",
                "create-user",
                "--username",
                "x y",
                "--password",
                "password1",
                "--database-url",
                url,
            ]
        )
        == 2
    )
    assert main(["db", "upgrade", "--database-url", "mysql://nope"]) == 2


def test_exports_from_the_command_line(tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/cli.db"
    engine = open_store(url)
    pid = create_project(engine, ProjectSettings(name="round one", overlap_k=1))
    add_items(engine, pid, [{"prompt": "q", "response_a": "a", "response_b": "b"}])
    rater = create_user(engine, "r1", "password1")
    add_member(engine, pid, rater)
    task = next_task(engine, pid, rater)
    submit_judgment(engine, task.assignment_id, rater, JudgmentInput("k", "B"))
    out = tmp_path / "prefs.jsonl"
    assert (
        main(
            [
                "export",
                "preferences",
                "--project",
                "round one",
                "--out",
                str(out),
                "--database-url",
                url,
            ]
        )
        == 0
    )
    rec = json.loads(out.read_text())
    assert rec["chosen"] == [{"role": "assistant", "content": "b"}]
    assert (
        main(
            [
                "export",
                "ledger",
                "--out",
                str(tmp_path / "l.csv"),
                "--totals",
                "--database-url",
                url,
            ]
        )
        == 0
    )
    assert "r1" in (tmp_path / "l.csv").read_text()
    assert (
        main(
            [
                "export",
                "demonstrations",
                "--project",
                str(pid),
                "--out",
                str(tmp_path / "d.jsonl"),
                "--database-url",
                url,
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert (
        main(
            ["export", "preferences", "--project", "nope", "--out", str(out), "--database-url", url]
        )
        == 2
    )
    assert (
        main(
            [
                "export",
                "preferences",
                "--project",
                "1",
                "--target-mix",
                "bad",
                "--out",
                str(out),
                "--database-url",
                url,
            ]
        )
        == 2
    )
    assert "target mix" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_migrates_and_answers(tmp_path):
    port = _free_port()
    env = {**os.environ, "RLHFKIT_DATABASE_URL": f"sqlite:///{tmp_path}/served.db"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "rlhfkit.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.time() + 120  # a loaded 2-core machine
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                if time.time() > deadline or proc.poll() is not None:
                    proc.kill()  # first: reading a live server's pipe would wait for ever
                    pytest.fail(f"server did not start: {proc.stderr.read().decode()[-2000:]}")
                time.sleep(0.2)
        assert r.json() == {"status": "ok"}
        assert httpx.get(f"http://127.0.0.1:{port}/openapi.json").status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_serve_picks_asyncio_loop_on_sqlite(tmp_path, monkeypatch):
    """SQLite's hot path runs on the event loop; uvloop starved new connections under full
    load there (docs/platform.md), so serve asks uvicorn for asyncio's loop."""
    import uvicorn

    from rlhfkit.store import make_engine
    from rlhfkit.web.server import event_loop, serve

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: seen.update(options))
    monkeypatch.setenv("RLHFKIT_DATABASE_URL", "sqlite://")  # serve hands its URL on this way
    serve(database_url=f"sqlite:///{tmp_path}/s.db", workers=1)
    assert seen["loop"] == "asyncio"
    assert event_loop(make_engine("postgresql://u@127.0.0.1:1/x")) == "auto"
    # a URI database has no lock file: its hot path takes the lane, so uvloop stays
    assert event_loop(make_engine(f"sqlite:///file:{tmp_path}/u.db?uri=true")) == "auto"


def test_serve_refuses_bad_flags():
    assert main(["serve", "--workers", "0"]) == 2
    assert main(["serve", "--port", "70000"]) == 2


def test_feedback_export_help_and_garbage(tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        main(["feedback", "export", "--help"])
    assert done.value.code == 0 and "--pairs-out" in capsys.readouterr().out
    url = f"sqlite:///{tmp_path}/fb.db"
    out = str(tmp_path / "kto.jsonl")
    assert main(["feedback", "export", "--out", out, "--database-url", url]) == 0
    assert json.loads(capsys.readouterr().out) == {"examples": 0, "out": out}
    assert (tmp_path / "kto.jsonl").read_text() == ""
    for args, message in [
        (["--out", str(tmp_path / "no" / "such" / "dir.jsonl")], "does not exist"),
        (["--out", str(tmp_path)], "directory"),
        (["--out", out, "--model", "x" * 201], "--model"),
        (["--out", out, "--database-url", "mysql://nope"], "database URL"),
    ]:
        if "--database-url" not in args:
            args = [*args, "--database-url", url]
        assert main(["feedback", "export", *args]) == 2, args
        assert message in capsys.readouterr().err

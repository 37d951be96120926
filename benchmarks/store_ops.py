"""CPU cost of the rater hot path in process: submit a judgment and issue the next task.

No HTTP, no server: ``rlhfkit.store.queue.submit_and_next`` called in a loop on a fresh SQLite
database (one project, ``--items`` items with k = 2 and 10 % gold share, ``--raters`` raters
taking turns), the process's CPU time per call and the SQL statements each runs. It isolates
the store's share of the server's CPU per judgment (``benchmarks/platform_load.py``).

    python benchmarks/store_ops.py                 # 20 raters x 50 rounds
    python benchmarks/store_ops.py --json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def measure(raters: int, rounds: int, items: int) -> dict:
    from sqlalchemy import event

    from rlhfkit.store import JudgmentInput, ProjectSettings, add_items, create_project, next_task
    from rlhfkit.store.engine import make_engine
    from rlhfkit.store.migrate import upgrade
    from rlhfkit.store.projects import add_member
    from rlhfkit.store.queue import submit_and_next
    from rlhfkit.store.users import create_user

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'store.db'}"
        upgrade(url)
        engine = make_engine(url)
        pid = create_project(engine, ProjectSettings(name="bench", overlap_k=2, gold_share=0.1))
        rows = [
            {"prompt": f"q{i}", "response_a": f"a{i}", "response_b": f"b{i}"} for i in range(items)
        ]
        rows += [
            {"prompt": f"g{i}", "response_a": "x", "response_b": "y", "gold": "A"}
            for i in range(max(1, items // 60))
        ]
        add_items(engine, pid, rows)
        ids = []
        for i in range(raters):
            uid = create_user(engine, f"rater{i}", "password1")
            add_member(engine, pid, uid)
            ids.append(uid)
        statements = [0]
        event.listen(
            engine,
            "before_cursor_execute",
            lambda *a: statements.__setitem__(0, statements[0] + 1),
        )
        tasks = {r: next_task(engine, pid, r) for r in ids}
        statements[0] = 0
        calls = 0
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(rounds):
            for r in ids:
                task = tasks[r]
                if task is None:
                    continue
                key = f"{r}-{task.assignment_id}"
                labels = {"A": {"helpful": True}}
                data = JudgmentInput(client_key=key, choice="A", labels=labels)
                _, _, tasks[r] = submit_and_next(engine, task.assignment_id, r, data)
                calls += 1
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        engine.dispose()
    if not calls:
        raise SystemExit("store_ops: no task was issued (more --items?)")
    return {
        "calls": calls,
        "cpu_ms_per_call": round(1000 * cpu / calls, 3),
        "wall_ms_per_call": round(1000 * wall / calls, 3),
        "statements_per_call": round(statements[0] / calls, 2),
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--raters", type=int, default=20)
    p.add_argument("--rounds", type=int, default=50)
    p.add_argument("--items", type=int, default=3000)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if min(args.raters, args.rounds, args.items) < 1:
        p.error("--raters, --rounds and --items must be at least 1")
    r = measure(args.raters, args.rounds, args.items)
    if args.json:
        print(json.dumps(r))
    else:
        print(
            f"{r['calls']} submit+next: {r['cpu_ms_per_call']} ms CPU, {r['wall_ms_per_call']} ms "
            f"wall, {r['statements_per_call']} statements each"
        )


if __name__ == "__main__":
    main()

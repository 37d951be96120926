import random
import threading
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import select

from rlhfkit.errors import InputError
from rlhfkit.store import (
    Conflict,
    Forbidden,
    JudgmentInput,
    NotFound,
    ProjectSettings,
    add_items,
    create_project,
    next_task,
    submit_judgment,
)
from rlhfkit.store.projects import add_member, progress
from rlhfkit.store.queue import submit_and_next
from rlhfkit.store.schema import assignments, items, judgments
from rlhfkit.store.users import create_user, now_utc


def _setup(engine, n_items=6, n_raters=4, k=3, gold=(), gold_share=0.0, ttl=600, name="p"):
    pid = create_project(
        engine,
        ProjectSettings(name=name, overlap_k=k, gold_share=gold_share, assignment_ttl_s=ttl),
    )
    rows = [
        {"prompt": f"q{i}", "response_a": f"a{i}", "response_b": f"b{i}"} for i in range(n_items)
    ]
    rows += [
        {"prompt": f"g{i}", "response_a": "good", "response_b": "bad", "gold": g}
        for i, g in enumerate(gold)
    ]
    add_items(engine, pid, rows)
    raters = []
    for i in range(n_raters):
        uid = create_user(engine, f"{name}-rater{i}" if name != "p" else f"rater{i}", "password1")
        add_member(engine, pid, uid)
        raters.append(uid)
    return pid, raters


def _judge_all(engine, pid, rater, rng=None):
    done = []
    while (task := next_task(engine, pid, rater, rng=rng)) is not None:
        choice = "A" if task.responses[0]["id"] == "A" else "B"
        submit_judgment(
            engine,
            task.assignment_id,
            rater,
            JudgmentInput(client_key=f"{rater}-{task.assignment_id}", choice=choice),
        )
        done.append(task.item_id)
    return done


def _check_invariants(engine, pid, k):
    with engine.connect() as conn:
        rows = conn.execute(
            select(judgments.c.item_id, judgments.c.rater_id, items.c.is_gold)
            .join(items, items.c.id == judgments.c.item_id)
            .where(judgments.c.project_id == pid)
        ).all()
        n_ordinary = conn.execute(
            select(items.c.id).where(items.c.project_id == pid, items.c.is_gold.is_(False))
        ).all()
    pairs = Counter((r.item_id, r.rater_id) for r in rows)
    assert max(pairs.values()) == 1, "a rater judged an item twice"
    per_item = Counter(r.item_id for r in rows if not r.is_gold)
    assert len(per_item) == len(n_ordinary)
    assert set(per_item.values()) == {k}, per_item


def test_each_item_gets_exactly_k_judgments_from_k_raters(engine):
    pid, raters = _setup(engine)
    for r in raters:
        seen = _judge_all(engine, pid, r)
        assert len(seen) == len(set(seen))
    _check_invariants(engine, pid, 3)
    p = progress(engine, pid)
    assert p["complete_items"] == 6 and p["judgments"] == 18 and p["done_share"] == 1.0


def _concurrently(raters, work) -> None:
    """Run ``work(rater)`` for every rater in its own thread; re-raise what any of them raised."""
    errors = []

    def guarded(r):
        try:
            work(r)
        except Exception as exc:  # surfaced below with its type
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(r,)) for r in raters]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_queue_invariants_hold_under_concurrent_raters(engine):
    pid, raters = _setup(engine, n_items=30, n_raters=8, k=3)
    _concurrently(raters, lambda r: _judge_all(engine, pid, r, rng=random.Random(r)))
    _check_invariants(engine, pid, 3)


def _judge_all_with_next(engine, pid, rater):
    """The rater page's path: each submit also issues the next task."""
    rng = random.Random(rater)
    task = next_task(engine, pid, rater, rng=rng)
    while task is not None:
        key = JudgmentInput(client_key=f"{rater}-{task.assignment_id}", choice="A")
        _, _, task = submit_and_next(engine, task.assignment_id, rater, key, rng=rng)


def test_queue_invariants_hold_when_judging_and_next_race(engine):
    # On PostgreSQL an item locked by another rater's submit used to be skipped, and a rater
    # with no other candidate was told the queue was empty: about one run in three ended with
    # an item one judgment short.
    for round_ in range(5):
        pid, raters = _setup(engine, n_items=30, n_raters=8, k=3, name=f"race{round_}")
        _concurrently(raters, lambda r, pid=pid: _judge_all_with_next(engine, pid, r))
        _check_invariants(engine, pid, 3)


def test_the_open_task_is_returned_again_until_answered(engine):
    pid, (r, *_) = _setup(engine)
    first = next_task(engine, pid, r)
    again = next_task(engine, pid, r)
    assert first.assignment_id == again.assignment_id
    assert first.shown_order == again.shown_order
    assert [x["id"] for x in first.responses] == list(first.shown_order)


def test_abandoned_tasks_expire_back_into_the_queue(engine):
    pid, raters = _setup(engine, n_items=1, n_raters=4, k=3, ttl=60)
    t0 = now_utc()
    for r in raters[:3]:
        assert next_task(engine, pid, r, now=t0) is not None
    # All three slots are taken, so the fourth rater gets nothing...
    assert next_task(engine, pid, raters[3], now=t0) is None
    # ...until one of them expires.
    later = t0 + timedelta(seconds=61)
    task = next_task(engine, pid, raters[3], now=later)
    assert task is not None
    with engine.connect() as conn:
        statuses = Counter(conn.execute(select(assignments.c.status)).scalars())
    assert statuses == {"expired": 3, "open": 1}
    # The raters whose tasks expired cannot answer late, nor get the same item again.
    stale = conn_task = None
    with engine.connect() as conn:
        stale = conn.execute(
            select(assignments.c.id).where(assignments.c.rater_id == raters[0])
        ).scalar_one()
    with pytest.raises(Conflict, match="expired"):
        submit_judgment(engine, stale, raters[0], JudgmentInput("late", "A"), now=later)
    assert next_task(engine, pid, raters[0], now=later) is None
    del conn_task


def test_gold_items_are_mixed_in_uncapped_and_never_revealed(engine):
    pid, raters = _setup(engine, n_items=20, n_raters=5, k=2, gold=("A", "B"), gold_share=0.5)
    seen_gold = Counter()
    for r in raters:
        rng = random.Random(r)
        while (task := next_task(engine, pid, r, rng=rng)) is not None:
            assert "gold" not in str(task.__dict__).lower()
            if task.prompt[0]["content"].startswith("g"):
                seen_gold[task.item_id] += 1
            submit_judgment(
                engine, task.assignment_id, r, JudgmentInput(f"{r}-{task.item_id}", "tie")
            )
    # Gold items are not capped at k = 2, and nobody meets one twice.
    assert len(seen_gold) == 2
    assert max(seen_gold.values()) > 2 and max(seen_gold.values()) <= 5
    _check_invariants(engine, pid, 2)


def test_submit_is_idempotent_per_client_key(engine):
    pid, (r, other, *_) = _setup(engine)
    task = next_task(engine, pid, r)
    first, created = submit_judgment(engine, task.assignment_id, r, JudgmentInput("key-1", "A"))
    again, created_again = submit_judgment(
        engine, task.assignment_id, r, JudgmentInput("key-1", "A")
    )
    assert created and not created_again and first["id"] == again["id"]
    with pytest.raises(Conflict, match="already judged"):
        submit_judgment(engine, task.assignment_id, r, JudgmentInput("key-2", "B"))
    task2 = next_task(engine, pid, r)
    with pytest.raises(Conflict, match="another task"):
        submit_judgment(engine, task2.assignment_id, r, JudgmentInput("key-1", "A"))
    with engine.connect() as conn:
        assert len(conn.execute(select(judgments.c.id)).all()) == 1


def test_concurrent_retries_store_one_judgment(engine):
    pid, (r, *_) = _setup(engine)
    task = next_task(engine, pid, r)
    results = []

    def submit():
        results.append(submit_judgment(engine, task.assignment_id, r, JudgmentInput("same", "B")))

    threads = [threading.Thread(target=submit) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 6
    assert len({j["id"] for j, _ in results}) == 1
    assert sum(created for _, created in results) == 1


def test_a_rater_cannot_touch_other_raters_tasks_or_foreign_projects(engine):
    pid, (r, other, *_) = _setup(engine)
    task = next_task(engine, pid, r)
    with pytest.raises(NotFound):
        submit_judgment(engine, task.assignment_id, other, JudgmentInput("k", "A"))
    outsider = create_user(engine, "outsider", "password1")
    with pytest.raises(Forbidden):
        next_task(engine, pid, outsider)
    with pytest.raises(NotFound):
        next_task(engine, pid + 100, r)


@pytest.mark.parametrize(
    "data,match",
    [
        (JudgmentInput("k", "C"), "choice"),
        (JudgmentInput("k", None), "choice"),
        (JudgmentInput("k", "tie", strength=2), "strength"),
        (JudgmentInput("k", "A", strength=7), "strength"),
        (JudgmentInput("k", "A", strength=True), "strength"),
        (JudgmentInput("k", "A", labels={"C": {}}), "labels"),
        (JudgmentInput("k", "A", labels={"A": {"funny": True}}), "label set"),
        (JudgmentInput("k", "A", labels={"A": {"helpful": "yes"}}), "true or false"),
        (JudgmentInput("k", "A", labels={"A": []}), "labels.A"),
        (JudgmentInput("k", "A", comment="x" * 2001), "comment"),
        (JudgmentInput("k", "A", time_on_task_ms=-5), "time_on_task_ms"),
        (JudgmentInput("", "A"), "client_key"),
        (JudgmentInput("k" * 65, "A"), "client_key"),
        (JudgmentInput("k", "A", demonstration="text"), "demonstration"),
    ],
)
def test_garbage_judgments_are_refused_and_nothing_is_stored(engine, data, match):
    pid, (r, *_) = _setup(engine)
    task = next_task(engine, pid, r)
    with pytest.raises(InputError, match=match):
        submit_judgment(engine, task.assignment_id, r, data)
    with engine.connect() as conn:
        assert conn.execute(select(judgments.c.id)).all() == []
        status = conn.execute(select(assignments.c.status)).scalar_one()
    assert status == "open"


def test_demonstration_tasks_take_text(engine):
    pid = create_project(engine, ProjectSettings(name="demo", overlap_k=1))
    add_items(engine, pid, [{"prompt": "Write a haiku", "task_type": "demonstration"}])
    r = create_user(engine, "writer", "password1")
    add_member(engine, pid, r)
    task = next_task(engine, pid, r)
    assert task.task_type == "demonstration" and task.responses == []
    with pytest.raises(InputError, match="demonstration"):
        submit_judgment(engine, task.assignment_id, r, JudgmentInput("k", "A"))
    j, _ = submit_judgment(
        engine, task.assignment_id, r, JudgmentInput("k", demonstration="Old pond / frog")
    )
    assert j["demonstration"] == "Old pond / frog"


def test_time_on_task_is_capped_by_the_time_since_issue(engine):
    pid, (r, *_) = _setup(engine)
    t0 = now_utc()
    task = next_task(engine, pid, r, now=t0)
    j, _ = submit_judgment(
        engine,
        task.assignment_id,
        r,
        JudgmentInput("k", "A", time_on_task_ms=10**9),
        now=t0 + timedelta(seconds=20),
    )
    assert j["time_on_task_ms"] == 20_000


def test_one_expiry_pass_frees_every_stale_slot_in_batches(engine, monkeypatch):
    from rlhfkit.store import queue
    from rlhfkit.store.engine import writing

    monkeypatch.setattr(queue, "_EXPIRE_BATCH", 2)
    pid, raters = _setup(engine, n_items=5, n_raters=5, k=1, ttl=60)
    t0 = now_utc()
    for r in raters:
        assert next_task(engine, pid, r, now=t0) is not None
    with writing(engine) as conn:
        assert queue.expire_stale(conn, t0 + timedelta(seconds=61)) == 5  # 2 + 2 + 1


def test_a_slot_that_went_stale_since_the_last_pass_is_found_before_saying_empty(engine):
    pid, raters = _setup(engine, n_items=1, n_raters=3, k=1, ttl=1)
    t0 = now_utc()
    assert next_task(engine, pid, raters[0], now=t0) is not None  # a pass at t0; slot taken
    # a pass at t0 + 1 s: the slot (deadline t0 + 1 s) is not stale yet, so nothing for rater 1
    assert next_task(engine, pid, raters[1], now=t0 + timedelta(seconds=1)) is None
    # half a second later no pass is due, but the slot is stale: it must be found, not "empty"
    task = next_task(engine, pid, raters[2], now=t0 + timedelta(seconds=1.5))
    assert task is not None

"""The task queue: who judges what next, and recording a judgment exactly once.

Invariants (tested under concurrency in tests/store/test_store_queue.py):

- an ordinary item gets exactly ``overlap_k`` judgments, each from a different rater;
- a rater never gets the same item twice (a unique key on (item, rater), even after expiry);
- an assignment not answered within the project's ``assignment_ttl_s`` expires and its slot
  goes back to the queue;
- gold items (known answer) are mixed in with probability ``gold_share``, look like any other
  task, and are not capped at k (every rater may meet each gold item once);
- submitting is idempotent: the same ``client_key`` returns the stored judgment.

On SQLite each call is one transaction (:func:`rlhfkit.store.engine.writing`); the database
write lock serialises them. On PostgreSQL issuing a task is its own transaction, after the
expiry pass (when one is due) and the submitted judgment have committed: a transaction that issues holds no row lock but its
rater's and the one item it takes, so it never waits on a transaction that waits on it. Items are
picked with ``FOR UPDATE SKIP LOCKED``; when every remaining candidate is locked by a concurrent
transaction the rater waits for it to finish rather than being told the queue is empty (which
left items one judgment short, as the concurrency test showed about once in three runs).

Example::

    task = next_task(engine, project_id, rater_id)
    judgment, created = submit_judgment(
        engine, task.assignment_id, rater_id, JudgmentInput(client_key="k1", choice="A")
    )
"""

from __future__ import annotations

import random
import time
import weakref
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, case, exists, insert, select, update
from sqlalchemy.exc import IntegrityError

from rlhfkit.errors import InputError
from rlhfkit.store import limits
from rlhfkit.store.engine import is_sqlite, writing
from rlhfkit.store.errors import Conflict, Forbidden, NotFound
from rlhfkit.store.schema import (
    CHOICES,
    assignments,
    items,
    judgments,
    ledger,
    project_members,
    projects,
    users,
)
from rlhfkit.store.users import now_utc

_EXPIRE_BATCH = 200
_BUSY_WAIT_S = 30.0
"""How long (PostgreSQL) a rater waits for locked candidate items before being told to retry."""
_rng = random.SystemRandom()


def utc(dt: datetime) -> datetime:
    """SQLite hands datetimes back without a zone; all stored times are UTC."""
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


@dataclass
class Task:
    """One issued task as the rater sees it: no gold answer, responses in shown order."""

    assignment_id: int
    item_id: int
    project_id: int
    task_type: str
    prompt: list[dict[str, str]]
    responses: list[dict[str, str]]
    """``[{"id": "A"|"B", "text": ...}]`` left to right; choices refer to the ids."""
    shown_order: str
    label_set: list[str]
    instructions: str
    issued_at: datetime
    expires_at: datetime


@dataclass
class JudgmentInput:
    """What a rater submits for one task."""

    client_key: str
    """Chosen by the client; submitting twice with the same key stores one judgment."""
    choice: str | None = None
    """A, B, tie or both_bad (comparison tasks); A/B name responses, not screen sides."""
    strength: int | None = None
    """1 (slightly better) to 3 (much better); only for A or B."""
    labels: dict[str, dict[str, bool]] = field(default_factory=dict)
    """Per response id ("A"/"B"), label name -> ticked."""
    demonstration: str | None = None
    """The ideal reply (demonstration tasks)."""
    comment: str | None = None
    time_on_task_ms: int | None = None
    """Measured by the page; capped by the time since the task was issued."""


def _lock(query, conn: Connection):
    # SQLite already holds the database write lock (BEGIN IMMEDIATE); Postgres locks rows.
    return query if is_sqlite(conn) else query.with_for_update(skip_locked=True)


def expire_stale(conn: Connection, now: datetime, project_id: int | None = None) -> int:
    """Expire open assignments past their deadline (of one project when ``project_id`` is
    given) and give their slots back, in batches of ``_EXPIRE_BATCH`` until none is left."""
    query = select(assignments.c.id, assignments.c.item_id).where(
        assignments.c.status == "open", assignments.c.expires_at < now
    )
    if project_id is not None:
        query = query.where(assignments.c.project_id == project_id)
    total = 0
    while True:
        stale = conn.execute(_lock(query.limit(_EXPIRE_BATCH), conn)).all()
        if not stale:
            return total
        stale.sort(key=lambda s: s.item_id)  # two expiring transactions lock items in one order
        conn.execute(
            update(assignments)
            .where(assignments.c.id.in_([s.id for s in stale]), assignments.c.status == "open")
            .values(status="expired")
        )
        for s in stale:
            conn.execute(
                update(items)
                .where(items.c.id == s.item_id)
                .values(n_active=items.c.n_active - 1, full=False)
            )
        total += len(stale)
        if len(stale) < _EXPIRE_BATCH:
            return total


# The hot path's statements (submit, then issue the next task) are built once, with bound
# parameters: building a SQLAlchemy statement and its cache key on every call cost more CPU than
# running it on SQLite.
_MEMBERSHIP = (
    exists()
    .where(
        project_members.c.project_id == projects.c.id,
        project_members.c.user_id == bindparam("rater_id"),
    )
    .label("is_member")
)
_PROJECT = select(projects, _MEMBERSHIP).where(projects.c.id == bindparam("project_id"))
_PRIOR = select(judgments).where(judgments.c.client_key == bindparam("client_key"))
_ASSIGNMENT = select(assignments).where(assignments.c.id == bindparam("assignment_id"))
_ASSIGNMENT_LOCKED = _ASSIGNMENT.with_for_update()
_ITEM_AND_PROJECT = (
    select(projects, items.c.task_type.label("item_type"), _MEMBERSHIP)
    .join(items, items.c.project_id == projects.c.id)
    .where(items.c.id == bindparam("item_id"))
)
_INSERT_JUDGMENT = insert(judgments).returning(*judgments.c)
_CLOSE_ASSIGNMENT = (
    update(assignments).where(assignments.c.id == bindparam("a_id")).values(status="done")
)
_COUNT_DONE = update(items).where(items.c.id == bindparam("i_id")).values(n_done=items.c.n_done + 1)
_INSERT_LEDGER = insert(ledger)


def _check_member(project, project_id: int):
    if project is None:
        raise NotFound(f"project {project_id}: no such project")
    if not project.is_member:
        raise Forbidden(f"project {project_id}: you are not a rater on this project")
    return project


def _project_for(conn: Connection, project_id: int, rater_id: int):
    """The project row (with ``is_member``), if ``rater_id`` is one of its raters."""
    project = conn.execute(_PROJECT, {"project_id": project_id, "rater_id": rater_id}).first()
    return _check_member(project, project_id)


_EXPIRY_INTERVAL = timedelta(seconds=1)
_last_expiry: weakref.WeakKeyDictionary[Engine, datetime] = weakref.WeakKeyDictionary()
"""Per engine (in this process): the ``now`` of its last committed expiry pass."""


def _expiry_due(engine: Engine, now: datetime) -> bool:
    """The expiry pass runs at most once a second per process (a stale slot comes back at most
    a second late); a rater about to be told the queue is empty always gets a pass over the
    project first. Record a pass with :func:`_expired` once its transaction has committed."""
    last = _last_expiry.get(engine)
    return last is None or not last <= now < last + _EXPIRY_INTERVAL


def _expired(engine: Engine, now: datetime) -> None:
    _last_expiry[engine] = now


def _task(item, assignment_id: int, shown_order: str, issued_at, expires_at, project) -> Task:
    if item.task_type == "comparison":
        pair = {"A": item.response_a, "B": item.response_b}
        responses = [{"id": side, "text": pair[side]} for side in shown_order]
    else:
        responses = []
    return Task(
        assignment_id=assignment_id,
        item_id=item.id,
        project_id=project.id,
        task_type=item.task_type,
        prompt=item.prompt,
        responses=responses,
        shown_order=shown_order,
        label_set=project.label_set,
        instructions=project.instructions,
        issued_at=utc(issued_at),
        expires_at=utc(expires_at),
    )


def next_task(
    engine: Engine, project_id: int, rater_id: int, *, now: datetime | None = None, rng=None
) -> Task | None:
    """The rater's open task in the project, or a newly issued one; None when nothing is left."""
    now = now or now_utc()
    rng = rng or _rng
    due = _expiry_due(engine, now)
    if is_sqlite(engine):
        with writing(engine) as conn:
            project = _project_for(conn, project_id, rater_id)
            task = _issue_expiring(conn, project, rater_id, now, rng, due)
        if due:
            _expired(engine, now)
        return task
    if due:
        with writing(engine) as conn:
            expire_stale(conn, now)
        _expired(engine, now)
    draw: dict[str, bool] = {}
    with writing(engine) as conn:
        project = _project_for(conn, project_id, rater_id)
        task = _issue(conn, project, rater_id, now, rng, draw)
    if task is None and not due:
        with writing(engine) as conn:
            expire_stale(conn, now, project.id)
        with writing(engine) as conn:
            project = _project_for(conn, project_id, rater_id)
            task = _issue(conn, project, rater_id, now, rng, draw)
    return task


def _issue_expiring(
    conn: Connection, project, rater_id: int, now: datetime, rng, due: bool
) -> Task | None:
    """:func:`_issue` in one transaction with the expiry pass when it is ``due``, or, when
    nothing is left without it, a pass over this project."""
    if due:
        expire_stale(conn, now)
    draw: dict[str, bool] = {}
    task = _issue(conn, project, rater_id, now, rng, draw)
    if task is None and not due:
        expire_stale(conn, now, project.id)
        task = _issue(conn, project, rater_id, now, rng, draw)
    return task


_ITEM_COLUMNS = (
    items.c.id,
    items.c.task_type,
    items.c.prompt,
    items.c.response_a,
    items.c.response_b,
)


_LOCK_RATER = select(users.c.id).where(users.c.id == bindparam("rater_id")).with_for_update()
_MINE = (
    select(assignments, *_ITEM_COLUMNS)
    .join(items, items.c.id == assignments.c.item_id)
    .where(
        assignments.c.rater_id == bindparam("rater_id"),
        assignments.c.project_id == bindparam("project_id"),
        assignments.c.status == "open",
        assignments.c.expires_at > bindparam("now"),
    )
    .order_by(assignments.c.id)
    .limit(1)
)
_SEEN = exists().where(
    assignments.c.item_id == items.c.id, assignments.c.rater_id == bindparam("rater_id")
)
_CANDIDATES = select(*_ITEM_COLUMNS).where(items.c.project_id == bindparam("project_id"), ~_SEEN)
_ORDINARY = (
    _CANDIDATES.where(items.c.is_gold.is_(False), items.c.full.is_(False))
    .order_by(items.c.id)
    .limit(1)
)
_GOLD = _CANDIDATES.where(items.c.is_gold.is_(True)).order_by(items.c.id).limit(1)
_PICKS = {  # (query, locked variant)
    "ordinary": (_ORDINARY, _ORDINARY.with_for_update(skip_locked=True)),
    "gold": (_GOLD, _GOLD.with_for_update(skip_locked=True)),
}
_TAKE_SLOT = (
    update(items)
    .where(items.c.id == bindparam("i_id"))
    .values(
        n_active=items.c.n_active + 1,
        full=case((items.c.is_gold, False), else_=items.c.n_active + 1 >= bindparam("k")),
    )
)
_INSERT_ASSIGNMENT = insert(assignments).returning(assignments.c.id)


def _issue(
    conn: Connection, project, rater_id: int, now: datetime, rng, draw: dict | None = None
) -> Task | None:
    """Issue the rater's open task or a new one. ``draw`` keeps the gold-or-ordinary draw
    across a retry in the same request (one draw per request, as the gold share says)."""
    if not is_sqlite(conn):
        # Serialise one rater's own requests (two tabs) without blocking anyone else.
        conn.execute(_LOCK_RATER, {"rater_id": rater_id})
    where = {"rater_id": rater_id, "project_id": project.id}
    mine = conn.execute(_MINE, {**where, "now": now}).first()
    if mine is not None:
        item = _ItemView(mine.item_id, *mine[-4:])
        return _task(item, mine.id, mine.shown_order, mine.issued_at, mine.expires_at, project)

    draw = {} if draw is None else draw
    if "gold_first" not in draw:
        draw["gold_first"] = rng.random() < project.gold_share
    order = ["gold", "ordinary"] if draw["gold_first"] else ["ordinary"]
    item = None
    for kind in order:
        item = _pick(conn, *_PICKS[kind], where)
        if item is not None:
            break
    if item is None:
        return None

    conn.execute(_TAKE_SLOT, {"i_id": item.id, "k": project.overlap_k})
    shown_order = rng.choice(["AB", "BA"])
    expires_at = now + timedelta(seconds=project.assignment_ttl_s)
    assignment_id = conn.execute(
        _INSERT_ASSIGNMENT,
        {
            "item_id": item.id,
            "rater_id": rater_id,
            "project_id": project.id,
            "issued_at": now,
            "expires_at": expires_at,
            "status": "open",
            "shown_order": shown_order,
        },
    ).scalar_one()
    return _task(item, assignment_id, shown_order, now, expires_at, project)


def _pick(conn: Connection, query, locked, params: dict):
    """The first row of ``query``, locked; None only when no candidate is left at all."""
    if is_sqlite(conn):
        return conn.execute(query, params).first()
    deadline = time.monotonic() + _BUSY_WAIT_S
    delay = 0.002
    while True:
        row = conn.execute(locked, params).first()
        if row is not None:
            return row
        # Nothing unlocked. Candidates locked by others (an item being judged or issued right
        # now) may still need this rater once that transaction ends: wait for it to.
        if conn.execute(query, params).first() is None:
            return None
        if time.monotonic() > deadline:
            raise Conflict("the queue is busy: ask for the next task again")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


@dataclass
class _ItemView:
    id: int
    task_type: str
    prompt: list
    response_a: str | None
    response_b: str | None


def _validate(data: JudgmentInput, task_type: str, label_set: list[str]) -> dict[str, Any]:
    key = limits.text(data.client_key, "client_key", limits.CLIENT_KEY)
    comment = limits.text(data.comment, "comment", limits.COMMENT, required=False)
    row: dict[str, Any] = {"client_key": key, "comment": comment, "choice": None, "strength": None}
    if task_type == "comparison":
        if data.choice not in CHOICES:
            raise InputError(f"choice: expected one of {', '.join(CHOICES)}, got {data.choice!r}")
        row["choice"] = data.choice
        if data.strength is not None:
            if data.choice not in ("A", "B"):
                raise InputError("strength: only given when A or B is chosen")
            if isinstance(data.strength, bool) or data.strength not in (1, 2, 3):
                raise InputError(f"strength: expected 1, 2 or 3, got {data.strength!r}")
            row["strength"] = data.strength
        if data.demonstration:
            raise InputError("demonstration: not part of a comparison task")
        labels = data.labels or {}
        if not isinstance(labels, dict) or set(labels) - {"A", "B"}:
            raise InputError("labels: expected an object keyed by response id A and/or B")
        clean: dict[str, dict[str, bool]] = {}
        for side, marks in labels.items():
            if not isinstance(marks, dict):
                raise InputError(f"labels.{side}: expected an object of label: true/false")
            for name, value in marks.items():
                if name not in label_set:
                    raise InputError(
                        f"labels.{side}.{str(name)[:64]}: not in this project's label set "
                        f"({', '.join(label_set)})"
                    )
                if not isinstance(value, bool):
                    raise InputError(f"labels.{side}.{name}: expected true or false")
            clean[side] = dict(marks)
        row["labels"] = clean
        row["demonstration"] = None
    else:
        if data.choice is not None or data.strength is not None or data.labels:
            raise InputError("choice/strength/labels: a demonstration task takes only text")
        row["demonstration"] = limits.text(
            data.demonstration, "demonstration", limits.DEMONSTRATION
        )
        row["labels"] = {}
    t = data.time_on_task_ms
    if t is not None and (isinstance(t, bool) or not isinstance(t, int) or t < 0):
        raise InputError(f"time_on_task_ms: expected a whole number >= 0, got {t!r}")
    return row


def judgment_public(row) -> dict[str, Any]:
    """A stored judgment as its own rater may see it."""
    m = dict(row._mapping) if hasattr(row, "_mapping") else dict(row)
    m["created_at"] = utc(m["created_at"])
    return m


def submit_judgment(
    engine: Engine,
    assignment_id: int,
    rater_id: int,
    data: JudgmentInput,
    *,
    now: datetime | None = None,
) -> tuple[dict[str, Any], bool]:
    """Store a judgment for an open assignment of ``rater_id``, pay for it, close the task.

    Returns ``(judgment, created)``; ``created`` is False when ``client_key`` was already used
    for this same assignment (a retry), in which case the first judgment is returned unchanged.
    """
    judgment, created, _ = submit_and_next(
        engine, assignment_id, rater_id, data, now=now, then_next=False
    )
    return judgment, created


def submit_and_next(
    engine: Engine,
    assignment_id: int,
    rater_id: int,
    data: JudgmentInput,
    *,
    now: datetime | None = None,
    then_next: bool = True,
    rng=None,
) -> tuple[dict[str, Any], bool, Task | None]:
    """:func:`submit_judgment`, then :func:`next_task` in the same project (one click on the
    rater's page: judge, see the next pair): one transaction on SQLite; on PostgreSQL the
    judgment commits before the next task is issued (see the module docstring)."""
    now = now or now_utc()

    one_transaction = is_sqlite(engine)  # see the module docstring for PostgreSQL
    due = then_next and one_transaction and _expiry_due(engine, now)

    def run(conn):
        judgment, created, project = _submit(conn, assignment_id, rater_id, data, now)
        following = None
        if then_next and one_transaction:
            if project is None:  # a retry: the project was not read
                project = _project_for(conn, judgment["project_id"], rater_id)
            else:
                project = _check_member(project, judgment["project_id"])
            following = _issue_expiring(conn, project, rater_id, now, rng or _rng, due)
        return judgment, created, following

    try:
        with writing(engine) as conn:
            judgment, created, following = run(conn)
    except IntegrityError:
        # A concurrent retry with the same key won the race on Postgres: return its result.
        with writing(engine) as conn:
            judgment, created, following = run(conn)
    if due:
        _expired(engine, now)  # committed
    if then_next and not one_transaction:
        following = next_task(engine, judgment["project_id"], rater_id, now=now, rng=rng)
    return judgment, created, following


def _submit(conn: Connection, assignment_id: int, rater_id: int, data: JudgmentInput, now):
    """Store the judgment: ``(judgment, created, project)``, where ``project`` is the project
    row with the rater's ``is_member`` when it was read (None for a retry)."""
    key = limits.text(data.client_key, "client_key", limits.CLIENT_KEY)
    prior = conn.execute(_PRIOR, {"client_key": key}).first()
    if prior is not None:
        if prior.assignment_id == assignment_id and prior.rater_id == rater_id:
            return judgment_public(prior), False, None
        raise Conflict("client_key: already used for another task; use a fresh key per task")
    query = _ASSIGNMENT if is_sqlite(conn) else _ASSIGNMENT_LOCKED
    a = conn.execute(query, {"assignment_id": assignment_id}).first()
    if a is None or a.rater_id != rater_id:
        raise NotFound(f"assignment {assignment_id}: no such task of yours")
    if a.status == "done":
        # A concurrent retry may have committed while this one waited for the row lock.
        stored = conn.execute(select(judgments).where(judgments.c.assignment_id == a.id)).first()
        if stored is not None and stored.client_key == key:
            return judgment_public(stored), False, None
        raise Conflict(f"assignment {assignment_id}: already judged (under another client_key)")
    if a.status == "expired" or utc(a.expires_at) <= now:
        raise Conflict(f"assignment {assignment_id}: expired; ask for the next task")
    # the item's type, its project and whether the rater is still one of its raters
    project = conn.execute(_ITEM_AND_PROJECT, {"item_id": a.item_id, "rater_id": rater_id}).one()
    row = _validate(data, project.item_type, project.label_set)
    elapsed_ms = int((now - utc(a.issued_at)).total_seconds() * 1000)
    claimed = data.time_on_task_ms
    row["time_on_task_ms"] = max(0, min(claimed, elapsed_ms) if claimed is not None else elapsed_ms)
    stored = conn.execute(
        _INSERT_JUDGMENT,
        {
            "assignment_id": a.id,
            "item_id": a.item_id,
            "rater_id": rater_id,
            "project_id": a.project_id,
            "shown_order": a.shown_order,
            "created_at": now,
            **row,
        },
    ).one()
    conn.execute(_CLOSE_ASSIGNMENT, {"a_id": a.id})
    conn.execute(_COUNT_DONE, {"i_id": a.item_id})
    demo = project.item_type == "demonstration"
    conn.execute(
        _INSERT_LEDGER,
        {
            "rater_id": rater_id,
            "project_id": a.project_id,
            "judgment_id": stored.id,
            "kind": "demonstration" if demo else "task",
            "amount_cents": (
                project.pay_per_demonstration_cents if demo else project.pay_per_comparison_cents
            ),
            "note": "",
            "created_at": now,
        },
    )
    return judgment_public(stored), True, project


def rater_judgments(engine: Engine, rater_id: int, project_id: int | None = None) -> list[dict]:
    """A rater's own judgments, newest first."""
    query = select(judgments).where(judgments.c.rater_id == rater_id)
    if project_id is not None:
        query = query.where(judgments.c.project_id == project_id)
    with engine.connect() as conn:
        return [judgment_public(r) for r in conn.execute(query.order_by(judgments.c.id.desc()))]


def project_judgments(engine: Engine, project_id: int) -> list[dict]:
    """All judgments of a project (admin views and exports), oldest first."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(judgments).where(judgments.c.project_id == project_id).order_by(judgments.c.id)
        )
        return [judgment_public(r) for r in rows]


__all__ = [
    "JudgmentInput",
    "Task",
    "expire_stale",
    "next_task",
    "submit_and_next",
    "submit_judgment",
]

"""The pay ledger: one entry per paid task (written with the judgment), bonuses, totals and the
effective hourly rate (pay / time on task) checked against each project's minimum wage.

Example::

    add_bonus(engine, rater_id, project_id, 250, "careful work")
    for row in pay_summary(engine, project_id=pid):
        print(row["username"], row["total_cents"], row["hourly_cents"], row["below_minimum"])
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, insert, select

from rlhfkit.errors import InputError
from rlhfkit.store import limits
from rlhfkit.store.engine import reading, writing
from rlhfkit.store.errors import NotFound
from rlhfkit.store.schema import judgments, ledger, projects, users
from rlhfkit.store.users import now_utc


def add_bonus(
    engine: Engine, rater_id: int, project_id: int, amount_cents: int, note: str = ""
) -> int:
    """Credit a bonus to a rater within a project; returns the entry id."""
    if isinstance(amount_cents, bool) or not isinstance(amount_cents, int):
        raise InputError(f"amount_cents: expected a whole number of cents, got {amount_cents!r}")
    if not 0 < amount_cents <= 10_000_000:
        raise InputError(f"amount_cents: expected 1 to 10000000, got {amount_cents}")
    limits.text(note, "note", limits.NOTE, required=False)
    with writing(engine) as conn:
        user = conn.execute(select(users.c.role).where(users.c.id == rater_id)).first()
        if user is None:
            raise NotFound(f"user {rater_id}: no such user")
        if conn.execute(select(projects.c.id).where(projects.c.id == project_id)).first() is None:
            raise NotFound(f"project {project_id}: no such project")
        return conn.execute(
            insert(ledger)
            .values(
                rater_id=rater_id,
                project_id=project_id,
                kind="bonus",
                amount_cents=amount_cents,
                note=note or "",
                created_at=now_utc(),
            )
            .returning(ledger.c.id)
        ).scalar_one()


def hourly_cents(total_cents: int, time_ms: int) -> float | None:
    """Effective pay per hour in cents; None before any time was recorded."""
    if time_ms <= 0:
        return None
    return total_cents * 3_600_000 / time_ms


def pay_summary(
    engine: Engine, *, project_id: int | None = None, rater_id: int | None = None
) -> list[dict[str, Any]]:
    """Totals per (rater, project): tasks, pay, bonuses, time, hourly rate, minimum-wage flag."""
    money = select(
        ledger.c.rater_id,
        ledger.c.project_id,
        func.count().filter(ledger.c.kind == "task").label("tasks"),
        func.count().filter(ledger.c.kind == "demonstration").label("demonstrations"),
        func.coalesce(func.sum(ledger.c.amount_cents).filter(ledger.c.kind != "bonus"), 0).label(
            "task_cents"
        ),
        func.coalesce(func.sum(ledger.c.amount_cents).filter(ledger.c.kind == "bonus"), 0).label(
            "bonus_cents"
        ),
    ).group_by(ledger.c.rater_id, ledger.c.project_id)
    time = select(
        judgments.c.rater_id,
        judgments.c.project_id,
        func.coalesce(func.sum(judgments.c.time_on_task_ms), 0).label("time_ms"),
    ).group_by(judgments.c.rater_id, judgments.c.project_id)
    if project_id is not None:
        money = money.where(ledger.c.project_id == project_id)
        time = time.where(judgments.c.project_id == project_id)
    if rater_id is not None:
        money = money.where(ledger.c.rater_id == rater_id)
        time = time.where(judgments.c.rater_id == rater_id)
    with reading(engine) as conn:
        times = {(r.rater_id, r.project_id): int(r.time_ms) for r in conn.execute(time)}
        names = dict(conn.execute(select(users.c.id, users.c.username)).all())
        projs = {r.id: r for r in conn.execute(select(projects))}
        out = []
        for r in conn.execute(money):
            time_ms = times.get((r.rater_id, r.project_id), 0)
            total = int(r.task_cents) + int(r.bonus_cents)
            rate = hourly_cents(total, time_ms)
            minimum = projs[r.project_id].min_hourly_wage_cents
            out.append(
                {
                    "rater_id": r.rater_id,
                    "username": names.get(r.rater_id, "?"),
                    "project_id": r.project_id,
                    "project": projs[r.project_id].name,
                    "tasks": r.tasks,
                    "demonstrations": r.demonstrations,
                    "task_cents": int(r.task_cents),
                    "bonus_cents": int(r.bonus_cents),
                    "total_cents": total,
                    "time_s": time_ms / 1000,
                    "hourly_cents": rate,
                    "min_hourly_wage_cents": minimum,
                    "below_minimum": rate is not None and rate < minimum,
                }
            )
    return sorted(out, key=lambda r: (r["project_id"], r["username"]))


LEDGER_COLUMNS = ["id", "created_at", "rater_id", "username", "project_id", "kind"]
LEDGER_COLUMNS += ["amount_cents", "judgment_id", "note"]


def export_ledger_csv(
    engine: Engine, out: str | Path, *, project_id: int | None = None, totals: bool = False
) -> int:
    """Write the ledger's entries (or, with ``totals``, :func:`pay_summary`) as CSV."""
    out = Path(out)
    if totals:
        rows = pay_summary(engine, project_id=project_id)
        columns = list(rows[0]) if rows else ["rater_id", "username", "total_cents"]
    else:
        query = (
            select(*[ledger.c[c] for c in LEDGER_COLUMNS if c != "username"], users.c.username)
            .join(users, users.c.id == ledger.c.rater_id)
            .order_by(ledger.c.id)
        )
        if project_id is not None:
            query = query.where(ledger.c.project_id == project_id)
        with reading(engine) as conn:
            rows = [dict(r) for r in conn.execute(query).mappings()]
        columns = LEDGER_COLUMNS
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            # A leading = + - @ would run as a formula in spreadsheet software.
            writer.writerow({k: _csv_safe(v) for k, v in row.items()})
    tmp.replace(out)
    return len(rows)


def _csv_safe(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value

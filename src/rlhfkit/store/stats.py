"""Dashboard figures per rater and per group: counts, time, pay, agreement with peers, gold
accuracy, position bias and speed flags.

The full quality models (Dawid-Skene trust, kappas) live in ``rlhfkit.raters``; these are the
quick, explainable numbers an admin watches while a project runs.

Example::

    for row in rater_stats(engine, project_id):
        print(row["username"], row["agreement"], row["gold_accuracy"], row["flags"])
"""

from __future__ import annotations

from collections import Counter, defaultdict
from statistics import median
from typing import Any

from sqlalchemy import Engine, select

from rlhfkit.store.engine import reading
from rlhfkit.store.errors import NotFound
from rlhfkit.store.schema import PROFILE_FIELDS, items, judgments, ledger, users

FAST_MEDIAN_MS = 3_000
"""A rater whose median time per comparison is under this is flagged as fast."""
BIASED_SHARE = 0.75
"""Choosing the left (or right) response this often, over 10+ choices, is flagged."""


def rater_stats(engine: Engine, project_id: int) -> list[dict[str, Any]]:
    """One row per rater who judged in the project."""
    with reading(engine) as conn:
        rows = conn.execute(
            select(
                judgments.c.rater_id,
                judgments.c.item_id,
                judgments.c.choice,
                judgments.c.shown_order,
                judgments.c.time_on_task_ms,
                items.c.gold_answer,
            )
            .join(items, items.c.id == judgments.c.item_id)
            .where(judgments.c.project_id == project_id)
        ).all()
        pay_totals: Counter[int] = Counter()
        for rid, cents in conn.execute(
            select(ledger.c.rater_id, ledger.c.amount_cents).where(
                ledger.c.project_id == project_id
            )
        ):
            pay_totals[rid] += cents
        names = dict(conn.execute(select(users.c.id, users.c.username)).all())
    by_item: dict[int, list[str]] = defaultdict(list)
    for r in rows:
        if r.choice is not None:
            by_item[r.item_id].append(r.choice)
    per_rater: dict[int, list] = defaultdict(list)
    for r in rows:
        per_rater[r.rater_id].append(r)
    out = []
    for rid, mine in per_rater.items():
        agree = []
        gold = []
        left = right = 0
        for r in mine:
            if r.choice is None:
                continue
            others = list(by_item[r.item_id])
            others.remove(r.choice)
            if others:
                agree.append(sum(o == r.choice for o in others) / len(others))
            if r.gold_answer is not None:
                gold.append(r.choice == r.gold_answer)
            if r.choice in ("A", "B"):
                if r.choice == r.shown_order[0]:
                    left += 1
                else:
                    right += 1
        times = [r.time_on_task_ms for r in mine]
        flags = []
        med = median(times) if times else 0
        if times and med < FAST_MEDIAN_MS:
            flags.append("fast")
        left_share = left / (left + right) if left + right else None
        if (
            left_share is not None
            and left + right >= 10
            and (left_share >= BIASED_SHARE or left_share <= 1 - BIASED_SHARE)
        ):
            flags.append("position bias")
        gold_acc = sum(gold) / len(gold) if gold else None
        if gold_acc is not None and len(gold) >= 5 and gold_acc < 0.5:
            flags.append("gold errors")
        out.append(
            {
                "rater_id": rid,
                "username": names.get(rid, "?"),
                "judgments": len(mine),
                "time_s": sum(times) / 1000,
                "median_ms": med,
                "earned_cents": pay_totals[rid],
                "agreement": sum(agree) / len(agree) if agree else None,
                "gold_accuracy": gold_acc,
                "gold_seen": len(gold),
                "left_share": left_share,
                "flags": flags,
            }
        )
    return sorted(out, key=lambda r: r["username"])


def group_shares(engine: Engine, project_id: int, attribute: str) -> dict[str, float]:
    """Share of the project's judgments by the raters' self-described ``attribute``.

    Raters who gave no consent (or left the field empty) count as "undisclosed".
    """
    if attribute not in PROFILE_FIELDS:
        raise NotFound(f"attribute {attribute!r}: expected one of {', '.join(PROFILE_FIELDS)}")
    with reading(engine) as conn:
        rows = conn.execute(
            select(users.c.profile_consent, users.c[attribute])
            .join(judgments, judgments.c.rater_id == users.c.id)
            .where(judgments.c.project_id == project_id)
        ).all()
    counts = Counter(group_of(consent, value) for consent, value in rows)
    total = sum(counts.values())
    return {g: n / total for g, n in sorted(counts.items())} if total else {}


def group_of(consent: bool, value: str | None) -> str:
    return value if consent and value else "undisclosed"

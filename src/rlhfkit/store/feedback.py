"""End users' thumbs up / down on chat replies, kept for training as unpaired feedback.

Example::

    add_feedback(engine, [{"role": "user", "content": "Hi"}], "Hello!", thumbs=1, model="policy-v2")
    export_feedback(engine, "kto.jsonl")     # TRL unpaired: prompt, completion, label
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, insert, select

from rlhfkit.data.records import Example
from rlhfkit.errors import InputError
from rlhfkit.store import limits
from rlhfkit.store.engine import reading, writing
from rlhfkit.store.schema import feedback
from rlhfkit.store.users import now_utc


def add_feedback(
    engine: Engine,
    conversation: Any,
    reply: str,
    *,
    thumbs: int,
    model: str,
    comment: str | None = None,
    user_id: int | None = None,
) -> int:
    """Record one thumbs up (1) or down (-1) on ``reply`` to ``conversation``; returns its id."""
    messages = limits.messages(conversation, "conversation")
    limits.text(reply, "reply", limits.RESPONSE, allow_empty=True)
    if isinstance(thumbs, bool) or thumbs not in (1, -1):
        raise InputError(f"thumbs: expected 1 (up) or -1 (down), got {thumbs!r}")
    limits.text(model, "model", limits.MODEL)
    limits.text(comment, "comment", limits.COMMENT, required=False)
    with writing(engine) as conn:
        return conn.execute(
            insert(feedback)
            .values(
                user_id=user_id,
                conversation=messages,
                reply=reply,
                thumbs=thumbs,
                comment=comment or None,
                model=model,
                created_at=now_utc(),
            )
            .returning(feedback.c.id)
        ).scalar_one()


def feedback_examples(engine: Engine, model: str | None = None) -> list[Example]:
    """Stored feedback as unpaired examples (label True = thumbs up)."""
    query = select(feedback).order_by(feedback.c.id)
    if model is not None:
        query = query.where(feedback.c.model == model)
    with reading(engine) as conn:
        rows = conn.execute(query).all()
    return [
        Example(
            prompt=r.conversation,
            completion=r.reply,
            label=r.thumbs > 0,
            rater_id=f"user-{r.user_id}" if r.user_id is not None else None,
            item_id=f"feedback-{r.id}",
            source=f"rlhfkit-store:feedback/{r.id}",
            meta={"model": r.model, "comment": r.comment},
        )
        for r in rows
    ]


def export_feedback(engine: Engine, out: str | Path, model: str | None = None) -> int:
    """Write feedback as TRL unpaired jsonl (``prompt``, ``completion``, ``label``)."""
    from rlhfkit.data.trl import example_record

    examples = feedback_examples(engine, model)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    with tmp.open("w", encoding="utf-8") as fh:
        for example in examples:
            fh.write(json.dumps(example_record(example), ensure_ascii=False) + "\n")
    tmp.replace(out)
    return len(examples)

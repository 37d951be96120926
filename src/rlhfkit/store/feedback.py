"""End users' thumbs up / down on chat replies, kept for training.

Two training sets come out of it: every rating as unpaired feedback (KTO: ``prompt``,
``completion``, ``label``), and, where the same prompt got a liked and a disliked reply,
preference pairs (DPO / reward model: ``prompt``, ``chosen``, ``rejected``).

Example::

    add_feedback(engine, [{"role": "user", "content": "Hi"}], "Hello!", thumbs=1, model="policy-v2")
    rate_completion(engine, "chatcmpl-...", user, thumbs=-1, comment="rude")
    export_feedback_files(engine, "kto.jsonl", pairs_out="pairs.jsonl")
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, case, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from rlhfkit.data.records import Example, PreferencePair
from rlhfkit.errors import InputError
from rlhfkit.store import limits
from rlhfkit.store.chat import get_completion
from rlhfkit.store.engine import reading, writing
from rlhfkit.store.errors import NotFound
from rlhfkit.store.schema import completions, feedback
from rlhfkit.store.users import now_utc

MAX_PAIRS_PER_PROMPT = 50
"""A prompt many people asked (\"Hi\") would otherwise contribute liked x disliked pairs and
swamp the rest; beyond this many, its pairs are dropped (the unpaired export keeps them all)."""
RATINGS = {"up": 1, "down": -1}


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


def rate_completion(
    engine: Engine,
    public_id: str,
    user: dict[str, Any],
    *,
    thumbs: int,
    comment: str | None = None,
) -> dict[str, Any]:
    """Rate a completion: its owner (or an admin) says up (1) or down (-1), with an optional
    comment. Rating again replaces the earlier rating. Returns the stored rating.

    Someone else's completion is NotFound, so ids cannot be probed."""
    if isinstance(thumbs, bool) or thumbs not in (1, -1):
        raise InputError(f"rating: expected up or down, got {thumbs!r}")
    limits.text(comment, "comment", limits.COMMENT, required=False)
    completion = get_completion(engine, public_id)
    if user.get("role") != "admin" and completion["user_id"] != user["id"]:
        raise NotFound(f"completion {public_id!r}: not found")
    values = dict(
        user_id=user["id"],
        conversation=completion["prompt"],
        reply=completion["reply"],
        thumbs=thumbs,
        comment=comment or None,
        model=completion["model"],
        created_at=now_utc(),
    )
    for _attempt in range(2):
        try:
            with writing(engine) as conn:
                changed = conn.execute(
                    update(feedback)
                    .where(feedback.c.completion_id == completion["id"])
                    .values(**values)
                ).rowcount
                if not changed:
                    conn.execute(insert(feedback).values(completion_id=completion["id"], **values))
            break
        except IntegrityError:  # a concurrent first rating won the insert: update it instead
            continue
    return {
        "completion_id": public_id,
        "rating": "up" if thumbs > 0 else "down",
        "comment": comment or None,
        "model": completion["model"],
    }


def feedback_counts(engine: Engine) -> list[dict[str, Any]]:
    """Per model: thumbs up, thumbs down, comments and the share liked; most rated first."""
    up = func.sum(case((feedback.c.thumbs > 0, 1), else_=0))
    commented = func.sum(case((feedback.c.comment.is_not(None), 1), else_=0))
    query = (
        select(feedback.c.model, func.count().label("total"), up.label("up"), commented)
        .group_by(feedback.c.model)
        .order_by(func.count().desc(), feedback.c.model)
    )
    with reading(engine) as conn:
        rows = conn.execute(query).all()
    return [
        {
            "model": r.model,
            "total": r.total,
            "up": int(r.up or 0),
            "down": r.total - int(r.up or 0),
            "comments": int(r[3] or 0),
            "liked_share": int(r.up or 0) / r.total,
        }
        for r in rows
    ]


def _rows(engine: Engine, model: str | None):
    query = (
        select(feedback, completions.c.public_id)
        .outerjoin(completions, completions.c.id == feedback.c.completion_id)
        .order_by(feedback.c.id)
    )
    if model is not None:
        query = query.where(feedback.c.model == model)
    with reading(engine) as conn:
        return conn.execute(query).all()


def feedback_examples(engine: Engine, model: str | None = None) -> list[Example]:
    """Stored feedback as unpaired examples (label True = thumbs up)."""
    return [
        Example(
            prompt=r.conversation,
            completion=r.reply,
            label=r.thumbs > 0,
            rater_id=f"user-{r.user_id}" if r.user_id is not None else None,
            item_id=f"feedback-{r.id}",
            source=f"rlhfkit-store:feedback/{r.id}",
            meta={"model": r.model, "comment": r.comment, "completion_id": r.public_id},
        )
        for r in _rows(engine, model)
    ]


def feedback_pairs(engine: Engine, model: str | None = None) -> list[PreferencePair]:
    """Preference pairs from prompts that got both a liked and a disliked reply.

    Prompts match when their messages are identical. Every distinct liked reply is paired with
    every distinct disliked reply (identical texts are never paired with themselves), at most
    ``MAX_PAIRS_PER_PROMPT`` per prompt, in the order the ratings came in."""
    groups: dict[str, dict[str, dict[str, Any]]] = defaultdict(lambda: {"up": {}, "down": {}})
    prompts: dict[str, list] = {}
    for r in _rows(engine, model):
        key = json.dumps(r.conversation, sort_keys=True, ensure_ascii=False)
        prompts[key] = r.conversation
        side = groups[key]["up" if r.thumbs > 0 else "down"]
        side.setdefault(r.reply, r)  # the first rating of a text stands for it
    pairs = []
    for key, sides in groups.items():
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
        made = 0
        for liked_text, liked in sides["up"].items():
            for disliked_text, disliked in sides["down"].items():
                if liked_text == disliked_text or made >= MAX_PAIRS_PER_PROMPT:
                    continue
                made += 1
                same_user = liked.user_id is not None and liked.user_id == disliked.user_id
                pairs.append(
                    PreferencePair(
                        prompt=prompts[key],
                        chosen=liked_text,
                        rejected=disliked_text,
                        rater_id=f"user-{liked.user_id}" if same_user else None,
                        item_id=f"feedback-prompt-{digest}",
                        source=f"rlhfkit-store:feedback/{liked.id}+{disliked.id}",
                        meta={
                            "model_chosen": liked.model,
                            "model_rejected": disliked.model,
                            "feedback_ids": [liked.id, disliked.id],
                            "raters": [
                                f"user-{x.user_id}" if x.user_id is not None else None
                                for x in (liked, disliked)
                            ],
                        },
                    )
                )
    return pairs


def export_feedback(engine: Engine, out: str | Path, model: str | None = None) -> int:
    """Write feedback as TRL unpaired jsonl (``prompt``, ``completion``, ``label``)."""
    from rlhfkit.data import write_examples_jsonl

    return _write(feedback_examples(engine, model), out, write_examples_jsonl)


def export_feedback_pairs(engine: Engine, out: str | Path, model: str | None = None) -> int:
    """Write :func:`feedback_pairs` as TRL preference jsonl (``prompt``, ``chosen``,
    ``rejected``)."""
    from rlhfkit.data import write_preferences_jsonl

    return _write(feedback_pairs(engine, model), out, write_preferences_jsonl)


def _write(records: list, out: str | Path, writer) -> int:
    # The data writers refuse to write nothing; like the platform's other exports, no
    # feedback yet is an empty file, so that scripts can always read the output.
    out = Path(out)
    if records:
        return writer(records, out)
    if out.is_dir():
        raise InputError(f"{out}: is a directory; expected an output file path")
    if not out.parent.is_dir():
        raise InputError(f"{out}: folder {out.parent} does not exist; expected an existing folder")
    tmp = out.with_name(f".{out.name}.part")
    try:
        tmp.write_bytes(b"")
        tmp.replace(out)
    except OSError as exc:
        raise InputError(f"{out}: cannot write here ({exc.strerror})") from None
    return 0


def export_feedback_files(
    engine: Engine,
    out: str | Path,
    pairs_out: str | Path | None = None,
    model: str | None = None,
) -> dict[str, Any]:
    """What ``rlhfkit feedback export`` runs: the unpaired file, and the pairs file when asked.

    Example::

        export_feedback_files(engine, "kto.jsonl", pairs_out="dpo.jsonl", model="ppo-concise")
        # {"examples": 120, "out": "kto.jsonl", "pairs": 14, "pairs_out": "dpo.jsonl"}
    """
    if model is not None:
        limits.text(model, "--model", limits.MODEL)
    result: dict[str, Any] = {"examples": export_feedback(engine, out, model), "out": str(out)}
    if pairs_out is not None:
        result["pairs"] = export_feedback_pairs(engine, pairs_out, model)
        result["pairs_out"] = str(pairs_out)
    return result

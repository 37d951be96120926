"""Conversations on the chat page and the completions a served model produced.

A completion is one reply to one list of messages, from the chat page or the OpenAI-compatible
endpoint; its random ``public_id`` ("chatcmpl-...") is what clients see and what feedback
names. A conversation's turns are completions; retrying a turn adds another completion with
the same turn number, and the latest one is what the conversation continues from.

Example::

    cid = create_conversation(engine, user_id, "tiny", "First chat")
    add_completion(engine, new_public_id(), model="tiny", prompt=[{"role": "user",
                   "content": "Hi"}], reply="Hello", user_id=user_id, conversation_id=cid, turn=0)
    history(engine, cid)   # [{"role": "user", "content": "Hi"}, {"role": "assistant", ...}]
"""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import Engine, func, insert, select

from rlhfkit.errors import InputError
from rlhfkit.store import limits
from rlhfkit.store.engine import reading, writing
from rlhfkit.store.errors import NotFound
from rlhfkit.store.schema import COMPLETION_SOURCES, completions, conversations, feedback
from rlhfkit.store.users import now_utc

FINISH_REASONS = ("stop", "length")


def new_public_id() -> str:
    """A fresh, unguessable completion id in OpenAI's style."""
    return "chatcmpl-" + secrets.token_hex(12)


def create_conversation(engine: Engine, user_id: int, model: str, title: str = "") -> int:
    """Start a conversation of ``user_id`` with ``model``; returns its id."""
    limits.text(model, "model", limits.MODEL)
    title = (title or "").strip() or "New chat"
    limits.text(title, "title", limits.NAME)
    with writing(engine) as conn:
        return conn.execute(
            insert(conversations)
            .values(user_id=user_id, model=model, title=title, created_at=now_utc())
            .returning(conversations.c.id)
        ).scalar_one()


def list_conversations(engine: Engine, user_id: int, limit: int = 50) -> list[dict[str, Any]]:
    """The user's conversations, newest first, with their number of replies."""
    replies = (
        select(func.count())
        .where(completions.c.conversation_id == conversations.c.id)
        .scalar_subquery()
    )
    query = (
        select(conversations, replies.label("replies"))
        .where(conversations.c.user_id == user_id)
        .order_by(conversations.c.id.desc())
        .limit(limit)
    )
    with reading(engine) as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def get_conversation(engine: Engine, conversation_id: int, user_id: int) -> dict[str, Any]:
    """A conversation of ``user_id``; someone else's is NotFound (its existence is private)."""
    with reading(engine) as conn:
        row = conn.execute(
            select(conversations).where(conversations.c.id == conversation_id)
        ).first()
    if row is None or row.user_id != user_id:
        raise NotFound(f"conversation {conversation_id}: not found")
    return dict(row._mapping)


def set_title(engine: Engine, conversation_id: int, title: str) -> None:
    """Name a conversation (the chat page uses the first message)."""
    title = " ".join(title.split())[:80] or "New chat"
    with writing(engine) as conn:
        conn.execute(
            conversations.update().where(conversations.c.id == conversation_id).values(title=title)
        )


def add_completion(
    engine: Engine,
    public_id: str,
    *,
    model: str,
    prompt: Any,
    reply: str,
    finish_reason: str = "stop",
    params: dict[str, Any] | None = None,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    source: str = "api",
    user_id: int | None = None,
    conversation_id: int | None = None,
    turn: int | None = None,
) -> int:
    """Record a completion; returns its row id."""
    limits.text(public_id, "public_id", limits.CLIENT_KEY)
    messages = limits.messages(prompt, "prompt")
    limits.text(reply, "reply", limits.RESPONSE, allow_empty=True)
    limits.text(model, "model", limits.MODEL)
    if finish_reason not in FINISH_REASONS:
        raise InputError(f"finish_reason: expected one of {', '.join(FINISH_REASONS)}")
    if source not in COMPLETION_SOURCES:
        raise InputError(f"source: expected one of {', '.join(COMPLETION_SOURCES)}")
    with writing(engine) as conn:
        return conn.execute(
            insert(completions)
            .values(
                public_id=public_id,
                conversation_id=conversation_id,
                turn=turn,
                user_id=user_id,
                model=model,
                prompt=messages,
                reply=reply,
                finish_reason=finish_reason,
                params=params or {},
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                source=source,
                created_at=now_utc(),
            )
            .returning(completions.c.id)
        ).scalar_one()


def get_completion(engine: Engine, public_id: str) -> dict[str, Any]:
    """The completion with this public id, or NotFound."""
    if not isinstance(public_id, str) or len(public_id) > limits.CLIENT_KEY:
        raise NotFound("completion: not found")
    with reading(engine) as conn:
        row = conn.execute(select(completions).where(completions.c.public_id == public_id)).first()
    if row is None:
        raise NotFound(f"completion {public_id!r}: not found")
    return dict(row._mapping)


def turns(engine: Engine, conversation_id: int) -> list[dict[str, Any]]:
    """Each completion of the conversation in order (turn, then try), with its rating
    (``thumbs`` 1, -1 or None, and ``comment``)."""
    query = (
        select(completions, feedback.c.thumbs, feedback.c.comment)
        .outerjoin(feedback, feedback.c.completion_id == completions.c.id)
        .where(completions.c.conversation_id == conversation_id)
        .order_by(completions.c.turn, completions.c.id)
    )
    with reading(engine) as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def history(engine: Engine, conversation_id: int) -> tuple[list[dict[str, str]], int]:
    """(messages so far, next turn number). The latest completion holds the whole
    conversation: its prompt was built from everything before it, then its reply."""
    with reading(engine) as conn:
        last = conn.execute(
            select(completions.c.prompt, completions.c.reply, completions.c.turn)
            .where(completions.c.conversation_id == conversation_id)
            .order_by(completions.c.turn.desc(), completions.c.id.desc())
            .limit(1)
        ).first()
    if last is None:
        return [], 0
    # A blank reply is left out: a conversation holds no empty messages (the store refuses
    # them), and the next message simply follows the user's previous one.
    reply = [{"role": "assistant", "content": last.reply}] if last.reply.strip() else []
    return [*last.prompt, *reply], last.turn + 1


def last_prompt(engine: Engine, conversation_id: int) -> tuple[list[dict[str, str]], int]:
    """(the prompt of the last turn, its turn number): what a retry answers again."""
    with reading(engine) as conn:
        last = conn.execute(
            select(completions.c.prompt, completions.c.turn)
            .where(completions.c.conversation_id == conversation_id)
            .order_by(completions.c.turn.desc(), completions.c.id.desc())
            .limit(1)
        ).first()
    if last is None:
        raise InputError("retry: the conversation has no reply to retry yet")
    return list(last.prompt), last.turn

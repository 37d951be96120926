"""The chat page: any signed-in user picks a model, talks to it, and rates every reply.

- ``GET /chat``: the user's conversations, a new-chat form and, on a first visit, "What
  personality do you want?" with the personality specs and the command that trains one.
- ``GET /chat/{id}``: a conversation; ``static/chat.js`` sends messages and shows the reply as
  it streams.
- ``POST /chat/api/{id}/messages``: one reply, streamed as server-sent events (``start``,
  ``delta``..., then ``done`` or ``error``); JSON ``{"message"}`` or ``{"retry": true}`` (another
  reply to the last message), with the session's CSRF token in ``X-CSRF-Token``.
- ``POST /chat/api/feedback``: thumbs up / down and a comment on a reply.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Form, Header, HTTPException, Request
from fastapi.responses import RedirectResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from rlhfkit.store import chat as store_chat
from rlhfkit.store import limits
from rlhfkit.store.feedback import RATINGS, rate_completion
from rlhfkit.web.deps import EngineDep, Id, PageUser, check_csrf, render
from rlhfkit.web.serving import GenerationParams

router = APIRouter()
Csrf = Annotated[str | None, Header(alias="X-CSRF-Token", max_length=100)]
CHAT_MAX_TOKENS = 512
"""Longest reply the chat page asks for."""


class MessageCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    message: Annotated[str, StringConstraints(max_length=limits.MESSAGE)] = ""
    retry: bool = False
    temperature: float = Field(0.7, ge=0, le=2)
    max_tokens: int = Field(200, ge=1, le=CHAT_MAX_TOKENS)


class ReplyRating(BaseModel):
    model_config = ConfigDict(extra="forbid")
    completion_id: Annotated[str, StringConstraints(min_length=1, max_length=limits.CLIENT_KEY)]
    rating: str = Field(pattern="^(up|down)$")
    comment: Annotated[str, StringConstraints(max_length=limits.COMMENT)] | None = None


def personalities(models) -> list[dict[str, Any]]:
    """Each built-in personality spec with the served models trained towards it."""
    from rlhfkit.errors import InputError
    from rlhfkit.personality.spec import builtin_specs, load_spec

    out = []
    for name in builtin_specs():
        try:
            spec = load_spec(name)
        except InputError:  # a broken spec file is shown nowhere rather than breaking the page
            continue
        trained = [m.name for m in models if m.personality == spec.name]
        out.append({"name": spec.name, "description": spec.description, "models": trained})
    return out


@router.get("/chat")
def chat_home(request: Request, user: PageUser, engine: EngineDep, welcome: bool = False):
    models = request.app.state.models.available()
    conversations = store_chat.list_conversations(engine, user["id"])
    first_visit = not conversations
    return render(
        request,
        "chat_home.html",
        user,
        models=models,
        conversations=conversations,
        personalities=personalities(models) if first_visit or welcome else None,
        first_visit=first_visit,
    )


@router.post("/chat")
def new_conversation(
    request: Request,
    user: PageUser,
    engine: EngineDep,
    csrf_token: Annotated[str, Form(max_length=100)] = "",
    model: Annotated[str, Form(max_length=limits.MODEL)] = "",
):
    check_csrf(user, csrf_token)
    served = request.app.state.models.resolve(model)
    cid = store_chat.create_conversation(engine, user["id"], served.name)
    return RedirectResponse(f"/chat/{cid}", status_code=303)


@router.get("/chat/{conversation_id}")
def conversation_page(request: Request, conversation_id: Id, user: PageUser, engine: EngineDep):
    conversation = store_chat.get_conversation(engine, conversation_id, user["id"])
    turns: list[dict[str, Any]] = []
    for row in store_chat.turns(engine, conversation_id):
        if not turns or turns[-1]["turn"] != row["turn"]:
            turns.append({"turn": row["turn"], "user": row["prompt"][-1]["content"], "replies": []})
        turns[-1]["replies"].append(row)
    return render(
        request,
        "chat.html",
        user,
        conversation=conversation,
        turns=turns,
        conversations=store_chat.list_conversations(engine, user["id"]),
        max_tokens=CHAT_MAX_TOKENS,
    )


def _event(kind: str, **data: Any) -> str:
    return f"data: {json.dumps({'type': kind, **data}, ensure_ascii=False)}\n\n"


@router.post("/chat/api/{conversation_id}/messages")
def send_message(
    request: Request,
    conversation_id: Id,
    body: MessageCreate,
    user: PageUser,
    engine: EngineDep,
    csrf: Csrf = None,
):
    check_csrf(user, csrf)
    conversation = store_chat.get_conversation(engine, conversation_id, user["id"])
    if body.retry:
        prompt, turn = store_chat.last_prompt(engine, conversation_id)
    else:
        text = limits.text(body.message, "message", limits.MESSAGE)
        history, turn = store_chat.history(engine, conversation_id)
        if len(history) + 1 > limits.MESSAGES:
            raise HTTPException(422, "this conversation is full: start a new chat")
        prompt = [*history, {"role": "user", "content": text}]
    params = GenerationParams(max_tokens=body.max_tokens, temperature=body.temperature)
    # Errors (unknown model, load failure) are raised here, before the stream starts. A long
    # conversation keeps its latest messages rather than failing.
    job = request.app.state.models.prepare(
        conversation["model"], prompt, params, keep_last_tokens=True
    )
    public_id = store_chat.new_public_id()

    def events() -> Iterator[str]:
        yield _event("start", completion_id=public_id, model=conversation["model"], turn=turn)
        try:
            for piece in job.stream():
                yield _event("delta", text=piece)
            store_chat.add_completion(
                engine,
                public_id,
                model=conversation["model"],
                prompt=prompt,
                reply=job.text,
                finish_reason=job.finish_reason,
                params=job.params_used(),
                prompt_tokens=job.prompt_tokens,
                completion_tokens=job.completion_tokens,
                source="chat",
                user_id=user["id"],
                conversation_id=conversation_id,
                turn=turn,
            )
            if turn == 0 and not body.retry:
                store_chat.set_title(engine, conversation_id, prompt[-1]["content"])
        except Exception as exc:  # the stream has started: report it there
            yield _event("error", message=f"the reply failed ({exc.__class__.__name__})")
            return
        yield _event("done", completion_id=public_id, finish_reason=job.finish_reason)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.post("/chat/api/feedback")
def rate_reply(body: ReplyRating, user: PageUser, engine: EngineDep, csrf: Csrf = None):
    check_csrf(user, csrf)
    return rate_completion(
        engine, body.completion_id, user, thumbs=RATINGS[body.rating], comment=body.comment
    )

"""OpenAI-compatible endpoints: ``/v1/models``, ``/v1/chat/completions`` (whole or streamed as
server-sent events) and ``/v1/feedback`` (thumbs on a completion id).

Any OpenAI client works with a platform API token as its key::

    client = openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key=TOKEN)
    reply = client.chat.completions.create(model="tiny", messages=[{"role": "user",
                                           "content": "Hi"}], max_tokens=32)
    requests.post(".../v1/feedback", json={"completion_id": reply.id, "rating": "down"})

Errors come back in OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}`` (see
``rlhfkit.web.app``); every completion is stored with its id so that feedback can follow.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from rlhfkit.store import chat as store_chat
from rlhfkit.store import limits
from rlhfkit.store.feedback import RATINGS, rate_completion
from rlhfkit.web.deps import CurrentUser, EngineDep
from rlhfkit.web.serving import (
    MAX_TOKENS,
    ContextTooLong,
    GenerationParams,
    ModelRegistry,
    ReplyJob,
)

router = APIRouter(prefix="/v1", tags=["openai"])

MAX_MESSAGES = limits.MESSAGES
MAX_PROMPT_CHARS = 60_000
"""Largest sum of message lengths in one request."""
DEFAULT_MAX_TOKENS = 256


class OpenAIError(Exception):
    """A request error answered in OpenAI's error shape."""

    def __init__(
        self, status: int, message: str, param: str | None = None, code: str | None = None
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: str
    text: Annotated[str, StringConstraints(max_length=limits.MESSAGE)] | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Annotated[str, StringConstraints(max_length=32)]
    content: (
        Annotated[str, StringConstraints(max_length=limits.MESSAGE)]
        | Annotated[list[TextPart], Field(max_length=64)]
        | None
    ) = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class ChatCompletionCreate(BaseModel):
    """The request body of ``POST /v1/chat/completions`` (other OpenAI fields are ignored)."""

    model_config = ConfigDict(extra="ignore")
    model: Annotated[str, StringConstraints(max_length=limits.MODEL)]
    messages: Annotated[list[ChatMessage], Field(max_length=4 * MAX_MESSAGES)]
    max_tokens: int | None = Field(None, ge=1, le=1_000_000)
    max_completion_tokens: int | None = Field(None, ge=1, le=1_000_000)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    n: int | None = Field(None, ge=1, le=128)
    stop: (
        Annotated[str, StringConstraints(max_length=100)]
        | Annotated[list[Annotated[str, StringConstraints(max_length=100)]], Field(max_length=4)]
        | None
    ) = None
    stream: bool = False
    stream_options: StreamOptions | None = None


class FeedbackCreate(BaseModel):
    """Thumbs up or down on a completion you received, with an optional comment."""

    model_config = ConfigDict(extra="forbid")
    completion_id: Annotated[str, StringConstraints(min_length=1, max_length=limits.CLIENT_KEY)]
    rating: Literal["up", "down"]
    comment: Annotated[str, StringConstraints(max_length=limits.COMMENT)] | None = None


class FeedbackPublic(BaseModel):
    completion_id: str
    rating: str
    comment: str | None
    model: str


class ModelPublic(BaseModel):
    id: str
    object: str = "model"
    created: int
    owned_by: str = "rlhfkit"
    personality: str | None = None


class ModelList(BaseModel):
    object: str = "list"
    data: list[ModelPublic]


def _registry(request: Request) -> ModelRegistry:
    return request.app.state.models


def _public(model) -> ModelPublic:
    return ModelPublic(id=model.name, created=model.created, personality=model.personality)


@router.get("/models", response_model=ModelList)
def list_models(request: Request, user: CurrentUser) -> ModelList:
    """The models served here: default, tiny and the trained runs (or those ``--models``
    allows)."""
    return ModelList(data=[_public(m) for m in _registry(request).available()])


@router.get("/models/{model:path}", response_model=ModelPublic)
def get_model(
    request: Request, user: CurrentUser, model: Annotated[str, PathParam(max_length=500)]
) -> ModelPublic:
    return _public(_registry(request).resolve(model))


def messages_of(body: ChatCompletionCreate) -> list[dict[str, str]]:
    """OpenAI messages as rlhfkit's: text only; ``developer`` is a system message."""
    if not body.messages:
        raise OpenAIError(400, "messages: must not be empty", "messages")
    if len(body.messages) > MAX_MESSAGES:
        raise OpenAIError(
            400,
            f"messages: {len(body.messages)} messages, at most {MAX_MESSAGES} allowed",
            "messages",
        )
    out = []
    for i, msg in enumerate(body.messages):
        role = "system" if msg.role == "developer" else msg.role
        if role not in limits.ROLES_IN_PROMPT:
            raise OpenAIError(
                400,
                f"messages[{i}].role: {msg.role[:32]!r} is not supported; expected system,"
                " developer, user or assistant",
                f"messages[{i}].role",
            )
        content = msg.content
        if isinstance(content, list):
            if any(part.type != "text" or part.text is None for part in content):
                raise OpenAIError(
                    400, f"messages[{i}].content: only text parts are supported", "messages"
                )
            content = "".join(part.text or "" for part in content)
        if not content or not content.strip():
            raise OpenAIError(400, f"messages[{i}].content: must not be empty", "messages")
        if not limits.is_storable(content):
            raise OpenAIError(400, f"messages[{i}].content: not valid text", "messages")
        out.append({"role": role, "content": content})
    total = sum(len(m["content"]) for m in out)
    if total > MAX_PROMPT_CHARS:
        raise OpenAIError(
            400,
            f"messages: {total} characters, at most {MAX_PROMPT_CHARS} allowed",
            "messages",
            "context_length_exceeded",
        )
    return out


def params_of(body: ChatCompletionCreate) -> GenerationParams:
    if body.n not in (None, 1):
        raise OpenAIError(400, "n: only 1 choice per request is supported", "n")
    max_tokens = body.max_completion_tokens or body.max_tokens or DEFAULT_MAX_TOKENS
    if max_tokens > MAX_TOKENS:
        field = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
        raise OpenAIError(400, f"{field}: {max_tokens}, at most {MAX_TOKENS} allowed", field)
    stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    return GenerationParams(
        max_tokens=max_tokens,
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        seed=body.seed,
        stop=tuple(s for s in stop if s),
    )


def _store(engine, job: ReplyJob, public_id: str, messages, user_id: int) -> None:
    store_chat.add_completion(
        engine,
        public_id,
        model=job.served.name,
        prompt=messages,
        reply=job.text,
        finish_reason=job.finish_reason,
        params=job.params_used(),
        prompt_tokens=job.prompt_tokens,
        completion_tokens=job.completion_tokens,
        source="api",
        user_id=user_id,
    )


def _usage(job: ReplyJob) -> dict[str, int]:
    return {
        "prompt_tokens": job.prompt_tokens,
        "completion_tokens": job.completion_tokens,
        "total_tokens": job.prompt_tokens + job.completion_tokens,
    }


@router.post(
    "/chat/completions",
    responses={
        200: {"description": "A chat.completion object, or chat.completion.chunk events"},
        400: {"description": "Bad request (OpenAI error shape)"},
        404: {"description": "Unknown model"},
    },
)
def chat_completions(
    request: Request, body: ChatCompletionCreate, user: CurrentUser, engine: EngineDep
):
    """Generate a reply; ``stream: true`` sends ``chat.completion.chunk`` events, then
    ``data: [DONE]``. The completion id can be rated with ``POST /v1/feedback``."""
    messages = messages_of(body)
    params = params_of(body)
    try:
        job = _registry(request).prepare(body.model, messages, params)
    except ContextTooLong as exc:
        raise OpenAIError(400, str(exc), "messages", "context_length_exceeded") from None
    public_id = store_chat.new_public_id()
    created = int(time.time())
    if not body.stream:
        job.run()
        _store(engine, job, public_id, messages, user["id"])
        return {
            "id": public_id,
            "object": "chat.completion",
            "created": created,
            "model": job.served.name,
            "system_fingerprint": None,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": job.text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": job.finish_reason,
                }
            ],
            "usage": _usage(job),
        }
    include_usage = bool(body.stream_options and body.stream_options.include_usage)

    def _head() -> dict[str, Any]:
        return {
            "id": public_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": job.served.name,
            "system_fingerprint": None,
        }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return f"data: {json.dumps({**_head(), 'choices': [choice]}, ensure_ascii=False)}\n\n"

    def events() -> Iterator[str]:
        # Starlette iterates this in a worker thread, so generation never blocks the loop.
        yield chunk({"role": "assistant", "content": ""})
        try:
            for piece in job.stream():
                yield chunk({"content": piece})
            _store(engine, job, public_id, messages, user["id"])
        except Exception as exc:  # headers are gone: report in the stream, as OpenAI does
            error = {
                "message": f"generation failed: {exc.__class__.__name__}",
                "type": "server_error",
            }
            yield f"data: {json.dumps({'error': error})}\n\n"
            return
        yield chunk({}, job.finish_reason)
        if include_usage:  # OpenAI's last chunk: no choices, the usage
            usage = {**_head(), "choices": [], "usage": _usage(job)}
            yield f"data: {json.dumps(usage)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.post("/feedback", response_model=FeedbackPublic)
def post_feedback(body: FeedbackCreate, user: CurrentUser, engine: EngineDep) -> dict:
    """Thumbs up or down (and a comment) on a completion you received; rating it again
    replaces the earlier rating."""
    return rate_completion(
        engine, body.completion_id, user, thumbs=RATINGS[body.rating], comment=body.comment
    )

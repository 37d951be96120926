"""Request and response bodies of the JSON API, named by role (``JudgmentCreate``,
``TaskPublic``). Every string has a length limit taken from :mod:`rlhfkit.store.limits`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from rlhfkit.store import limits

Short = Annotated[str, StringConstraints(max_length=limits.PROFILE)]
Choice = Literal["A", "B", "tie", "both_bad"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TokenRequest(Strict):
    username: Annotated[str, StringConstraints(min_length=1, max_length=limits.USERNAME)]
    password: Annotated[str, StringConstraints(min_length=1, max_length=limits.PASSWORD)]


class TokenPublic(BaseModel):
    token: str
    token_type: str = "bearer"


class UserCreate(Strict):
    username: Annotated[str, StringConstraints(min_length=1, max_length=limits.USERNAME)]
    password: Annotated[str, StringConstraints(min_length=8, max_length=limits.PASSWORD)]
    role: Literal["admin", "rater"] = "rater"


class UserPublic(BaseModel):
    id: int
    username: str
    role: str


class ProfileUpdate(Strict):
    consent: bool = Field(description="Without consent nothing is stored.")
    country: Short | None = None
    languages: Short | None = None
    age_band: Short | None = None
    gender: Short | None = None
    education: Short | None = None
    expertise: Short | None = None


class ProfilePublic(BaseModel):
    consent: bool
    country: str | None = None
    languages: str | None = None
    age_band: str | None = None
    gender: str | None = None
    education: str | None = None
    expertise: str | None = None


class MePublic(UserPublic):
    profile: ProfilePublic


class ProjectCreate(Strict):
    name: Annotated[str, StringConstraints(min_length=1, max_length=limits.NAME)]
    instructions: Annotated[str, StringConstraints(max_length=limits.INSTRUCTIONS)] = (
        "Read the conversation, then choose the better reply."
    )
    label_set: Annotated[
        list[Annotated[str, StringConstraints(max_length=limits.LABEL)]],
        Field(max_length=limits.LABELS),
    ] = Field(
        default_factory=lambda: ["helpful", "harmful", "evasive", "polite", "honest", "verbose"]
    )
    overlap_k: int = Field(3, ge=1, le=100)
    gold_share: float = Field(0.1, ge=0, le=1)
    pay_per_comparison_cents: int = Field(10, ge=0, le=1_000_000)
    pay_per_demonstration_cents: int = Field(50, ge=0, le=1_000_000)
    min_hourly_wage_cents: int = Field(1500, ge=0, le=1_000_000)
    assignment_ttl_s: int = Field(1800, ge=1, le=7 * 86400)


class ProjectPublic(BaseModel):
    id: int
    name: str
    instructions: str
    label_set: list[str]
    overlap_k: int
    gold_share: float
    pay_per_comparison_cents: int
    pay_per_demonstration_cents: int
    min_hourly_wage_cents: int
    assignment_ttl_s: int


class Message(Strict):
    role: Literal["system", "user", "assistant"]
    content: Annotated[str, StringConstraints(max_length=limits.MESSAGE)]


class ItemCreate(Strict):
    prompt: (
        Annotated[str, StringConstraints(max_length=limits.MESSAGE)]
        | Annotated[list[Message], Field(min_length=1, max_length=limits.MESSAGES)]
    )
    response_a: Annotated[str, StringConstraints(max_length=limits.RESPONSE)] | None = None
    response_b: Annotated[str, StringConstraints(max_length=limits.RESPONSE)] | None = None
    gold: Choice | None = None
    task_type: Literal["comparison", "demonstration"] = "comparison"
    source: Annotated[str, StringConstraints(max_length=limits.SOURCE)] | None = None


class ItemsCreate(Strict):
    items: Annotated[list[ItemCreate], Field(min_length=1, max_length=10_000)]


class ItemsAdded(BaseModel):
    added: int


class ItemAdmin(BaseModel):
    """An item as an admin sees it, gold answer included."""

    id: int
    project_id: int
    task_type: str
    prompt: list[dict[str, str]]
    response_a: str | None
    response_b: str | None
    gold_answer: str | None
    n_done: int
    adjudication: str | None


class Adjudication(Strict):
    answer: Choice | None


class MemberAdd(Strict):
    user_id: int = Field(ge=1, le=2_147_483_647)


class ResponsePublic(BaseModel):
    id: Literal["A", "B"]
    text: str


class TaskPublic(BaseModel):
    """A task as its rater sees it: responses in the order shown, no gold answer."""

    assignment_id: int
    item_id: int
    project_id: int
    task_type: str
    prompt: list[dict[str, str]]
    responses: list[ResponsePublic]
    label_set: list[str]
    instructions: str
    issued_at: datetime
    expires_at: datetime


LabelMarks = Annotated[
    dict[Annotated[str, StringConstraints(max_length=limits.LABEL)], bool],
    Field(max_length=limits.LABELS),
]


class JudgmentCreate(Strict):
    client_key: Annotated[str, StringConstraints(min_length=1, max_length=limits.CLIENT_KEY)] = (
        Field(description="Fresh per task; resubmitting with the same key stores nothing new.")
    )
    choice: Choice | None = None
    strength: int | None = Field(None, ge=1, le=3)
    labels: dict[Literal["A", "B"], LabelMarks] = Field(default_factory=dict)
    demonstration: Annotated[str, StringConstraints(max_length=limits.DEMONSTRATION)] | None = None
    comment: Annotated[str, StringConstraints(max_length=limits.COMMENT)] | None = None
    time_on_task_ms: int | None = Field(None, ge=0, le=7 * 86400 * 1000)


class JudgmentPublic(BaseModel):
    id: int
    assignment_id: int
    item_id: int
    project_id: int
    rater_id: int
    choice: str | None
    strength: int | None
    labels: dict[str, Any]
    demonstration: str | None
    comment: str | None
    shown_order: str
    time_on_task_ms: int
    client_key: str
    created_at: datetime


class SubmitResult(BaseModel):
    judgment: JudgmentPublic
    created: bool = Field(description="False when this client_key was already stored.")
    next: TaskPublic | None = Field(None, description="The next task, when ?next=true.")


class BonusCreate(Strict):
    rater_id: int = Field(ge=1, le=2_147_483_647)
    project_id: int = Field(ge=1, le=2_147_483_647)
    amount_cents: int = Field(ge=1, le=10_000_000)
    note: Annotated[str, StringConstraints(max_length=limits.NOTE)] = ""


class PaySummary(BaseModel):
    rater_id: int
    username: str
    project_id: int
    project: str
    tasks: int
    demonstrations: int
    task_cents: int
    bonus_cents: int
    total_cents: int
    time_s: float
    hourly_cents: float | None
    min_hourly_wage_cents: int
    below_minimum: bool


class RaterStats(BaseModel):
    rater_id: int
    username: str
    judgments: int
    time_s: float
    median_ms: float
    earned_cents: int
    agreement: float | None
    gold_accuracy: float | None
    gold_seen: int
    left_share: float | None
    flags: list[str]


class Progress(BaseModel):
    items: int
    gold_items: int
    complete_items: int
    judgments: int
    overlap_k: int
    done_share: float


class Problem(BaseModel):
    detail: str

"""The platform's tables (SQLAlchemy Core), one ``MetaData`` that Alembic migrates.

Money is kept in integer cents so that ledger sums are exact. Text columns have a hard length
limit (see :mod:`rlhfkit.store.limits`) checked before any write, so a too-long field is an
``InputError`` naming the field, never a truncated row.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

# Stable constraint names so that migrations can refer to them on every backend.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

ROLES = ("admin", "rater")
TASK_TYPES = ("comparison", "demonstration")
CHOICES = ("A", "B", "tie", "both_bad")
ASSIGNMENT_STATUSES = ("open", "done", "expired")
LEDGER_KINDS = ("task", "demonstration", "bonus")
PROFILE_FIELDS = ("country", "languages", "age_band", "gender", "education", "expertise")

site = Table(
    "site",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
    comment="Process-independent settings, e.g. the cookie signing key when none is configured.",
)

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("password_hash", String(255), nullable=False),
    Column("role", String(16), nullable=False),
    Column("active", Boolean, nullable=False, default=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # Optional, self-described, given only with consent; all cleared when consent is withdrawn.
    Column("profile_consent", Boolean, nullable=False, default=False),
    Column("country", String(100)),
    Column("languages", String(100)),
    Column("age_band", String(100)),
    Column("gender", String(100)),
    Column("education", String(100)),
    Column("expertise", String(100)),
    CheckConstraint("role IN ('admin', 'rater')", name="role"),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    # Only a SHA-256 of the token is stored; the token itself is shown once.
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("name", String(100), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked", Boolean, nullable=False, default=False),
)

projects = Table(
    "projects",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("instructions", Text, nullable=False),
    Column("label_set", JSON, nullable=False),
    Column("overlap_k", Integer, nullable=False),
    Column("gold_share", Float, nullable=False),
    Column("pay_per_comparison_cents", Integer, nullable=False),
    Column("pay_per_demonstration_cents", Integer, nullable=False),
    Column("min_hourly_wage_cents", Integer, nullable=False),
    Column("assignment_ttl_s", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("overlap_k >= 1", name="overlap_k"),
    CheckConstraint("gold_share >= 0 AND gold_share <= 1", name="gold_share"),
)

project_members = Table(
    "project_members",
    metadata,
    Column("project_id", ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
)

items = Table(
    "items",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("project_id", ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    Column("task_type", String(16), nullable=False),
    Column("prompt", JSON, nullable=False),
    Column("response_a", Text),
    Column("response_b", Text),
    # Known answer (A/B/tie/both_bad) for gold items; never sent to raters.
    Column("gold_answer", String(16)),
    Column("is_gold", Boolean, nullable=False, default=False),
    # Assignments issued and not expired (open + done); an ordinary item takes k of them.
    Column("n_active", Integer, nullable=False, default=0),
    Column("n_done", Integer, nullable=False, default=0),
    Column("full", Boolean, nullable=False, default=False),
    Column("adjudication", String(16)),
    Column("source", String(500)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("task_type IN ('comparison', 'demonstration')", name="task_type"),
    # The queue's hot path: the first open ordinary item of a project, by id.
    Index("ix_items_queue", "project_id", "is_gold", "full", "id"),
)

assignments = Table(
    "assignments",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("item_id", ForeignKey("items.id", ondelete="CASCADE"), nullable=False),
    Column("rater_id", ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("project_id", ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    Column("issued_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("status", String(16), nullable=False),
    # "AB": response A shown on the left; "BA": B on the left. Drawn per assignment.
    Column("shown_order", String(2), nullable=False),
    # A rater never gets the same item twice, even after an expiry.
    UniqueConstraint("item_id", "rater_id", name="uq_assignments_item_rater"),
    Index("ix_assignments_expiry", "status", "expires_at"),
    Index("ix_assignments_rater", "rater_id", "project_id", "status"),
)

judgments = Table(
    "judgments",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("assignment_id", ForeignKey("assignments.id", ondelete="CASCADE"), nullable=False),
    Column("item_id", ForeignKey("items.id", ondelete="CASCADE"), nullable=False),
    Column("rater_id", ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("project_id", ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    # Canonical: "A" means items.response_a whatever side it was shown on.
    Column("choice", String(16)),
    Column("strength", Integer),
    Column("labels", JSON, nullable=False),
    Column("demonstration", Text),
    Column("comment", Text),
    Column("shown_order", String(2), nullable=False),
    Column("time_on_task_ms", Integer, nullable=False),
    Column("client_key", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("client_key", name="uq_judgments_client_key"),
    UniqueConstraint("assignment_id", name="uq_judgments_assignment_id"),
    UniqueConstraint("item_id", "rater_id", name="uq_judgments_item_rater"),
    Index("ix_judgments_project", "project_id", "item_id"),
)

ledger = Table(
    "ledger",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("rater_id", ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("project_id", ForeignKey("projects.id", ondelete="CASCADE")),
    Column("judgment_id", ForeignKey("judgments.id", ondelete="CASCADE"), unique=True),
    Column("kind", String(16), nullable=False),
    Column("amount_cents", Integer, nullable=False),
    Column("note", String(500), nullable=False, default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("kind IN ('task', 'demonstration', 'bonus')", name="kind"),
    Index("ix_ledger_rater", "rater_id"),
)

COMPLETION_SOURCES = ("chat", "api")

conversations = Table(
    "conversations",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("model", String(200), nullable=False),
    Column("title", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_conversations_user", "user_id", "id"),
    comment="A chat on the chat page: one model, one user; its turns are completions.",
)

completions = Table(
    "completions",
    metadata,
    Column("id", Integer, primary_key=True),
    # The id shown to clients ("chatcmpl-..."), random so that it cannot be guessed.
    Column("public_id", String(64), nullable=False, unique=True),
    Column("conversation_id", ForeignKey("conversations.id", ondelete="CASCADE")),
    # Turn number within the conversation; a retried turn has several completions.
    Column("turn", Integer),
    Column("user_id", ForeignKey("users.id", ondelete="SET NULL")),
    Column("model", String(200), nullable=False),
    # The exact messages the model replied to (system/user/assistant turns).
    Column("prompt", JSON, nullable=False),
    Column("reply", Text, nullable=False),
    Column("finish_reason", String(16), nullable=False),
    # temperature, top_p, max_tokens, seed as used.
    Column("params", JSON, nullable=False),
    Column("prompt_tokens", Integer, nullable=False),
    Column("completion_tokens", Integer, nullable=False),
    Column("source", String(8), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("source IN ('chat', 'api')", name="source"),
    Index("ix_completions_conversation", "conversation_id", "turn", "id"),
)

feedback = Table(
    "feedback",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", ForeignKey("users.id", ondelete="SET NULL")),
    # The rated completion, when the reply came from this platform; one rating per completion
    # (rating again replaces it). Feedback outlives a deleted conversation.
    Column("completion_id", ForeignKey("completions.id", ondelete="SET NULL"), unique=True),
    Column("conversation", JSON, nullable=False),
    Column("reply", Text, nullable=False),
    Column("thumbs", Integer, nullable=False),
    Column("comment", Text),
    Column("model", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("thumbs IN (-1, 1)", name="thumbs"),
)

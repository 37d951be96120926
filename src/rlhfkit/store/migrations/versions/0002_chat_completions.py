"""chat: conversations, completions, feedback linked to the completion it rates

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "conversations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_conversations_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conversations")),
        comment="A chat on the chat page: one model, one user; its turns are completions.",
    )
    op.create_index("ix_conversations_user", "conversations", ["user_id", "id"], unique=False)
    op.create_table(
        "completions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("public_id", sa.String(length=64), nullable=False),
        sa.Column("conversation_id", sa.Integer(), nullable=True),
        sa.Column("turn", sa.Integer(), nullable=True),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("prompt", sa.JSON(), nullable=False),
        sa.Column("reply", sa.Text(), nullable=False),
        sa.Column("finish_reason", sa.String(length=16), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=8), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("source IN ('chat', 'api')", name=op.f("ck_completions_source")),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_completions_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_completions_user_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_completions")),
        sa.UniqueConstraint("public_id", name=op.f("uq_completions_public_id")),
    )
    op.create_index(
        "ix_completions_conversation",
        "completions",
        ["conversation_id", "turn", "id"],
        unique=False,
    )
    # SQLite cannot add a foreign key to an existing table: batch mode copies the table.
    with op.batch_alter_table("feedback") as batch:
        batch.add_column(sa.Column("completion_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            op.f("fk_feedback_completion_id_completions"),
            "completions",
            ["completion_id"],
            ["id"],
            ondelete="SET NULL",
        )
        batch.create_unique_constraint(op.f("uq_feedback_completion_id"), ["completion_id"])


def downgrade() -> None:
    with op.batch_alter_table("feedback") as batch:
        batch.drop_constraint(op.f("uq_feedback_completion_id"), type_="unique")
        batch.drop_constraint(op.f("fk_feedback_completion_id_completions"), type_="foreignkey")
        batch.drop_column("completion_id")
    op.drop_index("ix_completions_conversation", table_name="completions")
    op.drop_table("completions")
    op.drop_index("ix_conversations_user", table_name="conversations")
    op.drop_table("conversations")

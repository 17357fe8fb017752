"""qr providers

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21 09:54:10.817910
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import paymux.core.db

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "provider_webhook_events",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("dedupe_key", sa.String(length=200), nullable=False),
        sa.Column("payment_intent_id", sa.String(length=40), nullable=False),
        sa.Column("merchant_id", sa.BigInteger(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("received_at", paymux.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("processed_at", paymux.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_provider_webhook_events")),
        sa.UniqueConstraint(
            "provider", "dedupe_key", name=op.f("uq_provider_webhook_events_provider_dedupe_key")
        ),
    )
    with op.batch_alter_table("provider_webhook_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_provider_webhook_events_payment_intent_id"), ["payment_intent_id"], unique=False
        )

    with op.batch_alter_table("payment_intents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("provider_reference", sa.String(length=128), nullable=True))

    with op.batch_alter_table("store_provider_configs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "options",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=False,
                server_default=sa.text("'{}'"),
            )
        )

    with op.batch_alter_table("transactions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("next_check_at", paymux.core.db.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("check_count", sa.Integer(), nullable=False, server_default="0"))
        batch_op.create_index(batch_op.f("ix_transactions_next_check_at"), ["next_check_at"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("transactions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_transactions_next_check_at"))
        batch_op.drop_column("check_count")
        batch_op.drop_column("next_check_at")

    with op.batch_alter_table("store_provider_configs", schema=None) as batch_op:
        batch_op.drop_column("options")

    with op.batch_alter_table("payment_intents", schema=None) as batch_op:
        batch_op.drop_column("provider_reference")

    with op.batch_alter_table("provider_webhook_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_provider_webhook_events_payment_intent_id"))

    op.drop_table("provider_webhook_events")

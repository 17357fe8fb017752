"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-21 09:24:33.634643
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import paymux.core.db

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "client_partners",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", paymux.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", paymux.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_client_partners")),
        sa.UniqueConstraint("name", name=op.f("uq_client_partners_name")),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("client_partner_id", sa.BigInteger(), nullable=False),
        sa.Column("merchant_id", sa.BigInteger(), nullable=False),
        sa.Column("store_id", sa.BigInteger(), nullable=True),
        sa.Column("object_type", sa.String(length=32), nullable=False),
        sa.Column("object_id", sa.String(length=40), nullable=False),
        sa.Column(
            "payload",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", paymux.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index("ix_events_merchant_id_id", ["merchant_id", "id"], unique=False)
        batch_op.create_index("ix_events_object_id", ["object_id"], unique=False)

    op.create_table(
        "idempotency_keys",
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("method", sa.String(length=10), nullable=False),
        sa.Column("path", sa.String(length=2048), nullable=False),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("response_body", sa.Text(), nullable=True),
        sa.Column("locked_at", paymux.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", paymux.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", paymux.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("owner", "key", name=op.f("pk_idempotency_keys")),
    )
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_idempotency_keys_expires_at"), ["expires_at"], unique=False)

    op.create_table(
        "payment_tokens",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("payment_intent_id", sa.String(length=40), nullable=False),
        sa.Column("client_partner_id", sa.BigInteger(), nullable=False),
        sa.Column("merchant_id", sa.BigInteger(), nullable=False),
        sa.Column("store_id", sa.BigInteger(), nullable=False),
        sa.Column("created_at", paymux.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", paymux.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("consumed_at", paymux.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_payment_tokens")),
    )
    with op.batch_alter_table("payment_tokens", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_payment_tokens_payment_intent_id"), ["payment_intent_id"], unique=False
        )

    op.create_table(
        "merchants",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("client_partner_id", sa.BigInteger(), nullable=False),
        sa.Column("merchant_code", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("created_at", paymux.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", paymux.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_partner_id"],
            ["client_partners.id"],
            name=op.f("fk_merchants_client_partner_id_client_partners"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_merchants")),
        sa.UniqueConstraint(
            "client_partner_id", "merchant_code", name=op.f("uq_merchants_client_partner_id_merchant_code")
        ),
    )
    with op.batch_alter_table("merchants", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_merchants_client_partner_id"), ["client_partner_id"], unique=False
        )

    op.create_table(
        "stores",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("merchant_id", sa.BigInteger(), nullable=False),
        sa.Column("client_partner_id", sa.BigInteger(), nullable=False),
        sa.Column("store_code", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("created_at", paymux.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", paymux.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_partner_id"],
            ["client_partners.id"],
            name=op.f("fk_stores_client_partner_id_client_partners"),
        ),
        sa.ForeignKeyConstraint(
            ["merchant_id"], ["merchants.id"], name=op.f("fk_stores_merchant_id_merchants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stores")),
        sa.UniqueConstraint("merchant_id", "store_code", name=op.f("uq_stores_merchant_id_store_code")),
    )
    with op.batch_alter_table("stores", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_stores_merchant_id"), ["merchant_id"], unique=False)

    op.create_table(
        "api_clients",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("client_partner_id", sa.BigInteger(), nullable=False),
        sa.Column("merchant_id", sa.BigInteger(), nullable=True),
        sa.Column("store_id", sa.BigInteger(), nullable=True),
        sa.Column("secret_sealed", sa.Text(), nullable=False),
        sa.Column("created_at", paymux.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", paymux.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["client_partner_id"],
            ["client_partners.id"],
            name=op.f("fk_api_clients_client_partner_id_client_partners"),
        ),
        sa.ForeignKeyConstraint(
            ["merchant_id"], ["merchants.id"], name=op.f("fk_api_clients_merchant_id_merchants")
        ),
        sa.ForeignKeyConstraint(["store_id"], ["stores.id"], name=op.f("fk_api_clients_store_id_stores")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_clients")),
    )
    with op.batch_alter_table("api_clients", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_api_clients_client_partner_id"), ["client_partner_id"], unique=False
        )

    op.create_table(
        "payment_intents",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("client_partner_id", sa.BigInteger(), nullable=False),
        sa.Column("merchant_id", sa.BigInteger(), nullable=False),
        sa.Column("store_id", sa.BigInteger(), nullable=False),
        sa.Column("merchant_ref_id", sa.String(length=128), nullable=False),
        sa.Column("order_id", sa.String(length=128), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("amount_captured", sa.BigInteger(), nullable=False),
        sa.Column("amount_refunded", sa.BigInteger(), nullable=False),
        sa.Column("payment_method_type", sa.String(length=20), nullable=False),
        sa.Column("processing_mode", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("provider_name", sa.String(length=32), nullable=True),
        sa.Column("provider_transaction_id", sa.String(length=128), nullable=True),
        sa.Column("failure_code", sa.String(length=64), nullable=True),
        sa.Column("failure_message", sa.String(length=500), nullable=True),
        sa.Column("cancellation_reason", sa.String(length=500), nullable=True),
        sa.Column(
            "next_action",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "metadata",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", paymux.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", paymux.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_partner_id"],
            ["client_partners.id"],
            name=op.f("fk_payment_intents_client_partner_id_client_partners"),
        ),
        sa.ForeignKeyConstraint(
            ["merchant_id"], ["merchants.id"], name=op.f("fk_payment_intents_merchant_id_merchants")
        ),
        sa.ForeignKeyConstraint(["store_id"], ["stores.id"], name=op.f("fk_payment_intents_store_id_stores")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_intents")),
        sa.UniqueConstraint(
            "merchant_id", "merchant_ref_id", name=op.f("uq_payment_intents_merchant_id_merchant_ref_id")
        ),
    )
    with op.batch_alter_table("payment_intents", schema=None) as batch_op:
        batch_op.create_index(
            "ix_payment_intents_client_partner_id_id", ["client_partner_id", "id"], unique=False
        )
        batch_op.create_index("ix_payment_intents_merchant_id_id", ["merchant_id", "id"], unique=False)
        batch_op.create_index(
            "ix_payment_intents_provider_transaction_id",
            ["provider_name", "provider_transaction_id"],
            unique=False,
        )
        batch_op.create_index(batch_op.f("ix_payment_intents_store_id"), ["store_id"], unique=False)

    op.create_table(
        "store_provider_configs",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("store_id", sa.BigInteger(), nullable=False),
        sa.Column("merchant_id", sa.BigInteger(), nullable=False),
        sa.Column("client_partner_id", sa.BigInteger(), nullable=False),
        sa.Column("provider_code", sa.String(length=32), nullable=False),
        sa.Column("credentials_sealed", sa.Text(), nullable=False),
        sa.Column("webhook_secret_sealed", sa.Text(), nullable=True),
        sa.Column("base_url", sa.String(length=500), nullable=True),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("created_at", paymux.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", paymux.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_partner_id"],
            ["client_partners.id"],
            name=op.f("fk_store_provider_configs_client_partner_id_client_partners"),
        ),
        sa.ForeignKeyConstraint(
            ["merchant_id"], ["merchants.id"], name=op.f("fk_store_provider_configs_merchant_id_merchants")
        ),
        sa.ForeignKeyConstraint(
            ["store_id"], ["stores.id"], name=op.f("fk_store_provider_configs_store_id_stores")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_store_provider_configs")),
        sa.UniqueConstraint(
            "store_id", "provider_code", name=op.f("uq_store_provider_configs_store_id_provider_code")
        ),
    )
    with op.batch_alter_table("store_provider_configs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_store_provider_configs_merchant_id"), ["merchant_id"], unique=False
        )

    op.create_table(
        "payment_intent_status_changes",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("payment_intent_id", sa.String(length=40), nullable=False),
        sa.Column("merchant_id", sa.BigInteger(), nullable=False),
        sa.Column("from_status", sa.String(length=32), nullable=True),
        sa.Column("to_status", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("created_at", paymux.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["payment_intent_id"],
            ["payment_intents.id"],
            name=op.f("fk_payment_intent_status_changes_payment_intent_id_payment_intents"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_intent_status_changes")),
    )
    with op.batch_alter_table("payment_intent_status_changes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_payment_intent_status_changes_payment_intent_id"),
            ["payment_intent_id"],
            unique=False,
        )

    op.create_table(
        "transactions",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("payment_intent_id", sa.String(length=40), nullable=False),
        sa.Column("client_partner_id", sa.BigInteger(), nullable=False),
        sa.Column("merchant_id", sa.BigInteger(), nullable=False),
        sa.Column("store_id", sa.BigInteger(), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("provider_name", sa.String(length=32), nullable=True),
        sa.Column("provider_transaction_id", sa.String(length=128), nullable=True),
        sa.Column("approval_code", sa.String(length=32), nullable=True),
        sa.Column("card_last_4", sa.String(length=4), nullable=True),
        sa.Column("card_slip_number", sa.String(length=32), nullable=True),
        sa.Column("failure_code", sa.String(length=64), nullable=True),
        sa.Column("failure_message", sa.String(length=500), nullable=True),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.Column("created_at", paymux.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", paymux.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["payment_intent_id"],
            ["payment_intents.id"],
            name=op.f("fk_transactions_payment_intent_id_payment_intents"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transactions")),
    )
    with op.batch_alter_table("transactions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_transactions_merchant_id"), ["merchant_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_transactions_payment_intent_id"), ["payment_intent_id"], unique=False
        )


def downgrade() -> None:

    with op.batch_alter_table("transactions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_transactions_payment_intent_id"))
        batch_op.drop_index(batch_op.f("ix_transactions_merchant_id"))

    op.drop_table("transactions")
    with op.batch_alter_table("payment_intent_status_changes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_payment_intent_status_changes_payment_intent_id"))

    op.drop_table("payment_intent_status_changes")
    with op.batch_alter_table("store_provider_configs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_store_provider_configs_merchant_id"))

    op.drop_table("store_provider_configs")
    with op.batch_alter_table("payment_intents", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_payment_intents_store_id"))
        batch_op.drop_index("ix_payment_intents_provider_transaction_id")
        batch_op.drop_index("ix_payment_intents_merchant_id_id")
        batch_op.drop_index("ix_payment_intents_client_partner_id_id")

    op.drop_table("payment_intents")
    with op.batch_alter_table("api_clients", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_clients_client_partner_id"))

    op.drop_table("api_clients")
    with op.batch_alter_table("stores", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_stores_merchant_id"))

    op.drop_table("stores")
    with op.batch_alter_table("merchants", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_merchants_client_partner_id"))

    op.drop_table("merchants")
    with op.batch_alter_table("payment_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_payment_tokens_payment_intent_id"))

    op.drop_table("payment_tokens")
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_idempotency_keys_expires_at"))

    op.drop_table("idempotency_keys")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_object_id")
        batch_op.drop_index("ix_events_merchant_id_id")

    op.drop_table("events")
    op.drop_table("client_partners")

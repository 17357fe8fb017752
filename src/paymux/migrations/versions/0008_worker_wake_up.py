"""worker wake-up and unprocessed provider notifications

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-21 20:13:58.284488
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# PostgreSQL tells listening workers when events commit (a NOTIFY is delivered on commit, once per channel and
# transaction), so they relay and deliver at once instead of at their next poll.
POSTGRES_NOTIFY = [
    """
CREATE FUNCTION paymux_notify_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('paymux_events', '');
    RETURN NULL;
END $$""",
    """CREATE TRIGGER events_notify_workers AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION paymux_notify_events()""",
]


def upgrade() -> None:
    with op.batch_alter_table("provider_webhook_events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_provider_webhook_events_unprocessed",
            ["received_at"],
            unique=False,
            postgresql_where=sa.text("processed_at IS NULL"),
            sqlite_where=sa.text("processed_at IS NULL"),
        )
    if op.get_bind().dialect.name == "postgresql":
        for statement in POSTGRES_NOTIFY:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER events_notify_workers ON events")
        op.execute("DROP FUNCTION paymux_notify_events()")
    with op.batch_alter_table("provider_webhook_events", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_provider_webhook_events_unprocessed",
            postgresql_where=sa.text("processed_at IS NULL"),
            sqlite_where=sa.text("processed_at IS NULL"),
        )

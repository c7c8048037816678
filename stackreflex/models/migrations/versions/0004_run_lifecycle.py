"""the run lifecycle: wakes counted apart from attempts, a retry budget per run, deadlines keyed
by the wait, cancellation, reconciliation, the cloud a run acts on; which process serves which handler

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("run", schema=None) as batch_op:
        batch_op.add_column(sa.Column("wakes", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("retry_base", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("wait_key", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True))
        batch_op.add_column(sa.Column("cancel_reason", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("redispatched_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("cloud", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True))
    # Before this revision every wake-up counted as an attempt too: the attempts already recorded
    # cannot be split, but the wakes can be read off the wake generation. A pending run's message
    # is due from its creation.
    op.execute("UPDATE run SET wakes = CASE WHEN status = 'waiting' THEN wake - 1 ELSE wake END")
    op.execute("UPDATE run SET wake_at = created_at WHERE status = 'pending' AND wake_at IS NULL")

    op.create_table(
        "subscription",
        sa.Column("owner", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("handler", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("patterns", sa.Text(), nullable=False),
        sa.Column("started_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("heartbeat_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("owner", "handler"),
    )


def downgrade() -> None:
    op.drop_table("subscription")
    with op.batch_alter_table("run", schema=None) as batch_op:
        for column in ("cloud", "redispatched_at", "cancel_reason", "wait_key", "retry_base", "wakes"):
            batch_op.drop_column(column)

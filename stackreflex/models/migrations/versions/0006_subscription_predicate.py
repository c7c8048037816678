"""routing by live subscriptions: on which bus a handler is served, and whether it also
filters by a predicate

A router routes an envelope to every handler some live process on its bus serves, also handlers its own
process does not load. It matches those by their patterns; a handler that also has a
predicate (``when=``) is checked by the worker that serves it, which skips the run if the
predicate declines.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("subscription", schema=None) as batch_op:
        batch_op.add_column(sa.Column("bus", sa.String(length=255), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("filtered", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("subscription", schema=None) as batch_op:
        batch_op.drop_column("filtered")
        batch_op.drop_column("bus")

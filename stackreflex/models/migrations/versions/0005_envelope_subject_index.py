"""a stack's own envelopes: Heat's events, by subject and time, for the stack's timeline

Every Heat event is recorded now, also when no handler reacts to it (a failed deployment's
event among them), so a stack's timeline reads its envelopes by subject, not only through
the correlations of its runs.

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_envelope_subject_received", "envelope", ["subject", "received_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_envelope_subject_received", table_name="envelope")

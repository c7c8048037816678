"""drop the envelope indexes no query uses (type, subject): every accepted envelope paid for them

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_envelope_type", table_name="envelope")
    op.drop_index("ix_envelope_subject", table_name="envelope")


def downgrade() -> None:
    op.create_index("ix_envelope_subject", "envelope", ["subject"], unique=False)
    op.create_index("ix_envelope_type", "envelope", ["type"], unique=False)

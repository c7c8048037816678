"""history indexes: a subject's runs newest first (stack, host and server timelines)

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("run", schema=None) as batch_op:
        batch_op.drop_index("ix_run_subject")
        batch_op.create_index("ix_run_subject_created", ["subject", "created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("run", schema=None) as batch_op:
        batch_op.drop_index("ix_run_subject_created")
        batch_op.create_index("ix_run_subject", ["subject"], unique=False)

"""the trust boundary: envelope digests and parking, ids of up to 128 characters, the
installation's dispatch key

An id reused with other content is a conflict, known by the digest of what the envelope
says; a rejected message is recorded once, by the digest of its bytes, and parked once
(``parked_at``). CloudEvents ids are any string, so ids are up to 128 characters. The key
of the HMAC on the router's messages to handlers is generated into
``installation_secret`` on first start.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

#: (table, column, nullable) whose length goes from 64 to 128
_IDS = [
    ("envelope", "envelope_id", True),
    ("envelope", "correlation_id", True),
    ("envelope", "causation_id", True),
    ("run", "envelope_id", False),
    ("run", "correlation_id", False),
]


def _lengths(length_from: int, length_to: int) -> None:
    # SQLite keeps any length in a VARCHAR; only PostgreSQL needs the columns altered.
    if op.get_bind().dialect.name == "sqlite":
        return
    for table, column, nullable in _IDS:
        op.alter_column(
            table,
            column,
            existing_type=sa.String(length=length_from),
            type_=sa.String(length=length_to),
            existing_nullable=nullable,
        )


def upgrade() -> None:
    with op.batch_alter_table("envelope", schema=None) as batch_op:
        batch_op.add_column(sa.Column("digest", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("parked_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
    op.create_index(
        "ix_envelope_rejected_digest",
        "envelope",
        ["digest"],
        unique=False,
        sqlite_where=sa.text("status = 'rejected'"),
        postgresql_where=sa.text("status = 'rejected'"),
    )
    _lengths(64, 128)
    op.create_table(
        "installation_secret",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.String(length=255), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("installation_secret")
    _lengths(128, 64)
    op.drop_index("ix_envelope_rejected_digest", table_name="envelope")
    with op.batch_alter_table("envelope", schema=None) as batch_op:
        batch_op.drop_column("parked_at")
        batch_op.drop_column("digest")

"""alembic environment: runs against the engine stackreflex hands over."""

from alembic import context
from sqlmodel import SQLModel

from stackreflex.models import tables  # noqa: F401  (registers the tables)

engine = context.config.attributes["engine"]
with engine.connect() as connection:
    context.configure(
        connection=connection, target_metadata=SQLModel.metadata, render_as_batch=connection.dialect.name == "sqlite"
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()

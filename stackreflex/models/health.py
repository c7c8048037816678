"""What a health check asks the audit database: is it reachable with the schema this version
writes, and how many runs are waiting. Each is one short read on a pooled connection, never
waited out through an outage (a check says what it finds now)."""

from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import Engine

from ..core.redaction import redact_text
from .database import HEAD_REVISION
from .tables import Run

RUN = Run.__table__  # type: ignore[attr-defined]

#: How long a check may take to connect to, or to be answered by, PostgreSQL (seconds).
CHECK_TIMEOUT = 2


def check_engine(engine: Engine) -> Engine:
    """An engine for checks: on PostgreSQL one of its own whose connections give up after
    :data:`CHECK_TIMEOUT` (the audit log's wait out an outage); SQLite's file is local."""
    if engine.dialect.name != "postgresql":
        return engine
    return create_engine(
        engine.url,
        pool_size=1,
        max_overflow=1,
        pool_pre_ping=True,
        connect_args={
            "connect_timeout": CHECK_TIMEOUT,
            "options": f"-c statement_timeout={CHECK_TIMEOUT * 1000}",
            "tcp_user_timeout": CHECK_TIMEOUT * 1000,
        },
    )


def schema_problem(engine: Engine) -> str | None:
    """Why the audit database is not usable now (no credential in it), or None."""
    try:
        with engine.connect() as c:
            revision = c.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except Exception as exc:
        reason = redact_text(str(getattr(exc, "orig", None) or exc)).strip().splitlines()
        return f"audit database unreachable: {reason[0] if reason else type(exc).__name__}"
    if revision != HEAD_REVISION:
        return (
            f"audit database schema is at revision {revision or 'none'}, this version writes {HEAD_REVISION} "
            "(it is migrated when a worker starts)"
        )
    return None


def waiting_runs(engine: Engine) -> dict[str, int]:
    """Runs waiting for a condition, by handler."""
    query = select(RUN.c.handler, func.count()).where(RUN.c.status == "waiting").group_by(RUN.c.handler)
    with engine.connect() as c:
        return {row[0]: row[1] for row in c.execute(query)}

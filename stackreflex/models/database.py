"""Engines for the audit log (SQLite or PostgreSQL) and schema migrations through alembic.

Alembic is imported only when a migration is due: every command opens the audit log, and a
schema already current is told by one query."""

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool
from sqlmodel import create_engine

from ..core.errors import ConfigError

if TYPE_CHECKING:
    import psycopg
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
#: The newest revision: our revisions are numbered, and each file is named after its number.
HEAD_REVISION = max(path.name.split("_", 1)[0] for path in (MIGRATIONS_DIR / "versions").glob("[0-9]*_*.py"))


def normalise_url(url: str) -> str:
    """Pick the drivers we ship: psycopg 3 for PostgreSQL."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def _sqlite_pragmas(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    # WAL lets the router, workers and the CLI read and write concurrently. FULL syncs the WAL
    # at every commit: an envelope is acknowledged to the broker once its record is committed,
    # and under NORMAL a power cut could still lose that record (group commit pays one sync
    # for all the writes that share a transaction).
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


#: The audit log holds who did what to which node: only its owner reads it.
PRIVATE_DIR, PRIVATE_FILE = 0o700, 0o600


def _private_file(path: Path) -> None:
    """An SQLite database file (and its WAL and shared-memory files, which SQLite creates with
    the database's mode) readable by its owner only, in a directory of its own made 0700."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, PRIVATE_FILE))
    except FileExistsError:
        pass
    for existing in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            if existing.stat().st_mode & 0o077 and existing.stat().st_uid == os.getuid():
                existing.chmod(PRIVATE_FILE)  # made by an earlier version with the default mode
        except FileNotFoundError:
            pass


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite files get their directory created and WAL turned on."""
    try:
        parsed = make_url(normalise_url(url))
    except Exception as exc:  # sqlalchemy raises ArgumentError with a terse text
        raise ConfigError(f"database URL is not valid: {exc}") from None
    if parsed.get_backend_name() == "sqlite":
        in_memory = not parsed.database or parsed.database == ":memory:"
        if not in_memory:
            assert parsed.database is not None  # not in memory: a file
            _private_file(Path(parsed.database).expanduser())
        # In memory (the handler test kit's audit log): one database, so one connection for all.
        engine = create_engine(
            parsed,
            connect_args={"check_same_thread": False, "timeout": 30},
            **({"poolclass": StaticPool} if in_memory else {}),
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    _require_driver(parsed.get_backend_name())
    engine = create_engine(parsed, pool_pre_ping=True, pool_size=10, max_overflow=20)
    event.listen(engine, "connect", _postgresql_durable)
    return engine


def _require_driver(backend: str) -> None:
    """PostgreSQL's driver is an extra (SQLite users need none): say which, not ModuleNotFoundError."""
    if backend == "postgresql":
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise ConfigError(
                "the audit log is on PostgreSQL, whose driver is not installed: pip install 'stackreflex[postgresql]'"
            ) from None


def _postgresql_durable(dbapi_connection: "psycopg.Connection[Any]", _record: ConnectionPoolEntry) -> None:
    # A commit returns once its WAL is flushed to disk, whatever the server's or role's default
    # (``synchronous_commit=off`` is a common tuning): the broker is told an envelope is safe
    # only after that.
    with dbapi_connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit = on")
    dbapi_connection.commit()


def alembic_config(engine: Engine) -> "Config":
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    return config


#: PostgreSQL advisory lock key held while migrating ("stackreflex" in ASCII, truncated).
MIGRATION_LOCK_KEY = 0x737461636B726566


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    """One migrating process at a time: workers start together, on one host or several."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
        return
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    with os.fdopen(os.open(f"{database}.migrate-lock", os.O_CREAT | os.O_RDWR, PRIVATE_FILE), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def current_revision(engine: Engine) -> str | None:
    """The schema's revision, or None for a database alembic never migrated."""
    try:
        with engine.connect() as connection:
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except Exception:
        return None


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (safe to call at every start, from many processes)."""
    if current_revision(engine) == HEAD_REVISION:
        return
    from alembic import command

    with _migration_lock(engine):
        command.upgrade(alembic_config(engine), "head")

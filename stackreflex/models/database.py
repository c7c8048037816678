"""Engines for the audit log (SQLite or PostgreSQL) and schema migrations through alembic."""

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from alembic import command
from alembic.config import Config
from sqlalchemy import event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.pool import StaticPool
from sqlmodel import create_engine

from ..core.errors import ConfigError

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def normalise_url(url: str) -> str:
    """Pick the drivers we ship: psycopg 3 for PostgreSQL."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL lets the router, workers and the CLI read and write concurrently.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
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
            _private_file(Path(parsed.database).expanduser())
        # In memory (the handler test kit's audit log): one database, so one connection for all.
        engine = create_engine(parsed, connect_args={"check_same_thread": False, "timeout": 30},
                               **({"poolclass": StaticPool} if in_memory else {}))
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(parsed, pool_pre_ping=True, pool_size=10, max_overflow=20)


def alembic_config(engine: Engine) -> Config:
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


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (safe to call at every start, from many processes)."""
    with _migration_lock(engine):
        command.upgrade(alembic_config(engine), "head")

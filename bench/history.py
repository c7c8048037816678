"""Benchmark: post-mortem queries over an audit log of 1,000,000 steps, on SQLite and PostgreSQL.

    .venv/bin/python bench/history.py [--steps 1000000] [--pg postgresql://…] [--repeat 15]

Fills a fresh audit log (migrated to head) with a quarter of a year of history: runs about
stacks (deployments), hosts (evacuations) and servers (snapshots), ten steps each, aimed at
nodes, hosts, servers and volumes. Then times, warm, median of --repeat:
a stack's timeline, a host's history, a server's history, one correlation, and failed
runs of the last week — each beside the same query with the history indexes dropped
(the baseline: what the database does without them). Every SQL statement a timeline
runs is EXPLAINed, and the table says whether each used an index or scanned a table.
Goal (issue #7): a stack's timeline and a host's history under 200 ms on both databases.

Then the CLI end to end (issue #19): ``stackreflex audit timeline --stack S`` as an operator
runs it (a new process: start-up, query, rendering), wall time and CPU, median of five,
beside the query alone; and ``stackreflex --help``'s CPU beside the interpreter's own start
(``python -c pass``). Goals: the whole timeline command within 1 s, ``--help`` within 0.3 s CPU.
Without --pg, PostgreSQL is taken from STACKREFLEX_TEST_PG_URL or postgres on 127.0.0.1.
"""

import argparse
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from sqlalchemy import event, text

from stackreflex.models.audit import AuditLog
from stackreflex.models.queries import RunFilter, list_runs
from stackreflex.models.tables import EnvelopeRecord, Run, Step
from stackreflex.models.timeline import Scope, timeline

sys.path.insert(0, str(Path(__file__).parent))
from simprocess import print_table

STEPS_PER_RUN, STACKS, HOSTS, SERVERS = 10, 20, 500, 20000
HISTORY_INDEXES = {  # index → table and columns, dropped for the baseline
    "ix_run_subject_created": ("run", "subject, created_at"),
    "ix_step_target_started": ("step", "target, started_at"),
    "ix_step_run_id": ("step", "run_id"),
    "ix_run_correlation": ("run", "correlation_id"),
    "ix_envelope_correlation": ("envelope", "correlation_id, received_at"),
}
GOAL_MS = 200.0
CLI_GOAL_S, HELP_GOAL_S = 1.0, 0.3


def fill(audit: AuditLog, steps: int, seed: int = 7) -> dict:
    """Write the history in large batches; returns sample subjects to query."""
    rng = random.Random(seed)
    end = datetime.now(UTC)
    span = timedelta(days=90).total_seconds()
    runs = steps // STEPS_PER_RUN
    kinds = [("configure_new_node", "stack"), ("evacuate_host", "host"), ("snapshot_volumes", "server")]
    samples: dict = {}
    batch_runs, batch_steps, batch_envelopes = [], [], []

    def flush() -> None:
        with audit.engine.begin() as db:
            db.execute(EnvelopeRecord.__table__.insert(), batch_envelopes)
            db.execute(Run.__table__.insert(), batch_runs)
            db.execute(Step.__table__.insert(), batch_steps)
        batch_runs.clear(), batch_steps.clear(), batch_envelopes.clear()

    for n in range(runs):
        handler, kind = kinds[n % 3]
        subject = {
            "stack": f"stack-{rng.randrange(STACKS)}",
            "host": f"compute-{rng.randrange(HOSTS)}.localdomain",
            "server": f"vm-{rng.randrange(SERVERS)}",
        }[kind]
        created = end - timedelta(seconds=span * (1 - n / runs))
        run_id, envelope_id = str(uuid.uuid4()), str(uuid.uuid4())
        status = "failed" if rng.random() < 0.03 else "succeeded"
        batch_envelopes.append(
            {
                "envelope_id": envelope_id,
                "status": "accepted",
                "reason": None,
                "type": f"command.{handler}",
                "subject": subject,
                "source": "bench",
                "correlation_id": envelope_id,
                "causation_id": None,
                "actor": "bench",
                "time": created,
                "received_at": created,
                "payload": "{}",
            }
        )
        batch_runs.append(
            {
                "id": run_id,
                "envelope_id": envelope_id,
                "handler": handler,
                "type": f"command.{handler}",
                "subject": subject,
                "correlation_id": envelope_id,
                "status": status,
                "attempts": 1,
                "error": "boom" if status == "failed" else None,
                "created_at": created,
                "started_at": created,
                "finished_at": created + timedelta(seconds=STEPS_PER_RUN * 3),
                "updated_at": created,
                "wake": 0,
                "state": "{}",
            }
        )
        for k in range(STEPS_PER_RUN):
            target = (
                f"node-{rng.randrange(HOSTS)}"
                if kind == "stack"
                else f"vm-{rng.randrange(SERVERS)}"
                if kind == "host"
                else f"vol-{rng.randrange(SERVERS)}"
            )
            started = created + timedelta(seconds=3 * k)
            batch_steps.append(
                {
                    "run_id": run_id,
                    "attempt": 1,
                    "name": "work",
                    "target": subject if k == 0 else target,
                    "status": "succeeded",
                    "started_at": started,
                    "finished_at": started + timedelta(seconds=2),
                    "detail": "{}",
                    "error": None,
                }
            )
        samples.setdefault(kind, subject)
        samples["correlation"] = envelope_id
        if len(batch_steps) >= 50000:
            flush()
    if batch_runs:
        flush()
    return samples


def queries(samples: dict) -> dict:
    week = datetime.now(UTC) - timedelta(days=7)
    return {
        "stack timeline": lambda a: timeline(a, Scope(stack=samples["stack"])),
        "host history": lambda a: timeline(a, Scope(host=samples["host"])),
        "server history": lambda a: timeline(a, Scope(server=samples["server"])),
        "one correlation": lambda a: timeline(a, Scope(correlation_id=samples["correlation"])),
        "failed runs, last 7 days": lambda a: list_runs(a, RunFilter(status=["failed"], since=week, limit=1000)),
    }


def median_ms(fn, audit: AuditLog, repeat: int) -> float:
    fn(audit)  # warm
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn(audit)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def plan_of(audit: AuditLog, fn) -> str:
    """EXPLAIN every statement ``fn`` runs: 'index' if none scans a whole history table."""
    statements = []
    listener = lambda conn, cursor, statement, params, context, many: statements.append((statement, params))  # noqa: E731
    event.listen(audit.engine, "before_cursor_execute", listener)
    try:
        fn(audit)
    finally:
        event.remove(audit.engine, "before_cursor_execute", listener)
    scans = []
    with audit.engine.connect() as db:
        for statement, params in statements:
            if audit.engine.dialect.name == "sqlite":
                plan = " | ".join(r[-1] for r in db.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params))
                scans += [p for p in plan.split(" | ") if p.startswith("SCAN ") and "USING" not in p]
            else:
                plan = " | ".join(r[0] for r in db.exec_driver_sql("EXPLAIN " + statement, params))
                scans += [p.strip() for p in plan.split(" | ") if "Seq Scan" in p]
    return "index only" if not scans else "SCAN: " + "; ".join(sorted(set(scans)))[:80]


def drop_history_indexes(audit: AuditLog) -> None:
    with audit.engine.begin() as db:
        for name in HISTORY_INDEXES:
            db.execute(text(f"DROP INDEX IF EXISTS {name}"))
        db.execute(text("ANALYZE"))


def timed_command(argv: list[str], env: dict | None = None, repeat: int = 5) -> tuple[float, float]:
    """Median wall and CPU (user + system, of the child) seconds of running ``argv``."""
    walls, cpus = [], []
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(walls), statistics.median(cpus)


def cli_timeline(label: str, url: str, stack: str, query_ms: float) -> tuple:
    env = {**os.environ, "STACKREFLEX_DATABASE_URL": url, "COLUMNS": "160"}
    wall, cpu = timed_command([sys.executable, "-m", "stackreflex", "audit", "timeline", "--stack", stack], env)
    verdict = "met" if wall <= CLI_GOAL_S else "MISSED"
    return (
        label,
        "stackreflex audit timeline --stack (whole command)",
        f"{query_ms:.1f} (query)",
        f"{wall * 1000:.0f} wall, {cpu * 1000:.0f} CPU",
        f"<= {CLI_GOAL_S * 1000:.0f} wall",
        verdict,
        "",
    )


def bench(label: str, url: str, steps: int, repeat: int) -> list[tuple]:
    audit = AuditLog.open(url)
    start = time.perf_counter()
    samples = fill(audit, steps)
    with audit.engine.begin() as db:
        db.execute(text("ANALYZE"))
    print(f"{label}: wrote {steps:,} steps in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    measured = {name: (median_ms(fn, audit, repeat), plan_of(audit, fn)) for name, fn in queries(samples).items()}
    command = cli_timeline(label, url, samples["stack"], measured["stack timeline"][0])
    drop_history_indexes(audit)
    rows = []
    for name, fn in queries(samples).items():
        ours, plan = measured[name]
        baseline = median_ms(fn, audit, max(3, repeat // 5))
        goal = f"< {GOAL_MS:.0f}" if name in ("stack timeline", "host history") else ""
        verdict = ("met" if ours < GOAL_MS else "MISSED") if goal else ""
        rows.append((label, name, f"{baseline:.1f}", f"{ours:.1f}", goal, verdict, plan))
    audit.engine.dispose()
    return [*rows, command]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument(
        "--pg", default=os.environ.get("STACKREFLEX_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    )
    parser.add_argument("--skip-pg", action="store_true")
    args = parser.parse_args()
    _, interpreter = timed_command([sys.executable, "-c", "pass"])
    _, helped = timed_command([sys.executable, "-m", "stackreflex", "--help"])
    rows = [
        (
            "-",
            "stackreflex --help (CPU)",
            f"{interpreter * 1000:.0f} (python -c pass)",
            f"{helped * 1000:.0f}",
            f"<= {HELP_GOAL_S * 1000:.0f}",
            "met" if helped <= HELP_GOAL_S else "MISSED",
            "",
        )
    ]
    with tempfile.TemporaryDirectory() as work:
        rows += bench("SQLite", f"sqlite:///{work}/audit.db", args.steps, args.repeat)
    if not args.skip_pg:
        name = f"srx_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(args.pg, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        try:
            rows += bench("PostgreSQL", f"{args.pg.rsplit('/', 1)[0]}/{name}", args.steps, args.repeat)
        finally:
            with psycopg.connect(args.pg, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(
        f"\n{args.steps:,} steps; median of {args.repeat} warm runs; baseline = the same query without the "
        "history indexes"
    )
    print_table(("database", "query", "baseline ms", "ours ms", "goal ms", "verdict", "plan (ours)"), rows)


if __name__ == "__main__":
    main()

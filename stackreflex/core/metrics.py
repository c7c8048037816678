"""Every Prometheus metric a stackreflex process exports, in one place (``stackreflex_*``).

The layers that count (the router, the run lifecycle, the audit write path, the watcher)
import their families from here; ``stackreflex.health`` serves them on ``/metrics`` and sets
the gauges read on each scrape (runs waiting, dead-letter depths). Labels stay few and
bounded: a handler, a status, an envelope type (capped, see :func:`type_label`), a reason
from a fixed set. Never a run id, an envelope id or a subject.
"""

from datetime import UTC, datetime

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

from .errors import InvalidEnvelope, SignatureError

#: Distinct envelope types a process labels its counters with; later ones count as ``other``
#: (a publisher inventing types must not grow the series without bound).
MAX_TYPES = 200
#: Longest envelope type used as a label value.
MAX_TYPE_LENGTH = 100

#: Buckets for whole runs, which may wait for minutes or hours (seconds).
RUN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 3 * 3600, 12 * 3600)
#: Buckets for one step: an API call, an SSH command, a wait for a node (seconds).
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
#: Buckets for one audit write, from the caller's call to its commit (seconds).
WRITE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
#: Buckets for the router's batches (envelopes); its prefetch bounds them (64 by default).
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

# Each series' creation time (``*_created``) doubles what is exported for nothing a dashboard uses.
disable_created_metrics()

ENVELOPES_RECEIVED = Counter(
    "stackreflex_envelopes_received",
    "Envelopes the router took from the broker, by type (a redelivery counts again).",
    ["type"],
)
ENVELOPES_REJECTED = Counter(
    "stackreflex_envelopes_rejected",
    "Envelopes (and handler messages) refused, recorded and parked, by type and reason.",
    ["type", "reason"],
)
RUNS_STARTED = Counter(
    "stackreflex_runs_started",
    "Executions of runs started, by handler: a first attempt, a retry or a wake-up each.",
    ["handler"],
)
RUNS_FINISHED = Counter(
    "stackreflex_runs_finished",
    "Runs that ended, by handler and final status (succeeded, failed, dead, skipped, cancelled).",
    ["handler", "status"],
)
RUN_DURATION = Histogram(
    "stackreflex_run_duration_seconds",
    "From a run's creation (its envelope accepted) to its end, its waits included, by handler.",
    ["handler"],
    buckets=RUN_BUCKETS,
)
STEP_DURATION = Histogram(
    "stackreflex_step_duration_seconds",
    "How long a handler's step took (succeeded or failed; a step left waiting is not counted), by handler.",
    ["handler"],
    buckets=STEP_BUCKETS,
)
RUNS_WAITING = Gauge(
    "stackreflex_runs_waiting",
    "Runs waiting for a condition (suspended until their next look), by handler; read from the audit log.",
    ["handler"],
)
ROUTER_BATCH_SIZE = Histogram(
    "stackreflex_router_batch_size",
    "Envelopes the router recorded and dispatched in one transaction.",
    buckets=BATCH_BUCKETS,
)
ROUTER_LAG = Gauge(
    "stackreflex_router_lag_seconds",
    "How long the oldest envelope the router holds unacknowledged has been held (0 when it holds none).",
)
DEAD_LETTERS = Gauge(
    "stackreflex_dead_letters",
    "Messages parked in a dead-letter queue, read from the broker: kind=rejected (the router's <ns>.dlq) "
    "or dead (a handler's retries exhausted, <ns>.<handler>.XQ).",
    ["kind", "handler"],
)
AUDIT_WRITE_DURATION = Histogram(
    "stackreflex_audit_write_duration_seconds",
    "From an audit write's call to its commit (waiting for a shared transaction included).",
    buckets=WRITE_BUCKETS,
)
BROKER_RECONNECTS = Counter(
    "stackreflex_broker_reconnects",
    "Times a broker connection broke and was made again: the router's, or a handler queue's consumer.",
    ["connection"],
)
DATABASE_RECONNECTS = Counter(
    "stackreflex_database_reconnects",
    "Times the audit database came back after being unreachable (an outage waited out).",
)
WATCHER_EVENTS = Counter(
    "stackreflex_watcher_events_published",
    "Heat events the watcher published as envelopes, by stack.",
    ["stack"],
)
WATCHER_ERRORS = Counter(
    "stackreflex_watcher_poll_errors",
    "Polls of Heat that failed (Heat, the network or the bus), backed off and tried again.",
)
WATCHER_LAST_POLL = Gauge(
    "stackreflex_watcher_last_poll_timestamp_seconds",
    "When the watcher last polled every stack without an error (Unix time).",
)

_types: set[str] = set()

#: The reasons a rejection is counted under, by how the router says it (first match wins).
_REASONS = (
    ("too large", "too_large"),
    ("nested deeper", "too_deep"),
    ("published with routing key", "routing_key"),
    ("conflict:", "conflict"),
    ("router failed", "router_failure"),
)
#: Every value of the ``reason`` label.
REJECTION_REASONS = (
    "malformed",
    "too_large",
    "too_deep",
    "routing_key",
    "signature",
    "replay_window",
    "conflict",
    "no_subscriber",
    "router_failure",
    "unauthenticated_dispatch",
)


def type_label(envelope_type: object) -> str:
    """An envelope type as a label value: the first :data:`MAX_TYPES` distinct ones as they
    are, later ones (and what is not a type at all) ``other``; none, ``unknown``."""
    if not envelope_type:
        return "unknown"
    if not isinstance(envelope_type, str) or len(envelope_type) > MAX_TYPE_LENGTH:
        return "other"
    if envelope_type not in _types:
        if len(_types) >= MAX_TYPES:
            return "other"
        _types.add(envelope_type)
    return envelope_type


def rejection_reason(error: InvalidEnvelope, *, unrouted: bool = False) -> str:
    """Which of :data:`REJECTION_REASONS` a rejection is."""
    if unrouted:
        return "no_subscriber"
    if isinstance(error, SignatureError):
        return (
            "replay_window"
            if error.reason.startswith("stale ") or "ahead of this clock" in error.reason
            else "signature"
        )
    return next((reason for prefix, reason in _REASONS if error.reason.startswith(prefix)), "malformed")


def count_received(routing_keys: list[str]) -> None:
    for key in routing_keys:
        ENVELOPES_RECEIVED.labels(type_label(key)).inc()


def count_rejected(routing_key: str, error: InvalidEnvelope, *, unrouted: bool = False) -> None:
    ENVELOPES_REJECTED.labels(type_label(routing_key), rejection_reason(error, unrouted=unrouted)).inc()


def count_finished(handler: str, status: str, created_at: datetime, now: datetime) -> None:
    """A run ended: counted, and its whole duration observed (``created_at`` naive is UTC, as SQLite returns it)."""
    RUNS_FINISHED.labels(handler, status).inc()
    created = created_at if created_at.tzinfo else created_at.replace(tzinfo=UTC)
    RUN_DURATION.labels(handler).observe(max((now - created).total_seconds(), 0.0))

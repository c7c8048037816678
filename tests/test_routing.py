"""Routing by live subscriptions: an envelope reaches a handler that any live worker serves,
whichever worker's router took it; an envelope nobody serves is said so, exit 1."""

import re

from stackreflex.core.envelope import Envelope
from stackreflex.models.audit import AuditLog

from .conftest import OTHER_HANDLERS, make_settings, run_cli, wait_drained, wait_for
from .test_runtime import publish_all


def test_every_envelope_reaches_the_handler_another_worker_serves(broker_url, sqlite_url, namespace, workers, tmp_path):
    settings = make_settings(broker_url, sqlite_url, namespace)
    first = workers(settings)  # the sample handlers, not "elsewhere"
    second = workers(settings, handlers=OTHER_HANDLERS)  # "elsewhere" and "elsewhere_filtered"
    audit = AuditLog.open(sqlite_url)

    pings = [Envelope.new("test.elsewhere.ping", subject=f"p{i}") for i in range(100)]
    declined = [Envelope.new("test.elsewhere.filtered", subject=f"n{i}", data={"go": False}) for i in range(10)]
    wanted = [Envelope.new("test.elsewhere.filtered", subject=f"g{i}", data={"go": True}) for i in range(10)]
    publish_all(settings, pings + declined + wanted)

    def ended(envelopes, handler):
        outcomes = audit.outcomes([e.id for e in envelopes])
        return all(len(runs) == 1 and runs[0].handler == handler and runs[0].finished for runs in outcomes.values())

    wait_for(
        lambda: ended(pings, "elsewhere") and ended(wanted, "elsewhere_filtered"),
        timeout=60,
        message="every ping and wanted envelope handled",
    )
    wait_drained(namespace)
    outcomes = audit.outcomes([e.id for e in pings + wanted + declined])
    assert {runs[0].status.value for e in pings + wanted for runs in [outcomes[e.id]]} == {"succeeded"}
    # A declined envelope has no run where its router loads the predicate, and a skipped one
    # (with the reason) where it does not: never one that ran.
    for e in declined:
        assert [r.status.value for r in outcomes[e.id]] in ([], ["skipped"])
        assert all("declined this envelope" in r.error for r in outcomes[e.id])
    # Both routers took pings: the first one, which does not load "elsewhere", routed its share.
    routed = re.compile(r"envelope routed: test\.elsewhere\.ping \S+ subject=p\d+ to elsewhere")
    assert routed.search(first.log_path.read_text()) and routed.search(second.log_path.read_text())
    assert "no handler" not in first.log_path.read_text().split("worker ready", 1)[1]

    # An envelope only the stopped worker served: nothing runs it, and --wait says so with exit 1.
    second.terminate()
    done = run_cli(settings, tmp_path, "publish", "test.elsewhere.ping", "-s", "late", "--wait", "--timeout", "20")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "nothing ran" in done.stdout and "test.elsewhere.ping" in done.stdout
    nobody = run_cli(settings, tmp_path, "publish", "test.nobody.serves", "--wait", "--timeout", "20")
    # No worker ever bound its type: the broker itself has nowhere to put it.
    assert nobody.returncode == 1, nobody.stdout + nobody.stderr
    assert "no queue is bound to receive test.nobody.serves" in nobody.stderr

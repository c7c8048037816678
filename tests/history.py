"""A scripted history in the audit log: a deployment, an evacuation with one failure, a snapshot,
and a run still waiting, at chosen times (the rows as the runtime writes them)."""

import json
import uuid
from datetime import UTC, datetime, timedelta

from stackreflex.models.audit import AuditLog
from stackreflex.models.tables import EnvelopeRecord, Run

T0 = datetime(2026, 11, 20, 22, 0, tzinfo=UTC)
SECRET_SIG = "d3adb33fd3adb33fd3adb33fd3adb33fd3adb33f"
#: The Gantt lanes the history makes, in order of first appearance, and the steps in each.
LANES = {
    "overcloud-novacompute-0": 2,
    "overcloud-novacompute-1": 2,
    "compute-1.localdomain": 1,
    "vm-a": 1,
    "vm-b": 2,
    "vm-c": 2,
    "vol-c": 1,
}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


class History:
    def __init__(self, audit: AuditLog):
        self.audit = audit
        self.runs: dict[str, str] = {}
        self.correlations: dict[str, str] = {}

    def envelope(
        self, name: str, type: str, subject: str, when: float, status: str = "accepted", reason: str | None = None
    ) -> str:
        envelope_id = str(uuid.uuid4())
        self.correlations[name] = envelope_id
        with self.audit.engine.begin() as db:
            db.execute(
                EnvelopeRecord.__table__.insert().values(
                    envelope_id=envelope_id,
                    status=status,
                    reason=reason,
                    type=type,
                    subject=subject,
                    source="test",
                    correlation_id=envelope_id,
                    actor="operator",
                    time=at(when),
                    received_at=at(when),
                    payload=json.dumps({"type": type, "subject": subject}),
                )
            )
        return envelope_id

    def run(
        self,
        name: str,
        handler: str,
        envelope: str,
        subject: str,
        start: float,
        end: float | None,
        status: str,
        error: str | None = None,
        waiting_for: str | None = None,
    ) -> str:
        run_id = str(uuid.uuid4())
        self.runs[name] = run_id
        with self.audit.engine.begin() as db:
            db.execute(
                Run.__table__.insert().values(
                    id=run_id,
                    envelope_id=self.correlations[envelope],
                    handler=handler,
                    type=f"test.{handler}",
                    subject=subject,
                    correlation_id=self.correlations[envelope],
                    status=status,
                    attempts=1,
                    error=error,
                    created_at=at(start),
                    started_at=at(start),
                    finished_at=at(end) if end is not None else None,
                    updated_at=at(end if end is not None else start),
                    waiting_for=waiting_for,
                    wake_at=at(start + 60) if waiting_for else None,
                    deadline=at(start + 3600) if waiting_for else None,
                    state="{}",
                )
            )
        return run_id

    def step(
        self,
        run: str,
        name: str,
        target: str,
        start: float,
        end: float,
        status: str = "succeeded",
        error: str | None = None,
        detail: dict | None = None,
    ) -> None:
        self.audit.record_step(
            self.runs[run],
            1,
            name,
            target,
            status=status,
            started_at=at(start),
            finished_at=at(end),
            detail=detail or {},
            error=error,
        )


def script(audit: AuditLog) -> History:
    h = History(audit)
    h.envelope("deploy", "heat.resource.CREATE_IN_PROGRESS", "overcloud", 0)
    h.run("deploy", "configure_new_node", "deploy", "overcloud", 1, 60, "succeeded")
    url = f"http://192.0.2.1:8080/v1/AUTH_x/ov/c?temp_url_sig={SECRET_SIG}&temp_url_expires=1"
    for n, offset in ((0, 2), (1, 10)):
        node = f"overcloud-novacompute-{n}"
        h.step("deploy", "configure os-collect-config", node, offset, offset + 6, detail={"metadata_url": url})
        h.step("deploy", "agent fetched its metadata", node, offset + 25, offset + 40)
    h.envelope("evacuate", "command.host.evacuate", "compute-1.localdomain", 100)
    h.run(
        "evacuate",
        "evacuate_host",
        "evacuate",
        "compute-1.localdomain",
        101,
        170,
        "failed",
        error="compute-1.localdomain is not empty: 1 server(s) could not be moved: vm-b: migration failed 2 time(s)",
    )
    h.step("evacuate", "disable nova-compute", "compute-1.localdomain", 101, 102)
    moved = {"source": "compute-1.localdomain", "destination": "compute-2.localdomain"}
    h.step(
        "evacuate", "live-migrate", "vm-a", 103, 120, detail={**moved, "queued_s": 5.0, "moving_s": 12.0, "attempt": 1}
    )
    h.step(
        "evacuate",
        "live-migrate",
        "vm-b",
        103,
        118,
        status="failed",
        error="migration 7 ended error",
        detail={**moved, "attempt": 1},
    )
    h.step(
        "evacuate",
        "live-migrate",
        "vm-b",
        130,
        150,
        status="failed",
        error="migration 9 ended error",
        detail={**moved, "attempt": 2},
    )
    h.envelope("snapshot", "command.volume.snapshot", "vm-c", 200)
    h.run("snapshot", "snapshot_volumes", "snapshot", "vm-c", 201, 240, "succeeded")
    h.step("snapshot", "stop server", "vm-c", 201, 205)
    h.step("snapshot", "snapshot volume", "vol-c", 206, 226)
    h.step("snapshot", "start server", "vm-c", 230, 236)
    h.envelope("waiting", "command.image.copy", "cirros", -86400 * 200)
    h.run(
        "waiting",
        "copy_image",
        "waiting",
        "cirros",
        -86400 * 200,
        None,
        "waiting",
        waiting_for="the import lock of cirros",
    )
    h.envelope("old", "command.image.copy", "cirros", -86400 * 200)
    h.run("old", "copy_image", "old", "cirros", -86400 * 200, -86400 * 200 + 30, "succeeded")
    h.step("old", "copy image", "dcn0", -86400 * 200 + 1, -86400 * 200 + 29)
    return h

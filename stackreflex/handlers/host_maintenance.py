"""Compute host maintenance: drain a host by live migration, reboot it, bring it back.

Every attempt reads where things stand from Nova (the servers still on the host, the
migrations off it since the run began) and acts only on the difference, so a run resumed
on another worker neither forgets a server nor migrates one twice. Migrations are followed
in place for a while, then through continuations: no message is held for long.
"""

from datetime import datetime, timedelta
from typing import Any

from openstack import exceptions
from openstack.compute.v2.service import Service
from pydantic import BaseModel, ConfigDict, Field

from ..core.clock import utcnow
from ..core.envelope import Envelope
from ..core.records import FINAL_STATUSES
from ..core.registry import handler
from ..tasks.compute import (
    MIGRATION_FAILED,
    MIGRATION_WAITING,
    HostServer,
    MigrationRecord,
    MigrationRefused,
    action_for,
    compute_service,
    migrations_from,
    nova_time,
    server_now,
    servers_on,
    set_service_enabled,
    start_migration,
)
from ..tasks.inventory import Host, node_of_host
from ..tasks.reboot import boot_id, boot_id_now, reboot
from ..tasks.waiting import wait_until
from .context import RunContext
from .orders import read_order

#: Give-up times (seconds): the whole drain, the node's return from its reboot.
DRAIN_DEADLINE, REBOOT_DEADLINE = 6 * 3600.0, 1800.0
#: How long one attempt follows migrations in place before parking the run (seconds).
INLINE_FOLLOW = 20.0
#: Bounds of the pause between two looks at the host (seconds).
MIN_POLL, MAX_POLL = 0.05, 5.0
#: A node still on its old boot this long after the reboot was sent did not reboot (seconds).
REBOOT_GRACE = 600.0
#: How long to wait in place for a node or service that usually answers at once (seconds).
INLINE_WAIT = 5.0
DEFAULT_REASON = "stackreflex: host maintenance"


class EvacuateOrder(BaseModel):
    """The data of ``command.host.evacuate``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(min_length=1)
    target: str | None = None
    max_parallel: int = Field(default=1, ge=1, le=50)
    reason: str = Field(default=DEFAULT_REASON, min_length=1, max_length=255)
    reboot: bool = False
    keep_disabled: bool = False
    cold_migrate_stopped: bool = False
    #: Migration attempts per server before it is reported as blocking the host.
    max_attempts: int = Field(default=2, ge=1, le=10)


def _after_cancelled_evacuation(event: Envelope, ctx: RunContext, reason: str) -> str:
    """A cancelled evacuation: nova-compute is enabled again when this run disabled it and Nova
    moved no server off the host since the run began; otherwise the service stays disabled
    (servers would be scheduled back onto a half-drained host), and what stands where is said,
    with how to bring the host back. Read from Nova, not only from what the run saved."""
    data = event.data or {}
    host, ours = data.get("host") or event.subject, data.get("reason") or DEFAULT_REASON
    if not host:
        return "the command named no host: nothing was done"
    state = ctx.state
    service = compute_service(ctx.cloud, host)
    since = datetime.fromisoformat(state["started"]) if "started" in state else ctx.run.created_at
    issued = {sid for sid, records in migrations_from(ctx.cloud, host, since).items() if records}
    on_host = servers_on(ctx.cloud, host)
    moving = sorted(s.name for s in on_host.values() if s.busy)
    we_disabled = (
        service.status == "disabled"
        and service.disabled_reason == ours
        and state.get("service_was", "enabled") == "enabled"
    )
    if not issued and not moving and state.get("phase", "drain") == "drain":
        if we_disabled:
            with ctx.step("enable nova-compute", target=host) as detail:
                set_service_enabled(ctx.cloud, service, True)
                detail.update(action="enabled", why="the evacuation was cancelled before any server was moved")
            return f"nova-compute on {host} enabled again; no server had been moved"
        if service.status == "enabled":
            return f"nothing had been done on {host}: no server was moved, and nova-compute is enabled"
    left = [f"{len(issued)} server(s) migrated off {host} or on their way", f"{len(on_host)} still on it"]
    if moving:
        left.append(f"{len(moving)} migration(s) still under way in Nova, which finishes them ({', '.join(moving)})")
    if state.get("phase") == "reboot" and "boot_id" in state:
        left.append(f"a reboot was sent to {host} at {state['reboot_at']}")
    elif state.get("phase") == "return":
        left.append(f"{host} rebooted and is back")
    if service.status == "disabled":
        left.append(
            f"nova-compute left disabled ({service.disabled_reason or 'no reason given'}); once the host is "
            f"ready: openstack compute service set --enable {host} nova-compute"
        )
    else:
        left.append("nova-compute is enabled")
    return "; ".join(left)


@handler(
    "command.host.evacuate",
    max_retries=5,
    min_backoff=2,
    max_backoff=60,
    time_limit=INLINE_FOLLOW + 100,
    compensate=_after_cancelled_evacuation,
)
def evacuate_host(event: Envelope, ctx: RunContext) -> None:
    """Disable nova-compute, move every server away in a window, verify the host is empty;
    with ``reboot``, reboot it over SSH and re-enable the service once it is back."""
    order = read_order(EvacuateOrder, event, ctx)
    if event.subject != order.host:
        ctx.fail(
            f"command.host.evacuate must have the host as its subject (subject {event.subject!r}, "
            f"host {order.host!r}): the audit log and the one-evacuation-per-host rule go by it"
        )
    state = ctx.state
    if not state:
        ahead = ctx.others_running()
        if ahead:
            ctx.fail(
                f"{order.host} is already being evacuated by run {ahead[0].id} ({ahead[0].status}); "
                "wait for it to end, or see `stackreflex audit show` for where it stands"
            )
        state.update(
            phase="drain", started=utcnow().isoformat(), servers={}, done={}, blocked={}, issued={}, failures_seen=[]
        )
    if state["phase"] == "drain":
        disable_service(ctx, order)
        drain(ctx, order)
        state["phase"] = "reboot" if order.reboot else "finished"
    if state["phase"] == "reboot":
        reboot_node(ctx, order)
        state["phase"] = "return"
    if state["phase"] == "return":
        return_to_service(ctx, order)
        state["phase"] = "finished"


def disable_service(ctx: RunContext, order: EvacuateOrder) -> None:
    """Nothing new lands on the host from here on; remember whether it was enabled before."""
    if "service_was" in ctx.state:
        return
    with ctx.step("disable nova-compute", target=order.host) as detail:
        service = compute_service(ctx.cloud, order.host)
        # disabled with our reason: a previous attempt of this run did it
        was = "enabled" if service.status == "enabled" or service.disabled_reason == order.reason else "disabled"
        detail.update(was=was, reason=order.reason)
        if service.status == "enabled":
            set_service_enabled(ctx.cloud, service, False, order.reason)
            detail["action"] = "disabled"
        else:
            detail.update(action="already disabled", disabled_reason=service.disabled_reason)
    ctx.state["service_was"] = was
    ctx.checkpoint()  # a cancel from here on must know the service was this run's to re-enable


def drain(ctx: RunContext, order: EvacuateOrder) -> None:
    """Move every server off the host, at most ``max_parallel`` at once, until it is empty."""
    follow_until = ctx.clock.monotonic() + INLINE_FOLLOW
    while True:
        look = HostLook(ctx, order)
        look.settle()
        look.start_migrations()
        look.report()
        if look.changed:  # what was seen and started must not be recorded or started again
            ctx.checkpoint(steps=look.steps)
        if not look.remaining:
            break
        pause = look.pause()
        if ctx.stopping or ctx.clock.monotonic() + pause > follow_until:
            ctx.recheck(pause, waiting_for=f"servers to leave {order.host}", key="drain", deadline=DRAIN_DEADLINE)
        ctx.sleep(pause)
    blocked = ctx.state["blocked"]
    if blocked:
        ctx.fail(
            f"{order.host} is not empty: {len(blocked)} server(s) could not be moved: "
            + "; ".join(f"{server}: {why}" for server, why in sorted(blocked.values()))
            + ". The service stays disabled; nothing was rebooted."
        )
    with ctx.step("host empty", target=order.host) as detail:
        left = servers_on(ctx.cloud, order.host)
        detail["servers"] = len(left)
        if left:  # a server arrived after all; the next attempt moves it
            raise RuntimeError(f"{len(left)} server(s) appeared on {order.host} while it was drained")


class HostLook:
    """One look at the host: what Nova says now, against what the run has seen and done."""

    def __init__(self, ctx: RunContext, order: EvacuateOrder):
        self.ctx, self.order, self.state = ctx, order, ctx.state
        self.on_host = servers_on(ctx.cloud, order.host)
        self.migrations = migrations_from(ctx.cloud, order.host, datetime.fromisoformat(self.state["started"]))
        for server in self.on_host.values():
            self.state["servers"].setdefault(server.id, server.name)
        self.in_flight: list[str] = []
        self.ready: list[tuple[HostServer, str]] = []
        self.changed = False
        #: steps to record once the next migrations are on their way (they wait for nothing)
        self.steps: list[dict[str, Any]] = []

    @property
    def remaining(self) -> list[str]:
        return [
            sid for sid in self.state["servers"] if sid not in self.state["done"] and sid not in self.state["blocked"]
        ]

    def settle(self) -> None:
        """Sort each server: moved (record it), in flight, ready to move, or blocking the host."""
        for sid in self.remaining:
            records = self.migrations.get(sid, [])
            self._record_failures(sid, records)
            self._watch_queue(sid, records)
            server = self.on_host.get(sid)
            if server is None:
                self._left(sid, records)
            elif server.busy:
                self.in_flight.append(sid)
            else:
                action, why = action_for(server, cold_migrate_stopped=self.order.cold_migrate_stopped)
                failures = [r for r in records if r.status in MIGRATION_FAILED]
                if action == "leave":
                    self._block(sid, why)
                elif len(failures) >= self.order.max_attempts:
                    last = failures[-1]
                    self._block(
                        sid,
                        f"migration failed {len(failures)} time(s), last {last.id} to "
                        f"{last.dest or 'no host'} ended {last.status}",
                    )
                else:
                    self.ready.append((server, action))

    def start_migrations(self) -> None:
        for server, action in self.ready:
            if len(self.in_flight) >= self.order.max_parallel:
                return
            try:
                start_migration(self.ctx.cloud, server, live=action == "live-migrate", target=self.order.target)
            except MigrationRefused as exc:
                self._step(
                    action,
                    target=server.name,
                    started_at=utcnow(),
                    status="failed",
                    detail={"server_id": server.id, "source": self.order.host},
                    error=str(exc),
                )
                self._block(server.id, str(exc))
                continue
            except exceptions.ConflictException:
                pass  # Nova began something on it since we looked: follow it
            self.state["issued"][server.id] = utcnow().isoformat()
            self.in_flight.append(server.id)
            self.changed = True

    def _step(self, name: str, **step: Any) -> None:
        self.steps.append({"name": name, **step})
        self.changed = True

    def report(self) -> None:
        """Progress for --wait, when it changed: '7/12 migrated, 1 failed, 3 in flight'."""
        done, blocked, total = len(self.state["done"]), len(self.state["blocked"]), len(self.state["servers"])
        note = f"{done}/{total} migrated, {blocked} failed, {len(self.in_flight)} in flight"
        if note != self.state.get("reported"):
            self.ctx.progress(done + blocked, total, note)
            self.state["reported"] = note

    def pause(self) -> float:
        """Until the next look: just before the earliest migration should end, judging by the
        fastest one seen (the fastest, because every observed time carries some lag of our looks)."""
        fastest = self.state.get("fastest")
        starts = [
            datetime.fromisoformat(self.state["issued"][sid]) for sid in self.in_flight if sid in self.state["issued"]
        ]
        if not starts:
            return MAX_POLL if not self.ready else MIN_POLL
        elapsed = (utcnow() - min(starts)).total_seconds()
        if fastest is None:  # nothing finished yet: look back more slowly as time passes
            wait = 0.1 * elapsed
        else:
            due = 0.9 * fastest - elapsed
            wait = due if due > MIN_POLL else 0.05 * fastest
        return min(max(wait, MIN_POLL), MAX_POLL)

    # -- what happened to one server -----------------------------------------------------

    def _left(self, sid: str, records: list[MigrationRecord]) -> None:
        """The server is no longer listed on the host: moved (confirm a cold move first) or gone."""
        name, last = self.state["servers"][sid], (records[-1] if records else None)
        if last is not None and last.kind == "migration":
            before = server_now(self.ctx.cloud, sid)
            if before is not None and before.status == "VERIFY_RESIZE":
                with self.ctx.step("confirm resize", target=name) as detail:
                    detail.update(server_id=sid, migration_id=last.id)
                    self.ctx.cloud.compute.confirm_server_resize(sid)
        started = self.state["issued"].get(sid) or (last.created_at.isoformat() if last else None)
        finished = utcnow()
        detail = {
            "server_id": sid,
            "source": self.order.host,
            "destination": last.dest if last else None,
            "migration_id": last.id if last else None,
            "attempt": len(records),
        }
        if started:
            duration = (finished - datetime.fromisoformat(started)).total_seconds()
            detail["duration_s"] = round(duration, 3)
            moving = self.state.get("moving", {}).get(sid) or self.state.get("waiting_seen", {}).get(sid)
            if moving and sid in self.state["issued"]:
                began = datetime.fromisoformat(moving)
                detail.update(
                    queued_s=round((began - datetime.fromisoformat(started)).total_seconds(), 3),
                    moving_s=round((finished - began).total_seconds(), 3),
                    moving_since=began.isoformat(),
                )
            if last is not None and last.kind == "live-migration":
                self.state["fastest"] = min(duration, self.state.get("fastest") or duration)
        now = server_now(self.ctx.cloud, sid)  # verify where and how it ended up
        kind = "cold-migrate" if last is not None and last.kind == "migration" else "live-migrate"
        if now is None:
            detail["note"] = "deleted while the host was drained"
        else:
            detail.update(destination=now.host, status=now.status)
            if last is None:
                detail["note"] = "moved by someone else"
            elif now.status not in ("ACTIVE", "PAUSED", "SHUTOFF") or now.host == self.order.host:
                self._step(
                    kind,
                    target=name,
                    started_at=datetime.fromisoformat(started) if started else finished,
                    finished_at=finished,
                    status="failed",
                    detail=detail,
                    error=f"ended {now.status} on {now.host}",
                )
                self._block(sid, f"migration {last.id} ended with the server {now.status} on {now.host}")
                return
        self._step(
            kind,
            target=name,
            started_at=datetime.fromisoformat(started) if started else finished,
            finished_at=finished,
            detail=detail,
        )
        self.state["done"][sid] = detail["destination"]

    def _watch_queue(self, sid: str, records: list[MigrationRecord]) -> None:
        """When the migration we issued left Nova's queue and began to move: Nova's own time when
        it is seen ``preparing`` (the record's update that ended the wait), else the last look
        that saw it still waiting. Queued and moving time are then told apart, not summed."""
        issued, last = self.state["issued"].get(sid), records[-1] if records else None
        moving = self.state.setdefault("moving", {})
        if (
            issued is None
            or last is None
            or sid in moving
            or last.created_at < datetime.fromisoformat(issued).replace(microsecond=0)
        ):
            return
        waiting = self.state.setdefault("waiting_seen", {})
        if last.status in MIGRATION_WAITING:
            waiting[sid] = utcnow().isoformat()
        elif last.status == "preparing" and last.updated_at is not None:
            moving[sid] = max(last.updated_at, datetime.fromisoformat(issued)).isoformat()
        else:
            moving[sid] = waiting.get(sid) or issued

    def _record_failures(self, sid: str, records: list[MigrationRecord]) -> None:
        seen = self.state["failures_seen"]
        for record in records:
            if record.status in MIGRATION_FAILED and record.id not in seen:
                seen.append(record.id)
                self.state["issued"].pop(sid, None)
                self.state.setdefault("moving", {}).pop(sid, None)
                self.state.setdefault("waiting_seen", {}).pop(sid, None)
                self._step(
                    "live-migrate" if record.kind == "live-migration" else "cold-migrate",
                    target=self.state["servers"][sid],
                    started_at=record.created_at,
                    status="failed",
                    detail={
                        "server_id": sid,
                        "source": record.source,
                        "destination": record.dest,
                        "migration_id": record.id,
                    },
                    error=f"migration {record.id} ended {record.status}; the server stayed on {self.order.host}",
                )

    def _block(self, sid: str, why: str) -> None:
        self.state["blocked"][sid] = [f"{self.state['servers'][sid]} ({sid})", why]
        self.changed = True


def reboot_node(ctx: RunContext, order: EvacuateOrder) -> None:
    """Reboot the emptied host over SSH and wait until it runs a new boot: steps ``reboot
    issued``, ``waiting for boot`` (as long as the node was away), ``node back``."""
    node = node_of_host(ctx.settings.inventory, order.host)
    state = ctx.state
    if "boot_id" not in state:
        with ctx.ssh(node.address, port=node.port) as ssh, ctx.step("reboot issued", target=order.host) as detail:
            state["boot_id"], state["reboot_at"] = boot_id(ssh, host=str(node)), utcnow().isoformat()
            ctx.checkpoint()  # never reboot twice: a resumed run only waits
            reboot(ssh, sudo=ctx.settings.ssh_sudo, host=str(node))
            detail.update(node=str(node), boot_id_before=state["boot_id"])
    with ctx.step("waiting for boot", target=order.host) as detail:  # spans the run's waits
        current = wait_until(lambda: _new_boot(ctx, node), INLINE_WAIT, interval=0.5, clock=ctx.clock)
        if not current:
            sent = datetime.fromisoformat(state["reboot_at"])
            if boot_id_now(ctx.settings, node) == state["boot_id"] and utcnow() - sent > timedelta(
                seconds=REBOOT_GRACE
            ):
                ctx.fail(
                    f"{order.host} did not reboot: still on boot {state['boot_id']} "
                    f"{REBOOT_GRACE:.0f}s after the reboot was sent"
                )
            ctx.recheck(
                2, waiting_for=f"{order.host} to come back from its reboot", key="reboot", deadline=REBOOT_DEADLINE
            )
        detail["reboot_sent_at"] = state["reboot_at"]
    with ctx.step("node back", target=order.host) as detail:
        detail.update(boot_id_before=state["boot_id"], boot_id_after=current, node=str(node))


def _new_boot(ctx: RunContext, node: Host) -> str | None:
    current = boot_id_now(ctx.settings, node)
    return current if current and current != ctx.state["boot_id"] else None


def return_to_service(ctx: RunContext, order: EvacuateOrder) -> None:
    """Once nova-compute reports in from the new boot, enable it (unless asked not to)."""
    since = datetime.fromisoformat(ctx.state["reboot_at"]).replace(microsecond=0)
    with ctx.step("service up", target=order.host) as detail:  # until nova-compute reports from the new boot
        service = wait_until(
            lambda: _service_up_since(ctx, order.host, since), INLINE_WAIT, interval=0.5, clock=ctx.clock
        )
        if not service:
            ctx.recheck(
                2, waiting_for=f"nova-compute on {order.host} to report up", key="service up", deadline=REBOOT_DEADLINE
            )
        detail.update(state=service.state, updated_at=service.updated_at)
    with ctx.step("enable nova-compute", target=order.host) as detail:
        detail.update(state=service.state, updated_at=service.updated_at)
        if order.keep_disabled:
            detail["action"] = "left disabled (--keep-disabled)"
        elif ctx.state["service_was"] != "enabled":
            detail["action"] = "left disabled: it was disabled before this run"
        else:
            set_service_enabled(ctx.cloud, service, True)
            detail["action"] = "enabled"


def _service_up_since(ctx: RunContext, host: str, since: datetime) -> Service | None:
    service = compute_service(ctx.cloud, host)
    return service if service.state == "up" and nova_time(service.updated_at) >= since else None


class DrainRebootOrder(BaseModel):
    """The data of ``command.hosts.drain_reboot``: the hosts, in order, and the evacuation options."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hosts: list[str] = Field(min_length=1)
    target: str | None = None
    max_parallel: int = Field(default=1, ge=1, le=50)
    reason: str = Field(default=DEFAULT_REASON, min_length=1, max_length=255)
    keep_disabled: bool = False
    cold_migrate_stopped: bool = False
    max_attempts: int = Field(default=2, ge=1, le=10)


def _where_the_hosts_stand(event: Envelope, ctx: RunContext, reason: str) -> str:
    """A cancelled rolling maintenance: the host in progress has its evacuation cancelled too
    (its own compensation says where it stands); the hosts after it were not touched."""
    order = DrainRebootOrder.model_validate(event.data or {})
    sent = ctx.state.get("sent", {})
    done, current = [], None
    for host in order.hosts:
        runs = ctx.outcomes([sent[host]])[sent[host]] if host in sent else []
        if runs and runs[0].status == "succeeded":
            done.append(host)
        elif runs:
            current = (host, runs[0])
            break
    untouched = order.hosts[len(done) + (current is not None) :]
    said = [f"done: {', '.join(done) or 'none'}"]
    if current is not None:
        host, run = current
        if run.status not in FINAL_STATUSES:
            ctx.cancel_run(run.id, f"{reason} (its rolling maintenance was cancelled)")
            said.append(
                f"{host}: its evacuation (run {run.id}) is cancelled too; `stackreflex audit show {run.id}` "
                "says where it stands"
            )
        else:
            said.append(f"{host}: its evacuation ended {run.status}")
    said.append(f"not touched: {', '.join(untouched) or 'none'}")
    return "; ".join(said)


@handler(
    "command.hosts.drain_reboot",
    max_retries=3,
    min_backoff=5,
    max_backoff=60,
    time_limit=60,
    compensate=_where_the_hosts_stand,
)
def drain_reboot_hosts(event: Envelope, ctx: RunContext) -> None:
    """Rolling maintenance: evacuate and reboot the hosts one at a time, never two at once,
    stopping at the first host that cannot be emptied or does not come back."""
    order = read_order(DrainRebootOrder, event, ctx)
    if len(set(order.hosts)) != len(order.hosts):
        ctx.fail(f"invalid {event.type}: a host is listed twice in {', '.join(order.hosts)}")
    sent = ctx.state.setdefault("sent", {})
    for position, host in enumerate(order.hosts):
        if host not in sent:
            data = {**order.model_dump(exclude={"hosts"}), "host": host, "reboot": True}
            sent[host] = ctx.publish("command.host.evacuate", subject=host, data=data, key=host).id
        runs = ctx.outcomes([sent[host]])[sent[host]]
        run = runs[0] if runs else None
        if run is None or run.status not in FINAL_STATUSES:
            note = run.progress_note if run is not None and run.progress_note else "starting"
            ctx.progress(position, len(order.hosts), f"{host}: {note}")
            ctx.recheck(
                2,
                waiting_for=f"{host} to be drained and rebooted",
                key=f"host {host}",
                deadline=DRAIN_DEADLINE + REBOOT_DEADLINE,
            )
        if run.status != "succeeded":
            untouched = ", ".join(order.hosts[position + 1 :]) or "none"
            ctx.fail(f"stopped at {host} (run {run.id} {run.status}: {run.error}); hosts not touched: {untouched}")
    ctx.progress(len(order.hosts), len(order.hosts), "every host drained, rebooted and back")

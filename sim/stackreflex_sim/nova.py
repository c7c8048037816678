"""Nova v2.1: compute services, servers on hosts across projects, live and cold migration,
migration listings, stop/start and createImage, with the real API's states and errors.

Live migrations run at most ``max_concurrent_live_migrations`` at a time per source host
(Nova's default: one); others wait ``queued``. The simulator keeps what a test needs to check
an orchestrator: the most migrations ever outstanding (accepted, not finished) per source host.
A compute host's service goes ``down`` while its node is rebooting.
"""

import itertools
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from .clock import SimClock, utcnow
from .faults import Faults
from .http import HttpError, Request, Response, Router, requested_microversion
from .keystone import project_id
from .scenario import Scenario

MAX_VERSION = "2.100"
PREFIX = "/compute/v2.1"
MIGRATION_STEPS = ("queued", "preparing", "running", "post-migrating", "completed")


def nova_time(moment: datetime | None) -> str | None:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


_ERROR_KEYS = {400: "badRequest", 403: "forbidden", 404: "itemNotFound", 409: "conflictingRequest"}


def nova_error(error: HttpError) -> object:
    return {_ERROR_KEYS.get(error.status, "computeFault"): {"code": error.status, "message": error.message}}


def microversion(request: Request) -> tuple[int, int]:
    return requested_microversion(request, "compute", "2.1", MAX_VERSION, "x-openstack-nova-api-version")


@dataclass(eq=False)
class ComputeService:
    id: str
    legacy_id: int
    host: str
    status: str = "enabled"
    state: str = "up"
    disabled_reason: str | None = None
    updated: datetime = field(default_factory=utcnow)


@dataclass(eq=False)
class Server:
    id: str
    name: str
    project_id: str
    host: str
    status: str = "ACTIVE"
    task_state: str | None = None
    volumes: list[str] = field(default_factory=list)
    created: datetime = field(default_factory=utcnow)
    updated: datetime = field(default_factory=utcnow)
    resize_source: str | None = None


@dataclass(eq=False)
class Migration:
    id: int
    uuid: str
    server: Server
    kind: str  # live-migration or migration
    source: str
    dest: str | None
    status: str = "queued"
    created: datetime = field(default_factory=utcnow)
    updated: datetime = field(default_factory=utcnow)


class Nova:
    def __init__(self, scenario: Scenario, base_url: str, clock: SimClock, faults: Faults, images):
        self.scenario, self.base_url, self.clock, self.faults = scenario, base_url, clock, faults
        self.images = images  # Glance, for createImage
        self.lock = threading.RLock()
        self.services: dict[str, ComputeService] = {}
        self.servers: dict[str, Server] = {}
        self.migrations: list[Migration] = []
        self._ids = itertools.count(1)
        #: live migrations running per source host now, and the most ever seen at once
        self.in_flight: dict[str, int] = {}
        self.max_in_flight_total = 0
        self._in_flight_total = 0
        #: live migrations accepted and not finished per source host, and the most ever
        self.outstanding: dict[str, int] = {}
        self.max_outstanding: dict[str, int] = {}
        for n, host in enumerate(scenario.compute_hosts, 1):
            self.services[host] = ComputeService(str(uuid.uuid5(uuid.NAMESPACE_DNS, f"svc-{host}")), n, host)
        projects = [project_id(p) for p in scenario.projects]
        self.token_project = project_id(scenario.project)
        counter = itertools.count(1)
        for host, count in scenario.compute_hosts.items():
            for i in range(count):
                n = next(counter)
                server = Server(
                    str(uuid.uuid5(uuid.NAMESPACE_DNS, f"server-{host}-{i}")),
                    f"vm-{host.split('.')[0]}-{i}",
                    projects[n % len(projects)],
                    host,
                )
                self.servers[server.id] = server

    @property
    def endpoint(self) -> str:
        return f"{self.base_url}{PREFIX}"

    # -- the API -----------------------------------------------------------------------

    def routes(self, router: Router) -> None:
        router.add("GET", "/compute", self.versions, nova_error, auth=False)
        router.add("GET", PREFIX, self.version, nova_error, auth=False)
        router.add("GET", PREFIX + "/os-services", self.list_services, nova_error)
        router.add("PUT", PREFIX + "/os-services/{service}", self.update_service, nova_error)
        router.add("GET", PREFIX + "/servers/detail", self.list_servers, nova_error)
        router.add("GET", PREFIX + "/servers", self.list_servers, nova_error)
        router.add("GET", PREFIX + "/servers/{server}", self.show_server, nova_error)
        router.add("POST", PREFIX + "/servers/{server}/action", self.action, nova_error)
        router.add("GET", PREFIX + "/servers/{server}/migrations", self.server_migrations, nova_error)
        router.add("GET", PREFIX + "/os-migrations", self.list_migrations, nova_error)

    def _version_doc(self) -> dict:
        return {
            "id": "v2.1",
            "status": "CURRENT",
            "version": MAX_VERSION,
            "min_version": "2.1",
            "updated": "2013-07-23T11:33:21Z",
            "links": [{"rel": "self", "href": f"{self.endpoint}/"}],
            "media-types": [{"base": "application/json", "type": "application/vnd.openstack.compute+json;version=2.1"}],
        }

    def versions(self, request: Request) -> Response:
        return Response(200, {"versions": [self._version_doc()]})

    def version(self, request: Request) -> Response:
        return Response(200, {"version": self._version_doc()})

    @staticmethod
    def _headers(request: Request) -> dict:
        major, minor = microversion(request)
        version = f"{major}.{minor}"
        return {
            "OpenStack-API-Version": f"compute {version}",
            "X-OpenStack-Nova-API-Version": version,
            "Vary": "OpenStack-API-Version, X-OpenStack-Nova-API-Version",
        }

    def _service_body(self, service: ComputeService, request: Request) -> dict:
        return {
            "id": service.id if microversion(request) >= (2, 53) else service.legacy_id,
            "binary": "nova-compute",
            "host": service.host,
            "zone": "nova",
            "status": service.status,
            "state": service.state,
            "updated_at": nova_time(service.updated),
            "disabled_reason": service.disabled_reason,
            "forced_down": False,
        }

    def list_services(self, request: Request) -> Response:
        with self.lock:
            found = [
                s
                for s in self.services.values()
                if request.arg("host") in (None, s.host) and request.arg("binary") in (None, "nova-compute")
            ]
            return Response(200, {"services": [self._service_body(s, request) for s in found]}, self._headers(request))

    def update_service(self, request: Request) -> Response:
        body, key = request.json(), request.match["service"]
        with self.lock:
            if microversion(request) >= (2, 53):
                service = next((s for s in self.services.values() if s.id == key), None)
                if service is None:
                    raise HttpError(404, "Not Found", f"Service {key} not found.")
                status = body.get("status")
                if status not in (None, "enabled", "disabled"):
                    raise HttpError(400, "Bad Request", f"Invalid input for field/attribute status. Value: {status}.")
                if status == "enabled" and body.get("disabled_reason"):
                    raise HttpError(
                        400, "Bad Request", "Specifying 'disabled_reason' with status 'enabled' is invalid."
                    )
                if status:
                    self._set_status(service, status, body.get("disabled_reason"))
                return Response(200, {"service": self._service_body(service, request)}, self._headers(request))
            # before 2.53: PUT /os-services/{enable|disable|disable-log-reason} with host and binary
            if key not in ("enable", "disable", "disable-log-reason"):
                raise HttpError(404, "Not Found", f"Unknown action {key}")
            service = self.services.get(body.get("host"))
            if service is None:
                raise HttpError(404, "Not Found", f"Compute host {body.get('host')} could not be found.")
            self._set_status(service, "enabled" if key == "enable" else "disabled", body.get("disabled_reason"))
            legacy = {"host": service.host, "binary": "nova-compute", "status": service.status}
            if key == "disable-log-reason":
                legacy["disabled_reason"] = service.disabled_reason
            return Response(200, {"service": legacy}, self._headers(request))

    def _set_status(self, service: ComputeService, status: str, reason: str | None) -> None:
        service.status, service.updated = status, utcnow()
        service.disabled_reason = reason if status == "disabled" else None

    def _server_body(self, server: Server, request: Request) -> dict:
        vm_state = {
            "ACTIVE": "active",
            "MIGRATING": "active",
            "SHUTOFF": "stopped",
            "VERIFY_RESIZE": "resized",
            "RESIZE": "active",
            "ERROR": "error",
            "PAUSED": "paused",
        }.get(server.status, "active")
        return {
            "id": server.id,
            "name": server.name,
            "status": server.status,
            "tenant_id": server.project_id,
            "user_id": "sim-user",
            "hostId": uuid.uuid5(uuid.NAMESPACE_DNS, server.host).hex,
            "OS-EXT-SRV-ATTR:host": server.host,
            "OS-EXT-SRV-ATTR:hypervisor_hostname": server.host,
            "OS-EXT-SRV-ATTR:instance_name": f"instance-{server.id[:8]}",
            "OS-EXT-STS:task_state": server.task_state,
            "OS-EXT-STS:vm_state": vm_state,
            "OS-EXT-STS:power_state": 4 if server.status == "SHUTOFF" else 1,
            "OS-EXT-AZ:availability_zone": "nova",
            "OS-SRV-USG:launched_at": nova_time(server.created),
            "OS-SRV-USG:terminated_at": None,
            "os-extended-volumes:volumes_attached": [{"id": v, "delete_on_termination": False} for v in server.volumes],
            "flavor": {
                "original_name": "m1.small",
                "vcpus": 1,
                "ram": 2048,
                "disk": 20,
                "ephemeral": 0,
                "swap": 0,
                "extra_specs": {},
            },
            "image": "",
            "addresses": {},
            "metadata": {},
            "tags": [],
            "locked": False,
            "description": None,
            "created": nova_time(server.created),
            "updated": nova_time(server.updated),
            "progress": 0,
            "config_drive": "",
            "key_name": None,
            "security_groups": [{"name": "default"}],
            "links": [{"rel": "self", "href": f"{self.endpoint}/servers/{server.id}"}],
        }

    def list_servers(self, request: Request) -> Response:
        all_projects = (
            (request.arg("all_tenants") or "").lower() in ("1", "true", "") if "all_tenants" in request.query else False
        )
        with self.lock:
            found = [
                s
                for s in self.servers.values()
                if (all_projects or s.project_id == self.token_project)
                and request.arg("host") in (None, s.host)
                and request.arg("status") in (None, s.status)
                and request.arg("name") in (None, s.name)
            ]
            return Response(200, {"servers": [self._server_body(s, request) for s in found]}, self._headers(request))

    def _server(self, key: str) -> Server:
        server = self.servers.get(key)
        if server is None:
            raise HttpError(404, "Not Found", f"Instance {key} could not be found.")
        return server

    def show_server(self, request: Request) -> Response:
        with self.lock:
            return Response(
                200,
                {"server": self._server_body(self._server(request.match["server"]), request)},
                self._headers(request),
            )

    def action(self, request: Request) -> Response:
        body = request.json()
        if len(body) != 1:
            raise HttpError(400, "Bad Request", "There is no such action")
        ((name, args),) = body.items()
        with self.lock:
            server = self._server(request.match["server"])
            handler = {
                "os-migrateLive": self._live_migrate,
                "os-stop": self._stop,
                "os-start": self._start,
                "createImage": self._create_image,
                "migrate": self._cold_migrate,
                "confirmResize": self._confirm_resize,
            }.get(name)
            if handler is None:
                raise HttpError(400, "Bad Request", f"There is no such action: {name}")
            result = handler(server, args or {})
            server.updated = utcnow()
        return Response(202, result, self._headers(request))

    def _conflict(self, server: Server, action: str) -> HttpError:
        if server.task_state:
            return HttpError(
                409, "Conflict", f"Cannot '{action}' instance {server.id} while it is in task_state {server.task_state}"
            )
        state = {"SHUTOFF": "stopped", "ACTIVE": "active", "VERIFY_RESIZE": "resized"}.get(server.status, "error")
        return HttpError(409, "Conflict", f"Cannot '{action}' instance {server.id} while it is in vm_state {state}")

    def _pick_host(self, server: Server) -> str | None:
        candidates = [
            s.host
            for s in self.services.values()
            if s.host != server.host and s.status == "enabled" and s.state == "up"
        ]
        if not candidates:
            return None
        load = {h: sum(1 for s in self.servers.values() if s.host == h) for h in candidates}
        return min(candidates, key=lambda h: (load[h], h))

    def _live_migrate(self, server: Server, args: dict) -> None:
        if server.status not in ("ACTIVE", "PAUSED") or server.task_state:
            raise self._conflict(server, "os-migrateLive")
        target = args.get("host")
        if target is not None:
            if target not in self.services:
                raise HttpError(400, "Bad Request", f"Compute host {target} could not be found.")
            if target == server.host:
                raise HttpError(
                    400, "Bad Request", f"Unable to migrate instance ({server.id}) to current host ({target})."
                )
        if self.faults.strike("no_valid_host", server.id, server.name):
            target = None
            dest = None
        else:
            dest = target or self._pick_host(server)
        if dest is None:
            raise HttpError(400, "Bad Request", "No valid host was found. There are not enough hosts available.")
        migration = Migration(next(self._ids), str(uuid.uuid4()), server, "live-migration", server.host, dest)
        self.migrations.append(migration)
        server.status, server.task_state = "MIGRATING", "migrating"
        source = migration.source
        self.outstanding[source] = self.outstanding.get(source, 0) + 1
        self.max_outstanding[source] = max(self.max_outstanding.get(source, 0), self.outstanding[source])
        self._advance_live(migration)

    def _advance_live(self, migration: Migration) -> None:
        """Start the migration if its source host has a free slot, else leave it queued."""
        source, limit = migration.source, self.scenario.max_concurrent_live_migrations
        if limit and self.in_flight.get(source, 0) >= limit:
            return
        self.in_flight[source] = self.in_flight.get(source, 0) + 1
        self._in_flight_total += 1
        self.max_in_flight_total = max(self.max_in_flight_total, self._in_flight_total)
        migration.status, migration.updated = MIGRATION_STEPS[1], utcnow()  # no longer queued: started once
        step = self.scenario.live_migration_time / 4
        for i, status in enumerate(MIGRATION_STEPS[2:4], 1):
            self.clock.later(step * i, self._set_migration, migration, status)
        self.clock.later(step * 4, self._finish_live, migration)

    def _set_migration(self, migration: Migration, status: str) -> None:
        with self.lock:
            if migration.status not in ("completed", "error", "failed"):
                migration.status, migration.updated = status, utcnow()

    def _finish_live(self, migration: Migration) -> None:
        with self.lock:
            server = migration.server
            failed = self.faults.strike("migration_failure", server.id, server.name)
            migration.status, migration.updated = ("error" if failed else "completed"), utcnow()
            if not failed:
                server.host = migration.dest
            server.status, server.task_state, server.updated = "ACTIVE", None, utcnow()
            self.in_flight[migration.source] -= 1
            self.outstanding[migration.source] -= 1
            self._in_flight_total -= 1
            waiting = next(
                (
                    m
                    for m in self.migrations
                    if m.kind == "live-migration"
                    and m.status == "queued"
                    and m.source == migration.source
                    and m is not migration
                ),
                None,
            )
            if waiting is not None:
                self._advance_live(waiting)

    def power(self, host: str, up: bool) -> None:
        """The compute host's node went down (reboot) or came back: its service follows."""
        with self.lock:
            service = self.services.get(host)
            if service is not None:
                service.state, service.updated = ("up" if up else "down"), utcnow()

    def _stop(self, server: Server, args: dict) -> None:
        if server.status != "ACTIVE" or server.task_state:
            raise self._conflict(server, "stop")
        server.task_state = "powering-off"
        self.clock.later(self.scenario.power_time, self._power, server, "SHUTOFF")

    def _start(self, server: Server, args: dict) -> None:
        if server.status != "SHUTOFF" or server.task_state:
            raise self._conflict(server, "start")
        server.task_state = "powering-on"
        self.clock.later(self.scenario.power_time, self._power, server, "ACTIVE")

    def _power(self, server: Server, status: str) -> None:
        with self.lock:
            server.status, server.task_state, server.updated = status, None, utcnow()

    def _create_image(self, server: Server, args: dict) -> dict:
        if server.task_state:
            raise self._conflict(server, "createImage")
        name = args.get("name")
        if not name:
            raise HttpError(400, "Bad Request", "Invalid input for field/attribute createImage.")
        image = self.images.snapshot_of(server, name, args.get("metadata") or {})
        return {"image_id": image.id}

    def _cold_migrate(self, server: Server, args: dict) -> None:
        if server.status not in ("ACTIVE", "SHUTOFF") or server.task_state:
            raise self._conflict(server, "migrate")
        dest = args.get("host") or self._pick_host(server)
        if dest is None or self.faults.strike("no_valid_host", server.id, server.name):
            raise HttpError(400, "Bad Request", "No valid host was found. There are not enough hosts available.")
        migration = Migration(next(self._ids), str(uuid.uuid4()), server, "migration", server.host, dest, "migrating")
        self.migrations.append(migration)
        server.resize_source, server.task_state = server.status, "resize_migrating"
        self.clock.later(self.scenario.cold_migration_time, self._finish_cold, migration)

    def _finish_cold(self, migration: Migration) -> None:
        with self.lock:
            server = migration.server
            server.host, server.status, server.task_state = migration.dest, "VERIFY_RESIZE", None
            migration.status, migration.updated = "finished", utcnow()

    def _confirm_resize(self, server: Server, args: dict) -> None:
        if server.status != "VERIFY_RESIZE":
            raise self._conflict(server, "confirmResize")
        server.status, server.resize_source = server.resize_source or "ACTIVE", None
        for migration in self.migrations:
            if migration.server is server and migration.status == "finished":
                migration.status = "confirmed"

    def _migration_body(self, migration: Migration, request: Request) -> dict:
        body = {
            "id": migration.id,
            "uuid": migration.uuid,
            "instance_uuid": migration.server.id,
            "migration_type": migration.kind,
            "status": migration.status,
            "source_compute": migration.source,
            "dest_compute": migration.dest,
            "source_node": migration.source,
            "dest_node": migration.dest,
            "dest_host": None,
            "source_region": "regionOne",
            "dest_region": "regionOne",
            "old_instance_type_id": 1,
            "new_instance_type_id": 1,
            "created_at": nova_time(migration.created),
            "updated_at": nova_time(migration.updated),
            "project_id": migration.server.project_id,
            "user_id": "sim-user",
            "links": [
                {"rel": "self", "href": f"{self.endpoint}/servers/{migration.server.id}/migrations/{migration.id}"}
            ],
        }
        return body

    def list_migrations(self, request: Request) -> Response:
        with self.lock:
            found = [
                m
                for m in self.migrations
                if request.arg("instance_uuid") in (None, m.server.id)
                and request.arg("migration_type") in (None, m.kind)
                and request.arg("source_compute") in (None, m.source)
                and request.arg("status") in (None, m.status)
            ]
            return Response(
                200, {"migrations": [self._migration_body(m, request) for m in reversed(found)]}, self._headers(request)
            )

    def server_migrations(self, request: Request) -> Response:
        with self.lock:
            server = self._server(request.match["server"])
            running = [
                m
                for m in self.migrations
                if m.server is server and m.kind == "live-migration" and m.status in MIGRATION_STEPS[:4]
            ]
            return Response(
                200,
                {
                    "migrations": [
                        {
                            **self._migration_body(m, request),
                            "server_uuid": server.id,
                            "memory_total_bytes": 2**31,
                            "memory_processed_bytes": 0,
                            "memory_remaining_bytes": 2**31,
                            "disk_total_bytes": 0,
                            "disk_processed_bytes": 0,
                            "disk_remaining_bytes": 0,
                        }
                        for m in running
                    ]
                },
                self._headers(request),
            )

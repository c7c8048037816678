"""Ironic v1: the bare metal nodes the pre-upgrade validations list, with Ironic's microversions.

Every node is deployed (``active``, powered on). The ``ironic_maintenance`` fault puts one
(by name or uuid) in maintenance. Ironic answers errors as ``{"error_message": "<JSON>"}``
(its ParsableErrorMiddleware): a failing API method's ``faultcode``/``faultstring``, or, for a
version refused while routing, pecan's ``code``/``title``/``description``.
"""

import json
import uuid
from datetime import datetime, timedelta

from .clock import utcnow
from .faults import Faults
from .http import HttpError, Request, Response, Router
from .scenario import Scenario

MIN_VERSION, MAX_VERSION = (1, 1), (1, 87)
VERSION_HEADER = "X-OpenStack-Ironic-API-Version"
#: What a node list shows without ``?detail`` or ``?fields`` (``_DEFAULT_RETURN_FIELDS``).
BRIEF = ("instance_uuid", "maintenance", "power_state", "provision_state", "uuid", "name")
#: The states a node can be in (a ``?provision_state=`` filter must name one).
STATES = (
    "enroll",
    "verifying",
    "manageable",
    "available",
    "active",
    "wait call-back",
    "deploying",
    "deploy failed",
    "deploy complete",
    "deploy hold",
    "deleting",
    "deleted",
    "cleaning",
    "clean wait",
    "clean failed",
    "clean hold",
    "error",
    "rebuild",
    "inspecting",
    "inspect failed",
    "inspect wait",
    "adopting",
    "adopt failed",
    "rescue",
    "rescue failed",
    "rescue wait",
    "rescuing",
    "unrescue failed",
    "unrescuing",
    "servicing",
    "service wait",
    "service failed",
    "service hold",
)
TRUE, FALSE = ("1", "t", "true", "on", "y", "yes"), ("0", "f", "false", "off", "n", "no")


def version_string(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"


def ironic_time(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def ironic_error(error: HttpError) -> object:
    if error.status == 401:  # keystonemiddleware answers before Ironic does
        return {"error": {"code": 401, "title": error.title, "message": error.message}}
    if error.error_type == "pecan":
        inner = {"code": error.status, "title": error.title, "description": error.message}
    else:
        inner = {
            "faultcode": "Client" if error.status < 500 else "Server",
            "faultstring": error.message,
            "debuginfo": None,
        }
    return {"error_message": json.dumps(inner)}


def boolean(name: str, value: str | None) -> bool | None:
    """oslo's strict ``bool_from_string``, with Ironic's error."""
    if value is None:
        return None
    if value.strip().lower() in TRUE + FALSE:
        return value.strip().lower() in TRUE
    acceptable = ", ".join(f"'{s}'" for s in sorted(TRUE + FALSE))
    raise HttpError(
        400, "Bad Request", f"Invalid {name}: Unrecognized value '{value}', acceptable values are: {acceptable}"
    )


def requested_version(request: Request) -> tuple[int, int]:
    """The microversion asked for: ``OpenStack-API-Version: baremetal X.Y`` first, then the legacy
    header, else the oldest (a pre-Kilo client); a bad or unsupported one is a 406."""
    raw = None
    for part in request.headers.get("openstack-api-version", "").split(","):
        service, _, value = part.strip().partition(" ")
        if service.lower() == "baremetal":
            raw = value.strip()
    raw = raw or request.headers.get(VERSION_HEADER.lower()) or version_string(MIN_VERSION)
    if raw.lower() == "latest":
        return MAX_VERSION
    try:
        major, minor = (int(n) for n in raw.split("."))
    except ValueError:
        raise HttpError(406, "Not Acceptable", f"Invalid value for {VERSION_HEADER} header", "pecan") from None
    supported = f"The supported version range is: [{version_string(MIN_VERSION)}, {version_string(MAX_VERSION)}]."
    if major != MAX_VERSION[0]:
        raise HttpError(
            406,
            "Not Acceptable",
            f"Mutually exclusive versions requested. Version {major}.{minor} "
            f"requested but not supported by this service. {supported}",
            "pecan",
        )
    if not MIN_VERSION <= (major, minor) <= MAX_VERSION:
        raise HttpError(
            406,
            "Not Acceptable",
            f"Version {major}.{minor} was requested but the minor version is "
            f"not supported by this service. {supported}",
            "pecan",
        )
    return major, minor


class Ironic:
    def __init__(self, scenario: Scenario, base_url: str, faults: Faults):
        self.scenario, self.base_url, self.faults = scenario, base_url, faults
        names = scenario.baremetal_nodes
        if names is None:
            names = [host.split(".")[0] for host in scenario.compute_hosts]
        self.created = utcnow() - timedelta(days=1)
        #: uuid → name
        self.nodes = {str(uuid.uuid5(uuid.NAMESPACE_DNS, f"ironic-node-{name}")): name for name in names}

    @property
    def endpoint(self) -> str:
        return f"{self.base_url}/baremetal"

    def routes(self, router: Router) -> None:
        router.add("GET", "/baremetal", self._versioned(self.root, routed=False), ironic_error, auth=False)
        router.add("GET", "/baremetal/v1", self._versioned(self.v1), ironic_error, auth=False)
        router.add("GET", "/baremetal/v1/nodes", self._versioned(self.list_nodes), ironic_error)
        router.add("GET", "/baremetal/v1/nodes/detail", self._versioned(self.list_details), ironic_error)
        router.add("GET", "/baremetal/v1/nodes/{node}", self._versioned(self.show_node), ironic_error)

    def _versioned(self, handler, routed: bool = True):
        """Every answer, errors too, carries the supported range (what ironicclient negotiates
        from after a 406) and, once accepted, the version served. The root's version check runs
        in its API method (a ``faultstring``); elsewhere pecan's routing refuses it."""

        def serve(request: Request) -> Response:
            headers = {
                "X-OpenStack-Ironic-API-Minimum-Version": version_string(MIN_VERSION),
                "X-OpenStack-Ironic-API-Maximum-Version": version_string(MAX_VERSION),
            }
            try:
                version = requested_version(request)
            except HttpError as error:
                error.error_type = "pecan" if routed else None
                return Response(error.status, ironic_error(error), headers)
            headers[VERSION_HEADER] = version_string(version)
            try:
                response = handler(request)
            except HttpError as error:
                return Response(error.status, ironic_error(error), headers)
            response.headers.update(headers)
            return response

        return serve

    def _links(self, *path: str, collection: bool = False) -> list[dict]:
        tail = "/".join(path) + ("/" if collection else "")
        return [
            {"href": f"{self.endpoint}/v1/{tail}", "rel": "self"},
            {"href": f"{self.endpoint}/{tail}", "rel": "bookmark"},
        ]

    def _version_doc(self) -> dict:
        return {
            "id": "v1",
            "links": [{"href": f"{self.endpoint}/v1/", "rel": "self"}],
            "status": "CURRENT",
            "min_version": version_string(MIN_VERSION),
            "version": version_string(MAX_VERSION),
        }

    def root(self, request: Request) -> Response:
        return Response(
            200,
            {
                "name": "OpenStack Ironic API",
                "description": "Ironic is an OpenStack project which enables the provision and "
                "management of baremetal machines.",
                "default_version": self._version_doc(),
                "versions": [self._version_doc()],
            },
        )

    def v1(self, request: Request) -> Response:
        body = {
            "id": "v1",
            "links": [
                {"href": f"{self.endpoint}/v1/", "rel": "self"},
                {
                    "href": "https://docs.openstack.org/ironic/latest/contributor/webapi.html",
                    "rel": "describedby",
                    "type": "text/html",
                },
            ],
            "media_types": {"base": "application/json", "type": "application/vnd.openstack.ironic.v1+json"},
            "version": self._version_doc(),
        }
        for name in (
            "chassis",
            "nodes",
            "ports",
            "drivers",
            "portgroups",
            "volume",
            "lookup",
            "heartbeat",
            "conductors",
            "allocations",
            "deploy_templates",
            "shards",
            "continue_inspection",
        ):
            body[name] = self._links(name, collection=True)
        return Response(200, body)

    def _instance(self, node_id: str) -> str:
        """The overcloud server deployed on the node (Nova's instance on the undercloud)."""
        return str(uuid.uuid5(uuid.NAMESPACE_DNS, f"instance-{self.nodes[node_id]}"))

    def _maintenance(self, node_id: str) -> bool:
        return any(f.target in (node_id, self.nodes[node_id]) for f in self.faults.active("ironic_maintenance"))

    def _node_body(self, node_id: str) -> dict:
        name, maintenance = self.nodes[node_id], self._maintenance(node_id)

        def links(sub):
            return self._links("nodes", f"{node_id}/{sub}")

        return {
            "allocation_uuid": None,
            "automated_clean": None,
            "bios_interface": "no-bios",
            "boot_interface": "ipxe",
            "boot_mode": "uefi",
            "chassis_uuid": None,
            "clean_step": {},
            "conductor": "undercloud.localdomain",
            "conductor_group": "",
            "console_enabled": False,
            "console_interface": "no-console",
            "created_at": ironic_time(self.created),
            "deploy_interface": "direct",
            "deploy_step": {},
            "description": None,
            "driver": "ipmi",
            "driver_info": {
                "ipmi_address": f"192.168.24.{100 + list(self.nodes).index(node_id)}",
                "ipmi_username": "admin",
                "ipmi_password": "******",
            },
            "driver_internal_info": {},
            "extra": {},
            "fault": None,
            "firmware_interface": "no-firmware",
            "inspect_interface": "inspector",
            "inspection_finished_at": None,
            "inspection_started_at": None,
            "instance_info": {},
            "instance_uuid": self._instance(node_id),
            "last_error": None,
            "lessee": None,
            "links": self._links("nodes", node_id),
            "maintenance": maintenance,
            "maintenance_reason": "simulated maintenance" if maintenance else None,
            "management_interface": "ipmitool",
            "name": name,
            "network_data": {},
            "network_interface": "flat",
            "owner": None,
            "parent_node": None,
            "portgroups": links("portgroups"),
            "ports": links("ports"),
            "power_interface": "ipmitool",
            "power_state": "power on",
            "properties": {"cpu_arch": "x86_64", "cpus": 16, "memory_mb": 65536, "local_gb": 500},
            "protected": False,
            "protected_reason": None,
            "provision_state": "active",
            "provision_updated_at": ironic_time(self.created),
            "raid_config": {},
            "raid_interface": "no-raid",
            "rescue_interface": "no-rescue",
            "reservation": None,
            "resource_class": "baremetal",
            "retired": False,
            "retired_reason": None,
            "secure_boot": None,
            "service_step": {},
            "shard": None,
            "states": links("states"),
            "storage_interface": "noop",
            "target_power_state": None,
            "target_provision_state": None,
            "target_raid_config": {},
            "traits": [],
            "updated_at": ironic_time(self.created),
            "uuid": node_id,
            "vendor_interface": "ipmitool",
            "volume": links("volume"),
        }

    @staticmethod
    def _fields(request: Request) -> list[str] | None:
        raw = request.arg("fields")
        return [f.strip() for f in raw.split(",") if f.strip()] if raw is not None else None

    def _shown(self, node_id: str, fields: list[str] | None) -> dict:
        """The node with only the fields asked for (and its links), or a 400 for one it does not have."""
        body = self._node_body(node_id)
        if fields is None:
            return body
        for name in fields:
            if name not in body or name in ("links", "ports", "portgroups", "states", "volume"):
                raise HttpError(400, "Bad Request", f"Field {name} is not a valid field.")
        return {k: v for k, v in body.items() if k in fields or k == "links"}

    def _listed(self, request: Request, fields: list[str] | None) -> Response:
        maintenance = boolean("maintenance", request.arg("maintenance"))
        state = request.arg("provision_state")
        if state is not None and state not in STATES:
            raise HttpError(400, "Bad Request", f'Provision state "{state}" is not valid')
        found = [
            n
            for n in self.nodes
            if maintenance in (None, self._maintenance(n))
            and state in (None, "active")
            and request.arg("instance_uuid") in (None, self._instance(n))
        ]
        return Response(200, {"nodes": [self._shown(n, fields) for n in found]})

    def list_nodes(self, request: Request) -> Response:
        detail, fields = boolean("detail", request.arg("detail")), self._fields(request)
        if fields is not None and detail:
            raise HttpError(400, "Bad Request", "Can not specify ?detail=True and fields in the same request.")
        return self._listed(request, fields if fields is not None or detail else list(BRIEF))

    def list_details(self, request: Request) -> Response:
        return self._listed(request, None)

    def show_node(self, request: Request) -> Response:
        key = request.match["node"]
        node_id = key if key in self.nodes else next((i for i, n in self.nodes.items() if n == key), None)
        if node_id is None:
            raise HttpError(404, "Not Found", f"Node {key} could not be found.")
        return Response(200, self._shown(node_id, self._fields(request)))

"""os-collect-config on a simulated node: reads its configuration the way the real agent does,
then polls over HTTP from the node's own address, and runs the software deployments it finds.

The collectors: ``request`` GETs its temp URL; ``heat`` logs in to Keystone as the node's own
user and reads its resource's metadata; ``cfn`` asks heat-api-cfn's ``DescribeStackResource``
with an EC2-signed request. Each caches what it fetched as ``<collector>.json``. Every
deployment not run yet (``deployments`` of the metadata) is run, as os-refresh-config's
heat-config hooks would, and its outputs signalled back with the deployment's transport:
PUT to a Swift temp URL, a Heat resource signal, a pre-signed CFN URL, or nothing.
"""

import configparser
import http.client
import json
import threading
import time
from urllib.parse import parse_qsl, urlencode, urlsplit
from xml.etree import ElementTree

from .cfn import ec2_signature
from .clock import SimClock
from .faults import Faults

#: Where the agent reads its configuration.
CONFIG_PATH = "/etc/os-collect-config.conf"
LOCAL_DATA_DIR = "/var/lib/os-collect-config/local-data/"
#: Where each collector caches what it fetched: request.json, heat.json, cfn.json.
CACHE_DIR = "/var/lib/os-collect-config/"
#: Where heat-config records the deployments it ran (one file each).
DEPLOYED_DIR = "/var/lib/heat-config/deployed/"
DEFAULT_POLLING_INTERVAL = 30.0
#: What each collector needs to run.
NEEDED = {
    "request": ("metadata_url",),
    "heat": ("auth_url", "user_id", "password", "project_id", "stack_id", "resource_name"),
    "cfn": ("metadata_url", "access_key_id", "secret_access_key", "stack_name", "path"),
}


def agent_settings(files: dict[str, bytes]) -> tuple[str | None, dict, float]:
    """(collector, its options, polling interval) from the INI file or a local-data JSON file."""
    interval = DEFAULT_POLLING_INTERVAL
    if CONFIG_PATH in files:
        parser = configparser.ConfigParser()
        try:
            parser.read_string(files[CONFIG_PATH].decode())
        except (configparser.Error, UnicodeDecodeError):
            return None, {}, interval
        interval = parser.getfloat("DEFAULT", "polling_interval", fallback=interval)
        collectors = [c.strip() for c in parser.get("DEFAULT", "collectors", fallback="request").split(",")]
        for collector in collectors:
            options = dict(parser[collector]) if parser.has_section(collector) else {}
            if collector in NEEDED and all(options.get(k) for k in NEEDED[collector]):
                return collector, options, interval
    for path in sorted(p for p in files if p.startswith(LOCAL_DATA_DIR) and p.endswith(".json")):
        try:
            occ = json.loads(files[path]).get("os-collect-config", {})
        except (ValueError, AttributeError):
            continue
        for collector in occ.get("collectors", ["request"]):
            options = occ.get(collector) or {}
            if collector in NEEDED and isinstance(options, dict) and all(options.get(k) for k in NEEDED[collector]):
                return collector, options, float(occ.get("polling_interval", interval))
    return None, {}, interval


class Agent:
    """The polling loop of one node's os-collect-config service, with its deployments."""

    def __init__(
        self,
        node_address: str,
        files: dict[str, bytes],
        lock: threading.RLock,
        clock: SimClock,
        faults: Faults | None = None,
        hostname: str = "",
        deployment_time: float = 0.0,
    ):
        self.node_address = node_address
        self.files = files
        self.lock = lock
        self.clock = clock
        self.faults = faults or Faults()
        self.hostname = hostname
        #: simulated seconds a deployment takes to run before it is signalled
        self.deployment_time = deployment_time
        self._stop: threading.Event | None = None
        self.polls = 0
        self.last_status: int | None = None

    def start(self) -> None:
        self.stop()
        with self.lock:
            collector, options, interval = agent_settings(self.files)
        if collector is None:
            return  # like the real agent, it idles without a collector to run
        self._stop = threading.Event()
        threading.Thread(
            target=self._run,
            args=(collector, options, interval, self._stop),
            daemon=True,
            name=f"occ-{self.node_address}",
        ).start()

    def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()
            self._stop = None

    def _run(self, collector: str, options: dict, interval: float, stop: threading.Event) -> None:
        fetch = {"request": self._request, "heat": self._heat, "cfn": self._cfn}[collector]
        while not stop.is_set():
            if self.faults.strike("agent_stopped", self.node_address):
                return  # the agent died: nothing polls, nothing is deployed
            try:
                body = fetch(options)
            except OSError:
                self.last_status, body = None, None
            if body is not None:
                with self.lock:
                    self.files[f"{CACHE_DIR}{collector}.json"] = body
                self.polls += 1
                self._deploy(body, stop)
            stop.wait(self.clock.real_seconds(interval))

    # -- the deployments (os-refresh-config's heat-config) --------------------------------------

    def _deploy(self, body: bytes, stop: threading.Event) -> None:
        try:
            deployments = json.loads(body).get("deployments") or []
        except (ValueError, AttributeError):
            return
        for deployment in deployments:
            marker = f"{DEPLOYED_DIR}{deployment.get('id')}.json"
            with self.lock:
                done = marker in self.files
            if done or stop.is_set():
                continue
            inputs = {i.get("name"): i.get("value") for i in deployment.get("inputs") or []}
            if stop.wait(self.clock.real_seconds(self.deployment_time)):
                return
            fault = self.faults.strike("deployment_failure", self.node_address, text=deployment.get("name", ""))
            code = fault.code if fault else 0
            outputs = {
                "deploy_stdout": f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] ({deployment.get('name')}) "
                f"ran on {self.hostname or self.node_address}\n",
                "deploy_stderr": ""
                if not code
                else f"+ {deployment.get('group')} {deployment.get('name')}\nError: the hook exited with status "
                f"{code}\n",
                "deploy_status_code": code,
            }
            with self.lock:
                self.files[marker] = json.dumps(deployment).encode()
            try:
                self._signal(inputs, outputs)
            except OSError:
                with self.lock:  # not signalled: tried again at the next poll
                    self.files.pop(marker, None)

    def _signal(self, inputs: dict, outputs: dict) -> None:
        transport = inputs.get("deploy_signal_transport")
        if transport == "TEMP_URL_SIGNAL":
            self._http(inputs.get("deploy_signal_verb") or "PUT", inputs["deploy_signal_id"], outputs)
        elif transport == "CFN_SIGNAL":
            self._http(inputs.get("deploy_signal_verb") or "POST", inputs["deploy_signal_id"], outputs)
        elif transport == "HEAT_SIGNAL":
            token, heat = self._login(
                inputs["deploy_auth_url"],
                inputs["deploy_user_id"],
                inputs["deploy_password"],
                inputs["deploy_project_id"],
            )
            if token:
                self._http(
                    "POST",
                    f"{heat}/stacks/{inputs['deploy_stack_id']}/resources/{inputs['deploy_resource_name']}/signal",
                    outputs,
                    {"X-Auth-Token": token},
                )

    # -- the collectors ------------------------------------------------------------------------

    def _http(self, method: str, url: str, body: dict | None = None, headers: dict | None = None):
        """One request from the node's address: (status, headers, body)."""
        parts = urlsplit(url)
        connection = http.client.HTTPConnection(
            parts.hostname, parts.port, timeout=10, source_address=(self.node_address, 0)
        )
        try:
            connection.request(
                method,
                parts.path + ("?" + parts.query if parts.query else ""),
                body=json.dumps(body) if body is not None else None,
                headers={"Content-Type": "application/json", **(headers or {})},
            )
            response = connection.getresponse()
            self.last_status = response.status
            return response.status, response, response.read()
        finally:
            connection.close()

    def _request(self, options: dict) -> bytes | None:
        status, _, body = self._http("GET", options["metadata_url"])
        return body if status == 200 else None

    def _login(self, auth_url: str, user_id: str, password: str, project_id: str) -> tuple[str | None, str]:
        """A Keystone token for the user, and Heat's endpoint from the catalog."""
        status, response, body = self._http(
            "POST",
            auth_url.rstrip("/") + "/auth/tokens",
            {
                "auth": {
                    "identity": {"methods": ["password"], "password": {"user": {"id": user_id, "password": password}}},
                    "scope": {"project": {"id": project_id}},
                }
            },
        )
        if status != 201:
            return None, ""
        catalog = json.loads(body)["token"]["catalog"]
        heat = next(
            e["url"]
            for s in catalog
            if s["type"] == "orchestration"
            for e in s["endpoints"]
            if e["interface"] == "public"
        )
        return response.getheader("X-Subject-Token"), heat

    def _heat(self, options: dict) -> bytes | None:
        """Log in as the node's user, find Heat in the catalog, read the resource's metadata."""
        token, heat = self._login(options["auth_url"], options["user_id"], options["password"], options["project_id"])
        if token is None:
            return None
        status, _, body = self._http(
            "GET",
            f"{heat}/stacks/{options['stack_id']}/resources/{options['resource_name']}/metadata",
            headers={"X-Auth-Token": token},
        )
        return json.dumps(json.loads(body)["metadata"]).encode() if status == 200 else None

    def _cfn(self, options: dict) -> bytes | None:
        """``DescribeStackResource`` for each path (``resource.field``), EC2-signed, as the cfn collector asks."""
        content: dict = {}
        parts = urlsplit(options["metadata_url"])
        for path in [p.strip() for p in str(options["path"]).split(",") if p.strip()]:
            resource, field = path.split(".", 1)
            params = {
                "Action": "DescribeStackResource",
                "StackName": options["stack_name"],
                "LogicalResourceId": resource,
                "AWSAccessKeyId": options["access_key_id"],
                "SignatureVersion": "2",
                "SignatureMethod": "HmacSHA256",
            }
            params.update(dict(parse_qsl(parts.query)))
            params["Signature"] = ec2_signature(options["secret_access_key"], "GET", parts.netloc, parts.path, params)
            status, _, body = self._http("GET", f"{parts.scheme}://{parts.netloc}{parts.path}?{urlencode(params)}")
            if status != 200:
                return None
            detail = ElementTree.fromstring(body).find("DescribeStackResourceResult").find("StackResourceDetail")
            element = detail.find(field) if detail is not None else None
            if element is None:
                return None
            content.update(json.loads(element.text))
        return json.dumps(content).encode()

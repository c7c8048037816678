"""os-collect-config on a simulated node: reads its configuration the way the real agent
does, then polls over HTTP from the node's own address: the ``request`` collector its
metadata URL, the ``heat`` collector its resource's metadata in Heat (after a Keystone login
as the node's own user)."""

import configparser
import http.client
import json
import threading
from urllib.parse import urlsplit

from .clock import SimClock

#: Where the agent reads its configuration.
CONFIG_PATH = "/etc/os-collect-config.conf"
LOCAL_DATA_DIR = "/var/lib/os-collect-config/local-data/"
#: Where each collector caches what it fetched: request.json, heat.json.
CACHE_DIR = "/var/lib/os-collect-config/"
DEFAULT_POLLING_INTERVAL = 30.0
#: What each collector needs to run.
NEEDED = {"request": ("metadata_url",),
          "heat": ("auth_url", "user_id", "password", "project_id", "stack_id", "resource_name")}


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
    """The polling loop of one node's os-collect-config service."""

    def __init__(self, node_address: str, files: dict[str, bytes], lock: threading.RLock, clock: SimClock):
        self.node_address = node_address
        self.files = files
        self.lock = lock
        self.clock = clock
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
        threading.Thread(target=self._run, args=(collector, options, interval, self._stop), daemon=True,
                         name=f"occ-{self.node_address}").start()

    def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()
            self._stop = None

    def _run(self, collector: str, options: dict, interval: float, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                body = self._request(options) if collector == "request" else self._heat(options)
            except OSError:
                self.last_status, body = None, None
            if body is not None:
                with self.lock:
                    self.files[f"{CACHE_DIR}{collector}.json"] = body
                self.polls += 1
            stop.wait(self.clock.real_seconds(interval))

    def _http(self, method: str, url: str, body: dict | None = None, headers: dict | None = None):
        """One request from the node's address: (status, headers, body)."""
        parts = urlsplit(url)
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10,
                                                source_address=(self.node_address, 0))
        try:
            connection.request(method, parts.path + ("?" + parts.query if parts.query else ""),
                               body=json.dumps(body) if body is not None else None,
                               headers={"Content-Type": "application/json", **(headers or {})})
            response = connection.getresponse()
            self.last_status = response.status
            return response.status, response, response.read()
        finally:
            connection.close()

    def _request(self, options: dict) -> bytes | None:
        status, _, body = self._http("GET", options["metadata_url"])
        return body if status == 200 else None

    def _heat(self, options: dict) -> bytes | None:
        """Log in as the node's user, find Heat in the catalog, read the resource's metadata."""
        status, response, body = self._http("POST", options["auth_url"].rstrip("/") + "/auth/tokens", {"auth": {
            "identity": {"methods": ["password"],
                         "password": {"user": {"id": options["user_id"], "password": options["password"]}}},
            "scope": {"project": {"id": options["project_id"]}}}})
        if status != 201:
            return None
        catalog = json.loads(body)["token"]["catalog"]
        heat = next(e["url"] for s in catalog if s["type"] == "orchestration" for e in s["endpoints"]
                    if e["interface"] == "public")
        status, _, body = self._http("GET", f"{heat}/stacks/{options['stack_id']}/resources/"
                                            f"{options['resource_name']}/metadata",
                                     headers={"X-Auth-Token": response.getheader("X-Subject-Token")})
        return json.dumps(json.loads(body)["metadata"]).encode() if status == 200 else None

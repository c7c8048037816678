"""os-collect-config on a simulated node: reads its configuration the way the real agent
does, then polls its metadata URL over HTTP from the node's own address."""

import configparser
import http.client
import json
import threading
from urllib.parse import urlsplit

from .clock import SimClock

#: Where the agent reads its configuration.
CONFIG_PATH = "/etc/os-collect-config.conf"
LOCAL_DATA_DIR = "/var/lib/os-collect-config/local-data/"
#: Where the request collector caches what it fetched.
CACHE_PATH = "/var/lib/os-collect-config/request.json"
DEFAULT_POLLING_INTERVAL = 30.0


def agent_settings(files: dict[str, bytes]) -> tuple[str | None, float]:
    """(metadata URL, polling interval) from the INI file or a local-data JSON file."""
    interval = DEFAULT_POLLING_INTERVAL
    if CONFIG_PATH in files:
        parser = configparser.ConfigParser()
        try:
            parser.read_string(files[CONFIG_PATH].decode())
        except (configparser.Error, UnicodeDecodeError):
            return None, interval
        interval = parser.getfloat("DEFAULT", "polling_interval", fallback=interval)
        collectors = [c.strip() for c in parser.get("DEFAULT", "collectors", fallback="request").split(",")]
        if "request" in collectors and parser.get("request", "metadata_url", fallback=None):
            return parser.get("request", "metadata_url"), interval
    for path in sorted(p for p in files if p.startswith(LOCAL_DATA_DIR) and p.endswith(".json")):
        try:
            occ = json.loads(files[path]).get("os-collect-config", {})
        except (ValueError, AttributeError):
            continue
        url = (occ.get("request") or {}).get("metadata_url")
        if url:
            return url, float(occ.get("polling_interval", interval))
    return None, interval


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
            url, interval = agent_settings(self.files)
        if url is None:
            return  # like the real agent, it idles without a collector to run
        self._stop = threading.Event()
        threading.Thread(target=self._run, args=(url, interval, self._stop), daemon=True,
                         name=f"occ-{self.node_address}").start()

    def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()
            self._stop = None

    def _run(self, url: str, interval: float, stop: threading.Event) -> None:
        while not stop.is_set():
            self._poll(url)
            stop.wait(self.clock.real_seconds(interval))

    def _poll(self, url: str) -> None:
        parts = urlsplit(url)
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10,
                                                source_address=(self.node_address, 0))
        try:
            connection.request("GET", parts.path + ("?" + parts.query if parts.query else ""))
            response = connection.getresponse()
            body = response.read()
            self.last_status = response.status
            if response.status == 200:
                with self.lock:
                    self.files[CACHE_PATH] = body
                self.polls += 1
        except OSError:
            self.last_status = None
        finally:
            connection.close()

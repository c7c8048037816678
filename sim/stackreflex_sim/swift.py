"""Swift-style temp URLs: deployment metadata the agents GET (signed, expiring, logged when
polled), and the objects Heat's TEMP_URL_SIGNAL deployments are signalled through (PUT)."""

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlencode

from .clock import utcnow
from .http import HttpError, Request, Response, Router

#: Path prefix of the Swift API on the simulator.
PREFIX = "/swift"


def signature(key: str, method: str, expires: int, path: str) -> str:
    """Swift's temp URL signature: HMAC-SHA1 over method, expiry and object path."""
    return hmac.new(key.encode(), f"{method}\n{expires}\n{path}".encode(), hashlib.sha1).hexdigest()


def swift_error(error: HttpError) -> object:
    return f"{error.status} {error.title}: {error.message}\n".encode()


@dataclass
class Poll:
    path: str
    client: str
    at: object


class MetadataStore:
    """Objects served through temp URLs; each GET with a valid signature is recorded."""

    def __init__(self, base_url: str, account: str, key: str, lifetime: float):
        self.base_url, self.account, self.key, self.lifetime = base_url, account, key, lifetime
        self.objects: dict[str, Callable[[], dict]] = {}
        self.on_poll: dict[str, Callable[[str], None]] = {}
        self.on_put: dict[str, Callable[[dict], None]] = {}
        self.polls: list[Poll] = []
        self._lock = threading.Lock()

    def routes(self, router: Router) -> None:
        router.add("GET", PREFIX + "/v1/{account}/{container}/{obj}", self.get_object, swift_error, auth=False)
        router.add("PUT", PREFIX + "/v1/{account}/{container}/{obj}", self.put_object, swift_error, auth=False)

    def _temp_url(self, method: str, path: str) -> str:
        expires = int(time.time() + self.lifetime)
        query = urlencode({"temp_url_sig": signature(self.key, method, expires, path), "temp_url_expires": expires})
        return f"{self.base_url}{PREFIX}{path}?{query}"

    def _signed(self, request: Request, method: str, path: str) -> None:
        sig, expires = request.arg("temp_url_sig"), request.arg("temp_url_expires")
        try:
            valid = (
                bool(sig)
                and hmac.compare_digest(sig, signature(self.key, method, int(expires), path))
                and int(expires) > time.time()
            )
        except (TypeError, ValueError):
            valid = False
        if not valid:  # what Swift's tempurl middleware answers (401, not 403)
            raise HttpError(401, "Unauthorized", "Temp URL invalid")

    def publish(self, container: str, obj: str, content: Callable[[], dict], on_poll: Callable[[str], None]) -> str:
        """Serve ``content()`` at a new temp URL and return the URL."""
        path = f"/v1/AUTH_{self.account}/{container}/{obj}"
        with self._lock:
            self.objects[path] = content
            self.on_poll[path] = on_poll
        return self._temp_url("GET", path)

    def signal_url(self, container: str, obj: str, on_put: Callable[[dict], None]) -> str:
        """A temp URL to PUT a deployment's outputs to (Heat's ``deploy_signal_id``); ``on_put``
        takes what is put there."""
        path = f"/v1/AUTH_{self.account}/{container}/{obj}"
        with self._lock:
            self.on_put[path] = on_put
        return self._temp_url("PUT", path)

    def put_object(self, request: Request) -> Response:
        path = request.path[len(PREFIX) :]
        self._signed(request, "PUT", path)
        with self._lock:
            on_put = self.on_put.get(path)
        if on_put is None:
            raise HttpError(404, "Not Found", "The resource could not be found.")
        try:
            body = json.loads(request.body or b"{}")
        except ValueError:
            body = {}
        on_put(body if isinstance(body, dict) else {})
        return Response(201, b"", {"Content-Type": "text/html; charset=UTF-8"})

    def get_object(self, request: Request) -> Response:
        path = request.path[len(PREFIX) :]
        self._signed(request, "GET", path)
        with self._lock:
            content, on_poll = self.objects.get(path), self.on_poll.get(path)
            if content is None:
                raise HttpError(404, "Not Found", "The resource could not be found.")
            self.polls.append(Poll(path, request.client, utcnow()))
        on_poll(request.client)
        return Response(200, content())

    def polls_of(self, url_or_path: str) -> list[Poll]:
        path = url_or_path.split(PREFIX, 1)[-1].split("?", 1)[0]
        with self._lock:
            return [p for p in self.polls if p.path == path]

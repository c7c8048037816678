"""A small threaded HTTP server with a route table, JSON helpers and OpenStack-style errors."""

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    match: dict[str, str] = field(default_factory=dict)
    client: str = ""
    #: the path as sent (``path`` has its trailing slash taken off): what a request signature covers
    raw_path: str = ""

    def json(self) -> dict:
        try:
            return json.loads(self.body or b"{}")
        except json.JSONDecodeError:
            raise HttpError(400, "Bad Request", "The request body is not valid JSON.") from None

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else default


@dataclass
class Response:
    status: int
    body: object = None
    headers: dict[str, str] = field(default_factory=dict)


class HttpError(Exception):
    """An error answered with the service's error envelope (set by the route's service)."""

    def __init__(self, status: int, title: str, message: str, error_type: str | None = None):
        super().__init__(message)
        self.status, self.title, self.message, self.error_type = status, title, message, error_type


def requested_microversion(
    request: Request, service: str, default: str, maximum: str, legacy_header: str | None = None
) -> tuple[int, int]:
    """The microversion a request asks for (``OpenStack-API-Version: <service> X.Y``), as a tuple."""
    header = request.headers.get("openstack-api-version", "")
    raw = header[len(service) :].strip() if header.startswith(service) else ""
    raw = raw or (request.headers.get(legacy_header, "") if legacy_header else "") or default
    major, minor = (maximum if raw == "latest" else raw).split(".")
    return int(major), int(minor)


Handler = Callable[[Request], Response]
ErrorShape = Callable[[HttpError], object]


class Router:
    def __init__(self) -> None:
        self.routes: list[tuple[str, re.Pattern, Handler, ErrorShape, bool]] = []
        #: where a service asks for a token before it routes (keystonemiddleware wraps the whole
        #: API): a request there without one is a 401, whatever its path
        self.guarded: set[str] = set()

    def add(self, method: str, pattern: str, handler: Handler, errors: ErrorShape, *, auth: bool = True) -> None:
        regex = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern) + "$")
        self.routes.append((method, regex, handler, errors, auth))
        if auth:
            self.guarded.add(pattern.split("{")[0].rstrip("/") + "/")

    def guards(self, path: str) -> bool:
        return any(path.startswith(prefix) for prefix in self.guarded)

    def find(self, method: str, path: str):
        allowed = False
        for m, regex, handler, errors, auth in self.routes:
            found = regex.match(path)
            if found:
                if m == method:  # each matched piece decoded, as the real services' routers do
                    return handler, errors, auth, {k: unquote(v) for k, v in found.groupdict().items()}
                allowed = True
        return None, None, None, allowed


class SimHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    #: Hundreds of nodes poll at once; the default backlog of 5 refuses connections under load.
    request_queue_size = 256

    def __init__(self, address, router: Router, authenticate: Callable[[Request], bool], faults=None):
        self.router = router
        self.authenticate = authenticate
        self.faults = faults
        super().__init__(address, _RequestHandler)

    def serve_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, daemon=True, name="sim-http")
        thread.start()
        return thread


def _plain_error(error: HttpError) -> object:
    return {"error": {"code": error.status, "title": error.title, "message": error.message}}


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    #: Headers and body leave in one segment: written separately, the body waits for the
    #: client's delayed ACK (40 ms on Linux), a latency no real API server has.
    disable_nagle_algorithm = True

    def log_message(self, *args) -> None:  # quiet: the tests read the simulator's state instead
        pass

    def _handle(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        request = Request(
            self.command,
            parts.path.rstrip("/") or "/",
            parse_qs(parts.query, keep_blank_values=True),
            {k.lower(): v for k, v in self.headers.items()},
            self.rfile.read(length) if length else b"",
            client=self.client_address[0],
            raw_path=parts.path,
        )
        handler, errors, auth, extra = self.server.router.find(request.method, request.path)
        try:
            if (
                handler is None
                and self.server.router.guards(request.path + "/")
                and not self.server.authenticate(request)
            ):
                raise HttpError(401, "Unauthorized", "The request you have made requires authentication.")
            if handler is None:
                raise HttpError(
                    405 if extra else 404,
                    "Method Not Allowed" if extra else "Not Found",
                    f"The resource could not be found: {request.path}",
                )
            request.match = extra
            self._inject_faults(request)
            if auth and not self.server.authenticate(request):
                raise HttpError(401, "Unauthorized", "The request you have made requires authentication.")
            response = handler(request)
        except HttpError as error:
            response = Response(error.status, (errors or _plain_error)(error))
        self._send(response)

    def _inject_faults(self, request: Request) -> None:
        faults = self.server.faults
        if faults is None or request.path.startswith("/sim"):
            return
        slow = faults.strike("api_slow", request.path)
        if slow:
            time.sleep(slow.seconds)
        error = faults.strike("api_error", request.path)
        if error:
            titles = {
                500: "Internal Server Error",
                502: "Bad Gateway",
                503: "Service Unavailable",
                409: "Conflict",
                504: "Gateway Timeout",
            }
            raise HttpError(
                error.status,
                titles.get(error.status, "Error"),
                "The server has either erred or is incapable of performing the requested operation.",
            )

    def _send(self, response: Response) -> None:
        body = (
            b""
            if response.body is None
            else (response.body if isinstance(response.body, bytes) else json.dumps(response.body).encode())
        )
        self.send_response(response.status)
        if body:
            default = "text/plain; charset=UTF-8" if isinstance(response.body, bytes) else "application/json"
            self.send_header("Content-Type", response.headers.pop("Content-Type", default))
        for key, value in response.headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

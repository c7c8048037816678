"""Keystone v3: version discovery, password authentication, a service catalog, token checks."""

import secrets
import threading
import uuid
from datetime import timedelta

from .clock import utcnow
from .http import HttpError, Request, Response, Router
from .scenario import Scenario

#: Lifetime of an issued token (real seconds).
TOKEN_LIFETIME = timedelta(hours=1)


def project_id(name: str) -> str:
    """The (stable) id of a project name."""
    return uuid.uuid5(uuid.NAMESPACE_DNS, f"project-{name}").hex


def iso(moment) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000000Z")


def keystone_error(error: HttpError) -> object:
    return {"error": {"code": error.status, "title": error.title, "message": error.message}}


class Keystone:
    """Users, one project, tokens; the catalog points at this server's other services."""

    def __init__(self, scenario: Scenario, base_url: str):
        self.scenario = scenario
        self.base_url = base_url
        self.project_id = project_id(scenario.project)
        self.user_id = uuid.uuid5(uuid.NAMESPACE_DNS, f"user-{scenario.user}").hex
        #: token → (expiry, user id)
        self.tokens: dict[str, tuple] = {}
        #: further users (the heat collector's per-server users): id → password
        self.users: dict[str, str] = {}
        self._lock = threading.Lock()
        #: service type → (name, URL); filled by the services that register themselves
        self.services: dict[str, tuple[str, str]] = {"identity": ("keystone", f"{base_url}/identity")}

    def routes(self, router: Router) -> None:
        router.add("GET", "/identity", self.versions, keystone_error, auth=False)
        router.add("GET", "/identity/v3", self.version, keystone_error, auth=False)
        router.add("POST", "/identity/v3/auth/tokens", self.issue_token, keystone_error, auth=False)
        router.add("GET", "/identity/v3/auth/tokens", self.validate_token, keystone_error)

    def _version_doc(self) -> dict:
        return {
            "id": "v3.14",
            "status": "stable",
            "updated": "2020-04-07T00:00:00Z",
            "links": [{"rel": "self", "href": f"{self.base_url}/identity/v3/"}],
            "media-types": [{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}],
        }

    def versions(self, request: Request) -> Response:
        return Response(300, {"versions": {"values": [self._version_doc()]}})

    def version(self, request: Request) -> Response:
        return Response(200, {"version": self._version_doc()})

    def add_user(self, user_id: str, password: str) -> None:
        """A user that authenticates by id, like the per-server users of POLL_SERVER_HEAT."""
        with self._lock:
            self.users[user_id] = password

    def authenticate(self, request: Request) -> bool:
        return self.token_user(request.headers.get("x-auth-token")) is not None

    def token_user(self, token: str | None) -> str | None:
        """The user id a valid token was issued to, or None."""
        with self._lock:
            expires, user_id = self.tokens.get(token, (None, None))
        return user_id if expires is not None and expires > utcnow() else None

    def issue_token(self, request: Request) -> Response:
        auth = request.json().get("auth", {})
        identity = auth.get("identity", {})
        if "password" not in identity.get("methods", []):
            raise HttpError(401, "Unauthorized", "The request you have made requires authentication.")
        user = identity.get("password", {}).get("user", {})
        operator = (
            user.get("name", user.get("id")) in (self.scenario.user, self.user_id)
            and user.get("password") == self.scenario.password
        )
        with self._lock:
            own = user.get("id") in self.users and user.get("password") == self.users[user["id"]]
        if not (operator or own):
            raise HttpError(401, "Unauthorized", "The request you have made requires authentication.")
        user_id, user_name = (self.user_id, self.scenario.user) if operator else (user["id"], user["id"])
        token, now = secrets.token_urlsafe(32), utcnow()
        with self._lock:
            self.tokens[token] = (now + TOKEN_LIFETIME, user_id)
        domain = {"id": "default", "name": "Default"}
        body = {
            "token": {
                "methods": ["password"],
                "issued_at": iso(now),
                "expires_at": iso(now + TOKEN_LIFETIME),
                "user": {"id": user_id, "name": user_name, "domain": domain, "password_expires_at": None},
                "project": {"id": self.project_id, "name": self.scenario.project, "domain": domain},
                "roles": [{"id": uuid.uuid5(uuid.NAMESPACE_DNS, "role-admin").hex, "name": "admin"}],
                "catalog": [
                    {
                        "type": kind,
                        "name": name,
                        "id": uuid.uuid5(uuid.NAMESPACE_DNS, kind).hex,
                        "endpoints": [
                            {
                                "id": uuid.uuid5(uuid.NAMESPACE_DNS, f"{kind}-{interface}").hex,
                                "interface": interface,
                                "region_id": self.scenario.region,
                                "region": self.scenario.region,
                                "url": url,
                            }
                            for interface in ("public", "internal", "admin")
                        ],
                    }
                    for kind, (name, url) in self.services.items()
                ],
            }
        }
        return Response(201, body, {"X-Subject-Token": token})

    def validate_token(self, request: Request) -> Response:
        if not self.authenticate(
            Request("GET", "", {}, {"x-auth-token": request.headers.get("x-subject-token", "")}, b"")
        ):
            raise HttpError(404, "Not Found", "Could not find token.")
        return Response(200, {"token": {"methods": ["password"]}})

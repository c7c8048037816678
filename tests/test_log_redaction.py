"""Log redaction as a property of the records: whoever configures logging, no secret is logged.

The library-mode checks run in a subprocess (an application that embeds stackreflex and calls
``logging.basicConfig`` itself), against a real keystoneauth Session talking to a small local
server that answers like Keystone, Heat and Swift, so that the test process's logging is left
as it is.
"""

import doctest
import json
import logging
import subprocess
import sys
from pathlib import Path

import openstack.exceptions
import paramiko
import pytest

from stackreflex.core import logs, redaction
from stackreflex.core.redaction import MASK

ROOT = Path(__file__).resolve().parents[1]

#: What an overcloud deployment sends and gets back: a dozen heat parameters among them.
HEAT_SECRETS = {
    "HeatPassword": "hEat-pw-0001",
    "HeatStackDomainAdminPassword": "hEat-dom-0002",
    "HeatAuthEncryptionKey": "hEat-aek-0003",
    "KeystoneCredential0": "ks-cred-0004",
    "CephClusterFSID": "4b5c8c0a-ff60-454b-a1b4-9747aa737d19",
    "RabbitCookie": "rAbbit-ck-0006",
    "MysqlRootPassword": "mYsql-root-0007",
    "BarbicanSimpleCryptoKek": "bArbican-kek-0008",
    "PacemakerRemoteAuthkey": "pCmk-ak-0009",
    "SwiftHashSuffix": "sWift-hs-0010",
    "OctaviaHeartbeatKey": "oCtavia-hb-0011",
    "CephClientKey": "AQBcephclientkey0012==",
}
SECRETS = {
    "admin_password": "aDmin-s3cr3t-0013",
    "new_user_password": "nEw-user-pw-0014",
    "fernet_token": "gAAAAABmFernetToken0015xyz",
    "temp_url_key": "tEmp-url-key-0016",
    "temp_url_sig": "5f3a9cdeadbeef0017",
    "private_key_body": "MIIEowIBAAKCAQEAprivatekeybody0018",
    "signing_key": "sIgning-key-0019",
    "credential": "cRedential-0020",
    "amqp_password": "aMqp-pw-0021",
    **HEAT_SECRETS,
}

#: An application embedding stackreflex: its own record factory, basicConfig, a handler added
#: later, and keystoneauth's debug logging of the requests it makes to a local "cloud".
LIBRARY_APP = r"""
import json, logging, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

out, later, secrets = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
secrets_heat = {k: secrets[k] for k in json.loads(sys.argv[4])}

import keystoneauth1.session, keystoneauth1.identity.v3  # loggers made before stackreflex is imported

previous = logging.getLogRecordFactory()
def app_factory(*args, **kwargs):
    record = previous(*args, **kwargs)
    record.request_id = "req-42"
    return record
logging.setLogRecordFactory(app_factory)
logging.basicConfig(level=logging.DEBUG, stream=open(out, "w"),
                    format="%(request_id)s %(levelname)s %(name)s: %(message)s")

import stackreflex  # noqa: F401  (the embedding application imports us, and configures nothing else)

later_handler = logging.FileHandler(later)
later_handler.setFormatter(logging.Formatter("LATER %(name)s %(message)s"))
logging.getLogger("keystoneauth").addHandler(later_handler)

PEM = ("-----BEGIN RSA PRIVATE KEY-----\n" + secrets["private_key_body"] + "\n-----END RSA PRIVATE KEY-----\n")


class Cloud(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, status, body=None, headers=()):
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == "/v3/auth/tokens":
            base = "http://%s:%d" % self.server.server_address
            catalog = [{"type": t, "name": n, "id": n, "endpoints": [
                {"interface": "public", "region": "regionOne", "region_id": "regionOne", "id": n + "-1",
                 "url": base + p}]} for t, n, p in (("identity", "keystone", "/v3"),
                                                    ("orchestration", "heat", "/heat/v1/p1"),
                                                    ("object-store", "swift", "/swift/v1/AUTH_p1"))]
            token = {"token": {"methods": ["password"], "expires_at": "2099-01-01T00:00:00.000000Z",
                               "issued_at": "2024-01-01T00:00:00.000000Z", "audit_ids": ["a1"],
                               "user": {"id": "u1", "name": "admin", "domain": {"id": "default", "name": "Default"}},
                               "project": {"id": "p1", "name": "admin",
                                           "domain": {"id": "default", "name": "Default"}},
                               "roles": [{"id": "r1", "name": "admin"}], "catalog": catalog}}
            self.reply(201, token, [("X-Subject-Token", secrets["fernet_token"])])
        elif self.path == "/v3/users":
            self.reply(201, {"user": {"id": "u2", "name": "heat_admin", "domain_id": "default"}})
        elif self.path == "/heat/v1/p1/stacks":
            self.reply(201, {"stack": {"id": "s1", "links": [{"rel": "self", "href": "/stacks/overcloud/s1"}]}})
        else:
            self.reply(404, {"error": {"code": 404}})

    def do_GET(self):
        if self.path == "/heat/v1/p1/stacks/overcloud/s1":
            parameters = dict(secrets_heat, MigrationSshKey={"private_key": PEM, "public_key": "ssh-rsa AAAAB3Nz"})
            self.reply(200, {"stack": {"stack_name": "overcloud", "stack_status": "CREATE_COMPLETE",
                                       "parameters": parameters}})
        elif self.path.startswith("/swift/v1/AUTH_p1/images/ipa.kernel?"):
            self.reply(200, {"object": "ipa.kernel"})
        else:
            self.reply(404, {"error": {"code": 404}})

    def do_HEAD(self):
        self.reply(204, None, [("X-Account-Meta-Temp-URL-Key", secrets["temp_url_key"]),
                               ("X-Account-Object-Count", "3")])


server = ThreadingHTTPServer(("127.0.0.1", 0), Cloud)
threading.Thread(target=server.serve_forever, daemon=True).start()
base = "http://127.0.0.1:%d" % server.server_address[1]

auth = keystoneauth1.identity.v3.Password(auth_url=base + "/v3", username="admin",
                                          password=secrets["admin_password"], project_name="admin",
                                          user_domain_id="default", project_domain_id="default")
session = keystoneauth1.session.Session(auth=auth)
# A token asked for by hand (the plugin's own request is not logged by keystoneauth).
session.post(base + "/v3/auth/tokens", authenticated=False, json={"auth": {"identity": {
    "methods": ["password"], "password": {"user": {"name": "admin", "domain": {"id": "default"},
                                                   "password": secrets["admin_password"]}}}}})
session.post("/users", endpoint_filter={"service_type": "identity", "interface": "public"},
             json={"user": {"name": "heat_admin", "domain_id": "default", "password": secrets["new_user_password"]}})
session.post("/stacks", endpoint_filter={"service_type": "orchestration", "interface": "public"},
             json={"stack_name": "overcloud", "template": {"heat_template_version": "rocky"},
                   "parameters": secrets_heat})
session.get("/stacks/overcloud/s1", endpoint_filter={"service_type": "orchestration", "interface": "public"})
session.head(base + "/swift/v1/AUTH_p1")
session.get(base + "/swift/v1/AUTH_p1/images/ipa.kernel?temp_url_sig=%s&temp_url_expires=1999999999"
            % secrets["temp_url_sig"], authenticated=False)

# Our own loggers and the other libraries', through their children.
logging.getLogger("stackreflex.run").info("signing the envelope with signing_key=%s", secrets["signing_key"])
logging.getLogger("dramatiq.worker.WorkerThread").warning("Failed to process message %s",
                                                          {"credential": secrets["credential"]})
logging.getLogger("kombu.connection").info("Connecting to %s",
                                           "amqp://stackreflex:%s@rabbit:5672//" % secrets["amqp_password"])
server.shutdown()
later_handler.close()
"""


def test_an_embedding_application_with_basic_config_logs_none_of_the_secrets_keystoneauth_sees(tmp_path):
    out, later = tmp_path / "basic.log", tmp_path / "later.log"
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            LIBRARY_APP,
            str(out),
            str(later),
            json.dumps(SECRETS),
            json.dumps(sorted(HEAT_SECRETS)),
        ],
        cwd=ROOT,
        timeout=60,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    text, later_text = out.read_text(), later.read_text()

    for name, log in (("basicConfig", text), ("handler added later", later_text)):
        leaked = [key for key, secret in SECRETS.items() if secret in log]
        assert leaked == [], f"{len(leaked)} of {len(SECRETS)} secrets in the {name} output: {leaked}\n{log}"

    # The lines are there, whole but for the secrets (nothing passes by logging nothing).
    assert text.count("req-42 DEBUG keystoneauth.session: REQ: curl -g -i -X POST") == 3, text
    assert "/v3/auth/tokens" in text and '"methods": ["password"], "password": {"user": {"name": "admin"' in text
    assert f'"password": "{MASK}"' in text
    assert '"name": "heat_admin", "domain_id": "default"' in text
    for name in HEAT_SECRETS:
        assert text.count(f'"{name}": "{MASK}"') == 2, name  # in the request, and in the stack shown
    assert '"stack_status": "CREATE_COMPLETE"' in text and '"public_key": "ssh-rsa AAAAB3Nz"' in text
    assert '-H "X-Auth-Token: {SHA256}' in text and "X-Subject-Token: {SHA256}" in text  # keystoneauth's hashes
    assert f"X-Account-Meta-Temp-URL-Key: {MASK}" in text and "X-Account-Object-Count: 3" in text
    assert f"temp_url_sig={MASK}&temp_url_expires=1999999999" in text
    assert "GET /swift/v1/AUTH_p1/images/ipa.kernel?temp_url_sig=" in text  # urllib3's line
    assert f"req-42 INFO stackreflex.run: signing the envelope with signing_key={MASK}" in text
    assert f"WARNING dramatiq.worker.WorkerThread: Failed to process message {{'credential': '{MASK}'}}" in text
    assert f"INFO kombu.connection: Connecting to amqp://stackreflex:{MASK}@rabbit:5672//" in text
    assert "LATER keystoneauth.session REQ: curl -g -i -X POST" in later_text
    assert later_text.count(f'"HeatPassword": "{MASK}"') == 2


def test_a_secret_in_an_exception_logged_from_a_child_logger_is_masked_in_its_traceback():
    lines = []

    class Collect(logging.Handler):
        def emit(self, record):
            lines.append(self.format(record))

    class RawTracebacks(logging.Formatter):
        """A formatter that would format ``exc_info`` itself, as JSON formatters do."""

        def format(self, record):
            raw = self.formatException(record.exc_info) if record.exc_info else ""
            return super().format(record) + raw

    handlers = {}
    for parent, _child in (("openstack", "openstack.compute"), ("paramiko", "paramiko.transport")):
        handler = Collect()
        handler.setFormatter(RawTracebacks("%(levelname)s %(name)s %(message)s"))
        parent_logger = logging.getLogger(parent)
        handlers[parent] = (handler, parent_logger.level)
        parent_logger.addHandler(handler)  # on the parent: the child's records propagate to it
        parent_logger.setLevel(logging.DEBUG)
    try:
        try:
            try:
                raise paramiko.AuthenticationException("Authentication failed: password=pAramiko-0031")
            except paramiko.AuthenticationException as exc:
                raise openstack.exceptions.SDKException(
                    "Failed to rebuild server overcloud-controller-0 with adminPass=oPenstack-0032"
                ) from exc
        except openstack.exceptions.SDKException as exc:
            logging.getLogger("openstack.compute").exception("rebuild of %s failed: %s", "controller-0", exc)
        try:
            raise paramiko.SSHException("No existing session; private_key=pRivate-0033 token: tOken-0034")
        except paramiko.SSHException:
            logging.getLogger("paramiko.transport").exception("Socket exception on 192.0.2.10")
    finally:
        for parent, (handler, level) in handlers.items():
            logging.getLogger(parent).removeHandler(handler)
            logging.getLogger(parent).setLevel(level)

    assert len(lines) == 2, lines
    text = "\n".join(lines)
    for secret in ("pAramiko-0031", "oPenstack-0032", "pRivate-0033", "tOken-0034"):
        assert secret not in text, text
    assert lines[0].startswith(
        f"ERROR openstack.compute rebuild of controller-0 failed: Failed to rebuild server "
        f"overcloud-controller-0 with adminPass={MASK}\nTraceback (most recent call last):"
    )
    assert f"paramiko.ssh_exception.AuthenticationException: Authentication failed: password={MASK}" in lines[0]
    assert "The above exception was the direct cause of the following exception" in lines[0]
    assert lines[1].startswith("ERROR paramiko.transport Socket exception on 192.0.2.10\nTraceback")
    assert f"private_key={MASK} token: {MASK}" in lines[1]


def test_records_of_other_loggers_are_left_as_they_are_and_installing_twice_changes_nothing():
    factory = logging.getLogRecordFactory()
    assert getattr(factory, "_stackreflex_redacted", False), "importing stackreflex installs the record redaction"
    logs.install_record_redaction()
    assert logging.getLogRecordFactory() is factory
    record = factory("myapp.db", logging.INFO, __file__, 1, "connected with %s", ("password=x",), None)
    assert record.msg == "connected with %s" and record.args == ("password=x",)
    record = factory("openstackclient", logging.INFO, __file__, 1, "connected with %s", ("password=x",), None)
    assert record.getMessage() == f"connected with password={MASK}" and record.args == ()
    record = logging.makeLogRecord({"name": "keystoneauth.session", "msg": "unpickled"})  # no name when made
    assert record.getMessage() == "unpickled"


def test_setup_logging_redacts_every_record_once_our_libraries_at_creation_the_others_in_its_filter(tmp_path):
    out = tmp_path / "product.log"
    script = r"""
import logging, sys
from stackreflex.core import logs
calls = []
redact_text = logs.redact_text
logs.redact_text = lambda text: calls.append(text) or redact_text(text)
logs.setup_logging("text", "DEBUG", stream=open(sys.argv[1], "w"))
logging.getLogger("keystoneauth.session").warning("REQ: -d '{\"password\": \"kA-0041\"}'")
logging.getLogger("myapp").warning("login with password=%s", "aPp-0042")
try:
    raise ValueError("token=eXc-0043")
except ValueError:
    logging.getLogger("myapp.jobs").exception("job failed")
logging.getLogger("myapp").warning("bad %s %s", "password=aRgs-0044")  # does not format
print(len(calls))
"""
    result = subprocess.run(
        [sys.executable, "-c", script, str(out)], cwd=ROOT, timeout=60, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    for secret in ("kA-0041", "aPp-0042", "eXc-0043", "aRgs-0044"):
        assert secret not in text + result.stderr, text + result.stderr
    assert f'WARNING keystoneauth.session: REQ: -d \'{{"password": "{MASK}"}}\'' in text
    assert f"WARNING myapp: login with password={MASK}" in text
    assert "ERROR   myapp.jobs: job failed\nTraceback (most recent call last):" in text
    assert f"ValueError: token={MASK}" in text
    assert "--- Logging error ---" in result.stderr and "Message: 'bad %s %s'" in result.stderr
    assert f"Arguments: ('{MASK}',)" in result.stderr
    # Once each: message of the keystoneauth record (at creation, not again in the filter),
    # message of the app's, message and traceback of the exception, message of the bad one.
    assert result.stdout.split() == ["5"], result.stdout


def test_every_name_oslo_utils_masks_is_masked_here_as_a_key_and_in_text():
    strutils = pytest.importorskip("oslo_utils.strutils")
    names = strutils._SANITIZE_KEYS  # what every OpenStack service masks in its own logs
    assert len(names) > 30
    assert [name for name in names if not redaction.is_secret_key(name)] == []
    for text in (
        "{name}=v4lue",
        "{name}: v4lue",
        '{{"{name}": "v4lue"}}',
        "{{'{name}1': 'v4lue'}}",
        "--{name} v4lue",
        "<{name}>v4lue</{name}>",
    ):
        assert [name for name in names if "v4lue" in redaction.redact_text(text.format(name=name))] == [], text


def test_the_examples_in_the_docstrings_hold():
    for module in (redaction, logs):
        assert doctest.testmod(module).failed == 0


def test_json_lines_are_redacted_once_with_their_context_fields():
    record = logging.makeLogRecord(
        {
            "name": "myapp",
            "levelno": logging.ERROR,
            "levelname": "ERROR",
            "msg": "login with password=%s",
            "args": ("jS-0051",),
            "target": "amqp://guest:jS-0052@rabbit//",
            "step": "connect",
        }
    )
    line = json.loads(logs.JsonFormatter().format(record))
    assert line["message"] == f"login with password={MASK}" and line["logger"] == "myapp"
    assert line["target"] == f"amqp://guest:{MASK}@rabbit//" and line["step"] == "connect"
    assert record.getMessage() == line["message"]  # the record itself is redacted, for the other handlers

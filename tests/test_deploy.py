"""deploy/ as shipped: the compose file against the Compose Specification, the Kubernetes
manifests against Kubernetes' schemas (strict) and KEDA's CRDs, the systemd units' directives
(and ``systemd-analyze verify`` where it exists), and install.sh run for real into a staging root.

The schemas are vendored in tests/schemas/ (README there: where from, which commit), so this runs
offline. Nothing here starts Docker, Kubernetes or systemd: this sandbox has none of them running."""

import copy
import http.server
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import threading
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from stackreflex.cli.common import load_all_handlers
from stackreflex.core.settings import Settings
from stackreflex.runtime import SHUTDOWN_GRACE

from .conftest import make_settings

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
KUBE = DEPLOY / "kubernetes"
UNITS = DEPLOY / "systemd"
#: the Kubernetes version the manifests are checked against (a recent one kubernetes_validate bundles)
KUBERNETES_VERSION = "1.35.0"
#: what the identity files are called, in /etc/stackreflex, whichever way the service is deployed
IDENTITY = {"clouds.yaml", "ssh_key", "known_hosts", "inventory.yaml"}
#: the settings naming files, as config.toml sets them
FILE_SETTINGS = {"ssh_key_file", "ssh_known_hosts", "inventory"}
#: the metadata KEDA's RabbitMQ scaler reads (kedacore/keda pkg/scalers/rabbitmq_scaler.go, the
#: commit of tests/schemas/README.md); anything else is ignored by KEDA, so a typo would go unseen
RABBITMQ_SCALER_METADATA = {
    "queueName", "mode", "queueLength", "value", "activationValue", "host", "protocol", "vhostName",
    "useRegex", "excludeUnacknowledged", "pageSize", "operation", "timeout", "unsafeSsl",
}  # fmt: skip


# --- compose -------------------------------------------------------------------------------------


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def compose_errors(doc: dict) -> list[str]:
    schema = yaml.safe_load((SCHEMAS / "compose-spec.json").read_text())
    validator = jsonschema.Draft7Validator(schema)  # its $schema names draft 7 without the '#'
    return [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(doc)]


def test_the_compose_file_follows_the_compose_specification():
    doc = compose()
    assert compose_errors(doc) == []
    broken = copy.deepcopy(doc)
    broken["services"]["worker"]["healthcheck"]["intervall"] = "10s"  # the schema does catch a typo
    broken["services"]["watcher"]["restart"] = ["always"]
    assert len(compose_errors(broken)) == 2


def test_compose_runs_every_service_healthy_restarted_and_reading_its_identity_read_only():
    services = compose()["services"]
    assert {"rabbit1", "postgres", "worker", "watcher"} <= set(services)
    for name, service in services.items():
        assert service["restart"] == "unless-stopped", name
        assert service["healthcheck"]["test"][0] == "CMD", name
    config = tomllib.loads((DEPLOY / "config.toml").read_text())
    for name in ("worker", "watcher"):
        service = services[name]
        port = service["command"][service["command"].index("--metrics-port") + 1]
        assert service["healthcheck"]["test"][1:3] == ["python", "-c"]
        assert f"http://127.0.0.1:{port}/readyz" in service["healthcheck"]["test"][3]
        assert {"path": "env.example"} in service["env_file"]
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
        assert float(service["stop_grace_period"].rstrip("s")) >= SHUTDOWN_GRACE + 30
        binds = [v for v in service["volumes"] if isinstance(v, dict) and v["type"] == "bind"]
        assert all(v["read_only"] and v["bind"]["create_host_path"] is False for v in binds)
        targets = {v["target"] for v in binds}
        assert targets == {f"/etc/stackreflex/{f}" for f in IDENTITY}
        assert {str(config[s]) for s in FILE_SETTINGS} <= targets, "config.toml names the mounted files"
        assert service["depends_on"]["rabbit1"]["condition"] == "service_healthy"


def test_the_compose_cluster_profile_is_three_rabbitmq_nodes_the_workers_fail_over_between():
    services = compose()["services"]
    nodes = {name: s for name, s in services.items() if name.startswith("rabbit")}
    assert sorted(nodes) == ["rabbit1", "rabbit2", "rabbit3"]
    assert [n for n, s in nodes.items() if "cluster" in s.get("profiles", [])] == ["rabbit2", "rabbit3"]
    conf = (DEPLOY / "rabbitmq" / "cluster.conf").read_text()
    assert "cluster_formation.peer_discovery_backend = classic_config" in conf
    listed = set(re.findall(r"^cluster_formation\.classic_config\.nodes\.\d+ = rabbit@(\S+)$", conf, re.M))
    assert listed == {s["hostname"] for s in nodes.values()} == set(nodes)
    for service in nodes.values():
        assert "./rabbitmq/cluster.conf:/etc/rabbitmq/conf.d/20-cluster.conf:ro" in service["volumes"]
        assert "STACKREFLEX_ERLANG_COOKIE" in service["entrypoint"][2], "one cookie for every node"
        assert service["environment"]["STACKREFLEX_ERLANG_COOKIE"].startswith("${STACKREFLEX_ERLANG_COOKIE")
    cluster = dict(
        line.split("=", 1) for line in (DEPLOY / "cluster.env").read_text().splitlines() if line and line[0] != "#"
    )
    assert cluster["COMPOSE_PROFILES"] == "cluster"
    assert [re.search(r"@([^:/]+)", url)[1] for url in cluster["STACKREFLEX_BROKERS"].split(",")] == sorted(nodes)
    for name in ("worker", "watcher"):
        assert services[name]["environment"]["STACKREFLEX_BROKER_URL"].startswith("${STACKREFLEX_BROKERS:-")
        assert {"rabbit2", "rabbit3"} <= set(services[name]["depends_on"])


class _Readyz(http.server.BaseHTTPRequestHandler):
    status = 503

    def do_GET(self) -> None:
        self.send_response(type(self).status if self.path == "/readyz" else 404)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_the_compose_health_check_fails_on_a_503_and_passes_on_a_200():
    """The image has no curl: the health check is Python's urllib, which must exit non-zero on
    /readyz's 503 (not ready), not only when nothing listens."""
    server = http.server.HTTPServer(("127.0.0.1", 0), _Readyz)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        check = compose()["services"]["worker"]["healthcheck"]["test"][3].replace("9810", str(server.server_port))
        _Readyz.status = 503
        assert subprocess.run([sys.executable, "-c", check], capture_output=True, timeout=30).returncode != 0
        _Readyz.status = 200
        assert subprocess.run([sys.executable, "-c", check], capture_output=True, timeout=30).returncode == 0
    finally:
        server.shutdown()


def test_the_health_check_passes_on_a_ready_worker_and_fails_once_it_stopped(
    broker_url, sqlite_url, namespace, workers
):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    worker = workers(make_settings(broker_url, sqlite_url, namespace), "--metrics-address", "127.0.0.1",
                     "--metrics-port", str(port))  # fmt: skip
    check = compose()["services"]["worker"]["healthcheck"]["test"][3].replace("9810", str(port))
    healthy = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=30)
    assert healthy.returncode == 0, healthy.stderr
    assert worker.terminate() == 0
    assert subprocess.run([sys.executable, "-c", check], capture_output=True, timeout=30).returncode != 0


def test_the_image_runs_as_a_numeric_non_root_user_from_the_venv():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^USER 10001:10001$", dockerfile, re.M)
    assert "python -m venv /opt/stackreflex" in dockerfile and "PATH=/opt/stackreflex/bin:$PATH" in dockerfile
    assert '"--config", "/etc/stackreflex/config.toml"' in dockerfile


# --- Kubernetes ----------------------------------------------------------------------------------


def manifests() -> list[dict]:
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    docs = []
    for resource in kustomization["resources"]:
        docs += [d for d in yaml.safe_load_all((KUBE / resource).read_text()) if d]
    return docs


def by_kind(kind: str) -> list[dict]:
    return [d for d in manifests() if d["kind"] == kind]


def test_the_kubernetes_manifests_are_valid_for_kubernetes_in_strict_mode():
    native = [d for d in manifests() if not d["apiVersion"].startswith("keda.sh/")]
    assert sorted(d["kind"] for d in native) == [
        "ConfigMap",
        "Deployment",
        "Deployment",
        "PodDisruptionBudget",
        "Secret",
    ]
    for doc in native:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    assert all("namespace" not in d["metadata"] for d in manifests()), "the namespace is the operator's"
    broken = copy.deepcopy(by_kind("Deployment")[0])
    broken["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}  # strict: a typo fails
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def strict(schema: Any) -> Any:
    """A CRD schema as the API server applies it with strict field validation: an object with
    properties and no additionalProperties (nor x-kubernetes-preserve-unknown-fields) takes no other field."""
    if isinstance(schema, dict):
        schema = {k: strict(v) for k, v in schema.items()}
        open_ended = "additionalProperties" in schema or schema.get("x-kubernetes-preserve-unknown-fields")
        if "properties" in schema and not open_ended:
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        schema = [strict(v) for v in schema]
    return schema


def keda_errors(doc: dict) -> list[str]:
    crd = yaml.safe_load((SCHEMAS / f"keda.sh_{doc['kind'].lower()}s.yaml").read_text())
    assert crd["spec"]["names"]["kind"] == doc["kind"] and crd["spec"]["group"] == doc["apiVersion"].split("/")[0]
    version = next(v for v in crd["spec"]["versions"] if v["name"] == doc["apiVersion"].split("/")[1])
    assert version["served"]
    spec_schema = strict(version["schema"]["openAPIV3Schema"]["properties"]["spec"])
    validator = jsonschema.Draft7Validator(spec_schema)
    return [f"spec.{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(doc["spec"])]


def test_the_keda_objects_are_valid_against_kedas_crds_and_scale_on_every_handler_queue():
    scaled, auth = by_kind("ScaledObject"), by_kind("TriggerAuthentication")
    assert len(scaled) == 1 and len(auth) == 1
    assert keda_errors(scaled[0]) == [] and keda_errors(auth[0]) == []
    broken = copy.deepcopy(scaled[0])
    broken["spec"]["triggers"][0]["authRef"] = broken["spec"]["triggers"][0].pop("authenticationRef")
    broken["spec"]["minReplicaCount"] = "one"
    assert len(keda_errors(broken)) == 2, "the CRD schema does catch a wrong field and a wrong type"

    spec = scaled[0]["spec"]
    assert spec["scaleTargetRef"]["name"] == by_kind("Deployment")[0]["metadata"]["name"] == "stackreflex-worker"
    assert spec["minReplicaCount"] >= 1, "a worker always runs: it moves delayed messages back"
    namespace = Settings.model_fields["namespace"].default
    expected = {f"{namespace}.router"} | {f"{namespace}.{h.name}" for h in load_all_handlers()}
    triggers = spec["triggers"]
    assert sorted(t["metadata"]["queueName"] for t in triggers) == sorted(expected)
    for trigger in triggers:
        assert trigger["type"] == "rabbitmq"
        assert set(trigger["metadata"]) <= RABBITMQ_SCALER_METADATA
        assert trigger["metadata"]["mode"] == "QueueLength"
        assert trigger["authenticationRef"]["name"] == auth[0]["metadata"]["name"]
    secret = by_kind("Secret")[0]
    for ref in auth[0]["spec"]["secretTargetRef"]:
        assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]


def test_the_deployments_probe_health_stop_gracefully_and_mount_their_settings_read_only():
    secret, config = by_kind("Secret")[0], by_kind("ConfigMap")[0]
    settings_file = tomllib.loads(config["data"]["config.toml"])
    Settings(**settings_file)  # stackreflex takes them
    for deployment in by_kind("Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert pod["terminationGracePeriodSeconds"] >= SHUTDOWN_GRACE + 15
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
        port = int(container["args"][container["args"].index("--metrics-port") + 1])
        assert container["args"][container["args"].index("--metrics-address") + 1] == "0.0.0.0"  # the kubelet probes
        assert [p["containerPort"] for p in container["ports"]] == [port]
        named = container["ports"][0]["name"]
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": named}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": named}
        for env in container["env"]:
            ref = env.get("valueFrom", {})
            if "secretKeyRef" in ref:
                assert ref["secretKeyRef"]["key"] in secret["stringData"], env["name"]
            if "configMapKeyRef" in ref:
                assert ref["configMapKeyRef"]["key"] in config["data"], env["name"]
        assert {e["name"] for e in container["env"]} >= {"STACKREFLEX_BROKER_URL", "STACKREFLEX_DATABASE_URL"}
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        settings_mount = mounts["/etc/stackreflex"]
        assert settings_mount["readOnly"] is True
        assert "emptyDir" in volumes[mounts["/var/lib/stackreflex"]["name"]], "state on an emptyDir"
        assert all(m["readOnly"] for p, m in mounts.items() if p not in ("/var/lib/stackreflex", "/tmp"))
        projected = {}
        for source in volumes[settings_mount["name"]]["projected"]["sources"]:
            ((kind, ref),) = source.items()
            store = secret["stringData"] if kind == "secret" else config["data"]
            assert ref["name"] == (secret if kind == "secret" else config)["metadata"]["name"]
            for item in ref["items"]:
                assert item["key"] in store
                projected[item["path"]] = kind
        assert projected == {"config.toml": "configMap", "inventory.yaml": "configMap",
                             "ssh_key": "secret", "clouds.yaml": "secret", "known_hosts": "secret"}  # fmt: skip
        assert {str(settings_file[s]) for s in FILE_SETTINGS} <= {f"/etc/stackreflex/{p}" for p in projected}
    (pdb,) = by_kind("PodDisruptionBudget")
    worker = by_kind("Deployment")[0]
    assert pdb["spec"]["selector"]["matchLabels"] == worker["spec"]["selector"]["matchLabels"]
    assert worker["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


# --- systemd -------------------------------------------------------------------------------------


def unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """A unit file's sections as (key, value) lists in order (keys repeat: EnvironmentFile=)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    text = re.sub(r"\\\n\s*", " ", path.read_text())  # continuation lines
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
        else:
            key, _, value = line.partition("=")
            current.append((key.strip(), value.strip()))
    return sections


def service(path: Path) -> dict[str, str]:
    return dict(unit(path)["Service"])


@pytest.mark.parametrize("name", ["stackreflex-worker.service", "stackreflex-watcher@.service"])
def test_the_units_are_sandboxed_notify_services_of_the_service_user(name):
    directives = service(UNITS / name)
    assert directives["Type"] == "notify" and directives["NotifyAccess"] == "main"
    assert int(directives["WatchdogSec"]) > 0
    assert (directives["User"], directives["Group"]) == ("stackreflex", "stackreflex")
    assert directives["StateDirectory"] == "stackreflex"
    assert directives["ReadWritePaths"] == "/var/lib/stackreflex"
    expected = {"ProtectHome": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes", "NoNewPrivileges": "yes"}
    assert {k: directives[k] for k in expected} == expected
    assert directives["Restart"] == "on-failure"
    assert int(directives["TimeoutStopSec"]) > SHUTDOWN_GRACE + 30
    command = directives["ExecStart"].split()
    assert command[0] == "/opt/stackreflex/bin/stackreflex"
    assert command[command.index("--config") + 1] == "/etc/stackreflex/config.toml"
    assert command[command.index("--metrics-address") + 1] == "127.0.0.1"
    assert "--metrics-port" in command
    assert not any("/home" in v or "~" in v for _, v in unit(UNITS / name)["Service"]), "ProtectHome hides /home"


def test_the_watcher_template_watches_its_instance_on_a_port_of_its_own():
    entries = unit(UNITS / "stackreflex-watcher@.service")["Service"]
    command = dict(entries)["ExecStart"].split()
    assert command[command.index("watch") + 1] == "%i"
    assert command[command.index("--metrics-port") + 1] == "${METRICS_PORT}"
    files = [v for k, v in entries if k == "EnvironmentFile"]
    assert files == ["/etc/stackreflex/env", "-/etc/stackreflex/watcher-%i.env"]  # the port file may be missing
    assert ("Environment", "METRICS_PORT=9811") in entries


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="no systemd-analyze on this machine")
def test_systemd_analyze_verifies_the_units(tmp_path):
    """systemd's own parser on the units, in a root holding what they run (an executable at the
    ExecStart path): unknown directives, bad values and a missing command all fail it."""
    (tmp_path / "etc/systemd/system").mkdir(parents=True)
    command = tmp_path / "opt/stackreflex/bin/stackreflex"
    command.parent.mkdir(parents=True)
    command.write_text("#!/bin/sh\n")
    command.chmod(0o755)
    for name in ("stackreflex-worker.service", "stackreflex-watcher@.service"):
        shutil.copy(UNITS / name, tmp_path / "etc/systemd/system" / name)

    def verify(*units: str) -> subprocess.CompletedProcess:
        argv = ["systemd-analyze", "verify", "--man=no", "--recursive-errors=no", f"--root={tmp_path}", *units]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60)

    good = verify("stackreflex-worker.service", "stackreflex-watcher@overcloud.service")
    assert (good.returncode, good.stderr) == (0, "")
    broken = (UNITS / "stackreflex-worker.service").read_text().replace("Type=notify", "Type=notfy")
    (tmp_path / "etc/systemd/system/broken.service").write_text(broken)
    bad = verify("broken.service")
    assert bad.returncode != 0 and "Failed to parse service type" in bad.stderr


def test_install_sh_is_valid_bash():
    result = subprocess.run(["bash", "-n", str(DEPLOY / "install.sh")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert os.access(DEPLOY / "install.sh", os.X_OK)


def install(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(DEPLOY / "install.sh"), *args], capture_output=True, text=True, timeout=600, cwd=cwd
    )


def identity_files(base: Path) -> dict[str, Path]:
    base.mkdir(parents=True, exist_ok=True)
    files = {
        "--clouds-yaml": base / "clouds.yaml",
        "--ssh-key": base / "id_ecdsa",
        "--inventory": base / "inventory.yaml",
        "--known-hosts": base / "known_hosts",
    }
    files["--clouds-yaml"].write_text("clouds:\n  undercloud:\n    auth: {auth_url: http://192.0.2.1:5000}\n")
    files["--ssh-key"].write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nnot a real key\n")
    files["--inventory"].write_text("roles:\n  ComputeDeployedServer: [192.0.2.20]\n")
    files["--known-hosts"].write_text("192.0.2.20 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE0=\n")
    return files


def test_install_sh_refuses_a_missing_identity_file_before_writing_anything(tmp_path):
    files = identity_files(tmp_path / "id")
    root = tmp_path / "root"
    result = install("--root", str(root), "--ssh-key", str(tmp_path / "nope"), "--clouds-yaml",
                     str(files["--clouds-yaml"]), str(REPO))  # fmt: skip
    assert result.returncode == 2
    assert f"--ssh-key {tmp_path / 'nope'}: no such readable file" in result.stderr
    assert not root.exists()
    result = install("--root", str(root), "--watch", "bad stack!", str(REPO))
    assert result.returncode == 2 and "--watch bad stack!" in result.stderr
    assert install("--root", str(root), "--frobnicate", str(REPO)).stderr.strip().endswith("(see --help)")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.slow
@pytest.mark.timeout(400)  # a venv and a wheel build: ~30 s on a quiet machine, minutes on a loaded one
def test_install_sh_stages_the_whole_layout_the_units_and_settings_point_at(tmp_path, wheel):
    """install.sh for real, into a staging root: the venv, /etc/stackreflex with its modes, the
    units; useradd, chown and systemctl printed, not run."""
    files = identity_files(tmp_path / "id")
    root = tmp_path / "root"
    assert not Path("/etc/stackreflex").exists(), "this machine has a real install: the test could not tell"
    args = [a for option, path in files.items() for a in (option, str(path))]
    # --no-deps: the venv gets stackreflex itself; its dependencies would come from the index (minutes)
    result = install("--root", str(root), *args, "--watch", "overcloud", "--watch", "edge-1",
                     "--pip-arg=--no-deps", str(wheel))  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "would run: useradd --system --user-group --home-dir /var/lib/stackreflex" in out
    assert "would run: chown stackreflex:stackreflex /etc/stackreflex/ssh_key" in out
    assert (
        "would run: systemctl enable stackreflex-worker.service stackreflex-watcher@overcloud.service "
        "stackreflex-watcher@edge-1.service" in out
    )
    assert not Path("/etc/stackreflex").exists() and not Path("/opt/stackreflex").exists(), "nothing outside --root"

    etc = root / "etc/stackreflex"
    expected_modes = {
        "clouds.yaml": 0o600, "ssh_key": 0o600, "env": 0o600, "known_hosts": 0o640, "inventory.yaml": 0o640,
        "config.toml": 0o640, "watcher-overcloud.env": 0o640, "watcher-edge-1.env": 0o640,
    }  # fmt: skip
    assert {p.name: mode(p) for p in etc.iterdir()} == expected_modes
    assert mode(etc) == 0o750 and mode(root / "var/lib/stackreflex") == 0o750
    assert (etc / "ssh_key").read_text() == files["--ssh-key"].read_text()
    assert (etc / "watcher-overcloud.env").read_text().endswith("METRICS_PORT=9811\n")
    assert (etc / "watcher-edge-1.env").read_text().endswith("METRICS_PORT=9812\n")

    # the venv really has stackreflex, and its command is where the units run it
    venv_python = root / "opt/stackreflex/bin/python"
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    found = subprocess.run(
        [str(venv_python), "-c", "import importlib.metadata as m; d = m.distribution('stackreflex'); "
         "print(d.version, d.locate_file('stackreflex/__init__.py'))"],
        capture_output=True, text=True, check=True, env=clean, cwd=tmp_path,  # not the checkout's egg-info
    ).stdout.split()  # fmt: skip
    assert found[0] == "0.1.0" and found[1].startswith(f"{root}/opt/stackreflex/lib/")
    for name in ("stackreflex-worker.service", "stackreflex-watcher@.service"):
        installed = root / "etc/systemd/system" / name
        assert installed.read_text() == (UNITS / name).read_text() and mode(installed) == 0o644
        directives = unit(installed)["Service"]
        command = dict(directives)["ExecStart"].split()
        assert os.access(root / command[0].lstrip("/"), os.X_OK)
        assert (root / command[command.index("--config") + 1].lstrip("/")).is_file()
        for key, value in directives:
            if key == "EnvironmentFile" and not value.startswith("-"):
                assert (root / value.lstrip("/")).is_file(), value

    # the settings name the files the script put there
    config = tomllib.loads((etc / "config.toml").read_text())
    assert {s: config[s] for s in FILE_SETTINGS} == {
        "ssh_key_file": "/etc/stackreflex/ssh_key",
        "ssh_known_hosts": "/etc/stackreflex/known_hosts",
        "inventory": "/etc/stackreflex/inventory.yaml",
    }
    for setting in FILE_SETTINGS:
        assert (root / config[setting].lstrip("/")).is_file()
    env = dict(line.split("=", 1) for line in (etc / "env").read_text().splitlines() if line and line[0] != "#")
    assert (root / env["OS_CLIENT_CONFIG_FILE"].lstrip("/")).is_file()

    if shutil.which("systemd-analyze"):  # the units as systemd reads them, against the staged tree
        for name in ("stackreflex-worker.service", "stackreflex-watcher@overcloud.service"):
            verified = subprocess.run(
                ["systemd-analyze", "verify", "--man=no", "--recursive-errors=no", f"--root={root}", name],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert verified.returncode == 0 and verified.stderr == "", verified.stderr

    # run again (an upgrade): the edited env and config are kept, identity files given again replaced
    (etc / "env").write_text("STACKREFLEX_BROKER_URL=amqp://edited\n")
    files["--ssh-key"].write_text("the new key\n")
    again = install("--root", str(root), "--ssh-key", str(files["--ssh-key"]), "--pip-arg=--no-deps", str(wheel))
    assert again.returncode == 0, again.stderr
    assert (etc / "env").read_text() == "STACKREFLEX_BROKER_URL=amqp://edited\n"
    assert (etc / "ssh_key").read_text() == "the new key\n" and mode(etc / "ssh_key") == 0o600
    assert (etc / "inventory.yaml").is_file() and (etc / "config.toml").read_text().startswith("# /etc/stackreflex")

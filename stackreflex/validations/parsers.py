"""Reading what the runbook's tools print: df, chronyc, rpm, pcs, haproxy.cfg and HAProxy's stats CSV.

Each reads the tool's real output format (as it prints on RHEL), tolerating the columns and
sections that vary between versions.
"""

import csv
import io
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Filesystem:
    device: str
    size: int
    used: int
    available: int
    mount: str

    @property
    def free_percent(self) -> float:
        return 100.0 * self.available / self.size if self.size else 100.0


def df(text: str) -> list[Filesystem]:
    """``df -P -B1``: a header, then device, size, used, available, capacity, mount point."""
    found = []
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 6 and parts[1].isdigit():
            found.append(Filesystem(parts[0], int(parts[1]), int(parts[2]), int(parts[3]), " ".join(parts[5:])))
    return found


def chrony_tracking(text: str) -> dict[str, str]:
    """``chronyc tracking``: ``Name : value`` lines."""
    fields = {}
    for line in text.splitlines():
        name, colon, value = line.partition(":")
        if colon:
            fields[name.strip()] = value.strip()
    return fields


def rpm_versions(text: str) -> dict[str, list[str]]:
    """``rpm -q --qf '%{NAME} %{VERSION}-%{RELEASE}\\n' PKG…``: each package's installed versions
    (a kernel is often installed more than once); ``package X is not installed`` maps X to []."""
    versions: dict[str, list[str]] = {}
    for line in text.splitlines():
        missing = re.match(r"package (\S+) is not installed", line)
        if missing:
            versions.setdefault(missing.group(1), [])
            continue
        parts = line.split()
        if len(parts) == 2:
            versions.setdefault(parts[0], []).append(parts[1])
    return versions


def newest(versions: list[str]) -> str:
    """The highest of RPM versions (compared part by part, numbers as numbers)."""

    def key(version: str) -> list[tuple[int, int, str]]:
        return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"[.\-_+~]", version)]

    return max(versions, key=key) if versions else ""


@dataclass
class PacemakerStatus:
    online: list[str]
    offline: list[str]
    #: Resources (or bundle replicas) reported FAILED or Stopped, with their line.
    not_started: list[str]
    failed_actions: list[str]
    #: Daemons not ``active/enabled`` (corosync, pacemaker, pcsd).
    daemons_down: list[str]
    quorum: bool


def pcs_status(text: str) -> PacemakerStatus:
    """``pcs status`` as Pacemaker 1.1 and 2.x print it (with or without the ``* `` bullets)."""

    def nodes(label: str) -> list[str]:
        match = re.search(rf"^\s*(?:\* )?{label}: \[ ?(.*?) ?\]\s*$", text, re.M)
        return match.group(1).split() if match else []

    online = set(nodes("Online"))
    resources_part = re.split(r"^(?:Failed (?:Resource )?Actions|Daemon Status):", text, flags=re.M)[0]
    not_started = []
    for line in resources_part.splitlines():
        item = line.strip().removeprefix("* ").strip()
        clone_stopped = re.match(r"Stopped(?: \(disabled\))?: \[ ?(.*?) ?\]", item)
        if clone_stopped:  # a clone's "Stopped: [ nodes ]": expected on nodes that are offline only
            if online & set(clone_stopped.group(1).split()):
                not_started.append(item)
        elif re.search(r"\b(Stopped|FAILED)\b", item):
            not_started.append(item)
    # Pacemaker 1.1 starts each failed action at column 0 ("* name_start_0 on …"), 2.x indents it;
    # continuation lines are indented without the bullet
    failed_block = re.search(r"^Failed (?:Resource )?Actions:\n((?:(?:[ \t]+|\* ).*\n?)*)", text, re.M)
    failed = [
        line.strip()[2:]
        for line in (failed_block.group(1) if failed_block else "").splitlines()
        if line.strip().startswith("* ")
    ]
    daemons_block = re.search(r"^Daemon Status:\n((?:[ \t]+.*\n?)*)", text, re.M)
    daemons_down = [
        line.strip()
        for line in (daemons_block.group(1) if daemons_block else "").splitlines()
        if ":" in line and line.split(":", 1)[1].strip() != "active/enabled"
    ]
    return PacemakerStatus(
        sorted(online),
        nodes("OFFLINE"),
        not_started,
        failed,
        daemons_down,
        quorum="partition WITHOUT quorum" not in text,
    )


@dataclass(frozen=True)
class StatsListener:
    address: str
    port: int
    user: str
    password: str
    uri: str = "/"


def haproxy_stats_listener(config: str) -> StatsListener | None:
    """The ``listen haproxy.stats`` section of haproxy.cfg: where it binds and its ``stats auth``."""
    section = haproxy_section(config, "haproxy.stats")
    if section is None:
        return None
    bind = re.search(r"^\s*bind\s+(\S+):(\d+)", section, re.M)
    auth = re.search(r"^\s*stats\s+auth\s+([^:\s]+):(\S+)", section, re.M)
    uri = re.search(r"^\s*stats\s+uri\s+(\S+)", section, re.M)
    if bind is None:
        return None
    return StatsListener(
        bind.group(1),
        int(bind.group(2)),
        auth.group(1) if auth else "",
        auth.group(2) if auth else "",
        uri.group(1) if uri else "/",
    )


def haproxy_section(config: str, name: str) -> str | None:
    """The body of ``listen NAME`` (or ``frontend``/``backend NAME``) in haproxy.cfg."""
    match = re.search(rf"^(?:listen|frontend|backend)\s+{re.escape(name)}\s*\n((?:[ \t]+.*\n?|\s*\n)*)", config, re.M)
    return match.group(1) if match else None


def haproxy_bind(config: str, name: str) -> tuple[str, int] | None:
    """Where the ``listen NAME`` section binds (its first ``bind ADDR:PORT``)."""
    section = haproxy_section(config, name)
    bind = re.search(r"^\s*bind\s+(\S+):(\d+)", section or "", re.M)
    return (bind.group(1), int(bind.group(2))) if bind else None


def haproxy_csv(text: str) -> list[dict[str, str]]:
    """HAProxy's stats CSV (``/;csv``): a ``# pxname,svname,…`` header, one row per frontend,
    server and backend."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("# "):
        raise ValueError("not HAProxy stats CSV (no '# pxname,…' header)")
    reader = csv.DictReader(io.StringIO("\n".join([lines[0][2:], *lines[1:]])))
    return [row for row in reader if row.get("pxname")]

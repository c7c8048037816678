"""Post-mortems from the audit log: timelines, searches, stats, the HTML report (rendered in
headless Chromium), exports and retention, on SQLite and PostgreSQL."""

import csv
import io
import json
import os
import pty
import re
import shutil
import subprocess
import sys
from datetime import timedelta

import pytest
import yaml
from sqlmodel import select

from stackreflex.cli.report import lanes_of
from stackreflex.core.envelope import Envelope
from stackreflex.models.audit import AuditLog
from stackreflex.models.retention import prune
from stackreflex.models.stats import handler_stats, percentile, slowest_steps, waiting_runs
from stackreflex.models.tables import Run, Step
from stackreflex.models.timeline import Scope, timeline
from stackreflex.tasks.inventory import Host, Inventory

from .conftest import assert_no_word_split, env_for, make_settings, run_cli
from .history import LANES, SECRET_SIG, T0, at, script

WINDOW = ("--since", (T0 - timedelta(seconds=10)).isoformat(), "--until", (T0 + timedelta(hours=1)).isoformat())


@pytest.fixture
def history(database_url):
    audit = AuditLog.open(database_url)
    return audit, script(audit)


def cli(database_url, tmp_path, *args):
    return run_cli(make_settings(None, database_url, "unused"), tmp_path, "audit", *args)


def shape(entries):
    return [(e["kind"], e["what"], e["target"], e["status"]) for e in entries]


def test_a_scripted_history_comes_back_in_time_order(history):
    audit, h = history
    found = timeline(audit, Scope(correlation_id=h.correlations["evacuate"]))
    assert shape(found.entries) == [
        ("envelope", "command.host.evacuate", "compute-1.localdomain", "accepted"),
        ("run", "evacuate_host", "compute-1.localdomain", "failed"),
        ("step", "disable nova-compute", "compute-1.localdomain", "succeeded"),
        ("step", "live-migrate", "vm-a", "succeeded"),
        ("step", "live-migrate", "vm-b", "failed"),
        ("step", "live-migrate", "vm-b", "failed"),
    ]
    assert [e["duration_s"] for e in found.entries[2:]] == [1.0, 17.0, 15.0, 20.0]
    assert found.entries[4]["error"] == "migration 7 ended error"
    window = timeline(audit, Scope(since=at(-10), until=at(3600)))
    assert [e["time"] for e in window.entries] == sorted(e["time"] for e in window.entries)
    kinds = [(e["kind"], e["what"]) for e in window.entries if e["kind"] != "step"]
    assert kinds == [
        ("envelope", "heat.resource.CREATE_IN_PROGRESS"),
        ("run", "configure_new_node"),
        ("envelope", "command.host.evacuate"),
        ("run", "evacuate_host"),
        ("envelope", "command.volume.snapshot"),
        ("run", "snapshot_volumes"),
    ]
    assert not window.truncated and len(window.entries) == 6 + sum(LANES.values())
    assert timeline(audit, Scope(since=at(-10), until=at(3600), limit=5)).truncated


def test_scopes_and_filters_combine(history):
    audit, h = history
    host = timeline(audit, Scope(host="compute-1.localdomain"))
    assert {e["correlation_id"] for e in host.entries} == {h.correlations["evacuate"]}
    assert len(host.entries) == 6  # the run about the host brings all its steps
    failed = timeline(audit, Scope(host="compute-1.localdomain", status=("failed",)))
    assert shape(failed.entries) == [
        ("run", "evacuate_host", "compute-1.localdomain", "failed"),
        ("step", "live-migrate", "vm-b", "failed"),
        ("step", "live-migrate", "vm-b", "failed"),
    ]
    server = timeline(audit, Scope(server="vm-b"))
    assert [e["what"] for e in server.entries if e["kind"] == "step"] == ["live-migrate", "live-migrate"]
    later = timeline(audit, Scope(server="vm-b", since=at(125)))
    assert [e["time"] for e in later.entries if e["kind"] == "step"] == ["2026-11-20T22:02:10.000Z"]
    assert timeline(audit, Scope(stack="overcloud", host="compute-1.localdomain")).entries == []
    stack = timeline(audit, Scope(stack="overcloud", status=("succeeded",)))
    assert {e["correlation_id"] for e in stack.entries} == {h.correlations["deploy"]} and len(stack.entries) == 5


def test_the_cli_shows_utc_by_default_and_local_time_when_asked(history, database_url, tmp_path):
    _audit, h = history
    as_json = cli(database_url, tmp_path, "timeline", "--correlation-id", h.correlations["snapshot"], "-f", "json")
    assert as_json.returncode == 0, as_json.stderr
    entries = json.loads(as_json.stdout)
    assert entries[0]["time"] == "2026-11-20T22:03:20.000Z"
    kolkata = cli(
        database_url,
        tmp_path,
        "timeline",
        "--correlation-id",
        h.correlations["snapshot"],
        "-f",
        "yaml",
        "--tz",
        "Asia/Kolkata",
    )
    assert yaml.safe_load(kolkata.stdout)[0]["time"] == "2026-11-21T03:33:20.000+05:30"
    as_csv = cli(database_url, tmp_path, "timeline", "--server", "vm-c", "-f", "csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [(r["kind"], r["what"]) for r in rows] == [  # the run about vm-c, with all it did
        ("envelope", "command.volume.snapshot"),
        ("run", "snapshot_volumes"),
        ("step", "stop server"),
        ("step", "snapshot volume"),
        ("step", "start server"),
    ]
    bad = cli(database_url, tmp_path, "timeline", "--tz", "Mars/Olympus")
    assert bad.returncode == 3 and "unknown time zone" in bad.stderr


def test_searches_stats_waiting_and_slowest(history, database_url, tmp_path):
    audit, h = history
    stats = {r["handler"]: r for r in handler_stats(audit, since=at(-86400 * 365))}
    assert stats["evacuate_host"]["failed"] == 1 and stats["evacuate_host"]["success_rate"] == 0.0
    assert stats["copy_image"]["runs"] == 2 and stats["copy_image"]["unfinished"] == 1
    assert stats["copy_image"]["success_rate"] == 1.0 and stats["copy_image"]["p50_s"] == 30.0
    assert percentile([float(n) for n in range(1, 21)], 0.95) == 19.0 and percentile([4.0, 1.0], 0.5) == 1.0
    [waiting] = waiting_runs(audit)
    assert waiting["waiting_for"] == "the import lock of cirros"
    slow = slowest_steps(audit, h.runs["evacuate"], limit=2)
    assert [(s["target"], s["duration_s"]) for s in slow] == [("vm-b", 20.0), ("vm-a", 17.0)]
    shown = cli(database_url, tmp_path, "stats", "--since", "400d")
    assert shown.returncode == 0 and "evacuate_host" in shown.stdout and "0.0%" in shown.stdout
    failed = cli(database_url, tmp_path, "runs", "--status", "failed", "--since", "400d", "--json")
    assert [r["handler"] for r in json.loads(failed.stdout)] == ["evacuate_host"]


def test_secrets_stay_redacted_in_every_output(history, database_url, tmp_path):
    _audit, h = history
    scope = ("--correlation-id", h.correlations["deploy"])
    outputs = [
        cli(database_url, tmp_path, "timeline", *scope, "--json").stdout,
        cli(database_url, tmp_path, "timeline", *scope, "--csv").stdout,
    ]
    cli(database_url, tmp_path, "report", *scope, "--html", str(tmp_path / "r.html"))
    cli(database_url, tmp_path, "export", *scope, "-o", str(tmp_path / "e.json"))
    outputs += [(tmp_path / "r.html").read_text(), (tmp_path / "e.json").read_text()]
    exported = json.loads(outputs[-1])
    assert exported["format"] == "stackreflex-timeline/1" and len(exported["entries"]) == 6
    assert "temp_url_sig" in json.dumps(exported)  # the URL is there, its signature is not
    assert all(SECRET_SIG not in out for out in outputs)


def test_prune_removes_only_what_is_older_and_keeps_waiting_runs(history, database_url, tmp_path):
    audit, h = history
    counted = cli(database_url, tmp_path, "prune", "--older-than", "90d", "--dry-run")
    assert "would delete 1 run(s), 1 step(s), 1 envelope(s)" in counted.stdout
    with audit.session() as s:
        assert s.get(Run, h.runs["old"]) is not None
    done = cli(database_url, tmp_path, "prune", "--older-than", "90d")
    assert "deleted 1 run(s), 1 step(s), 1 envelope(s)" in done.stdout, done.stdout + done.stderr
    with audit.session() as s:
        assert s.get(Run, h.runs["old"]) is None and s.get(Run, h.runs["waiting"]).status == "waiting"
        assert len(s.exec(select(Run)).all()) == 4 and len(s.exec(select(Step)).all()) == sum(LANES.values())
    assert timeline(audit, Scope(correlation_id=h.correlations["waiting"])).entries[0]["kind"] == "envelope"
    assert prune(audit, T0 + timedelta(days=1)).runs == 3  # the waiting run stays, however old
    assert [r["handler"] for r in waiting_runs(audit)] == ["copy_image"]
    bad = cli(database_url, tmp_path, "prune", "--older-than", "yesterday")
    assert bad.returncode == 2 and "90d" in bad.stderr


@pytest.fixture(scope="module")
def browser():
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.fail("Chromium and chromedriver are needed for the report test; run the tests with scripts/test")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = shutil.which("chromium")
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--force-device-scale-factor=1",
        "--window-size=1400,1000",
        "--disable-dev-shm-usage",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    yield driver
    driver.quit()


GREEN, RED = (0x2E, 0x7D, 0x32), (0xC6, 0x28, 0x28)


def bars_per_lane(png: bytes) -> list[list[tuple]]:
    """From a screenshot of the chart: the bands of rows holding bar colours (lanes), and in the
    middle row of each, the runs of bar-coloured pixels (bars) as their colours."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    width, height = image.size
    pixels = image.load()
    coloured = [y for y in range(height) if any(pixels[x, y] in (GREEN, RED) for x in range(width))]
    bands, start = [], None
    for y in range(height + 1):
        inside = y in coloured
        if inside and start is None:
            start = y
        if not inside and start is not None:
            bands.append((start, y - 1))
            start = None
    lanes = []
    for top, bottom in bands:
        y, bars, previous = (top + bottom) // 2, [], None
        for x in range(width):
            colour = pixels[x, y] if pixels[x, y] in (GREEN, RED) else None
            if colour and colour != previous:
                bars.append(colour)
            previous = colour
        lanes.append(bars)
    return lanes


def test_the_html_report_renders_one_lane_per_node_and_a_bar_per_step(history, database_url, tmp_path, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    report = tmp_path / "postmortem.html"
    made = cli(database_url, tmp_path, "report", *WINDOW, "--html", str(report), "--title", "Night of 20 November")
    assert made.returncode == 0, made.stderr
    assert f"{len(LANES)} lanes" in made.stdout
    assert "http" not in report.read_text().replace("http://www.w3.org/2000/svg", "").split("<body>")[0]
    browser.get(report.as_uri())
    lanes = bars_per_lane(browser.find_element(By.ID, "gantt").screenshot_as_png)
    assert [len(bars) for bars in lanes] == list(LANES.values())
    lane_of = dict(zip(LANES, lanes, strict=False))
    assert lane_of["vm-b"] == [RED, RED] and lane_of["vm-a"] == [GREEN]
    assert all(colour == GREEN for name, bars in lane_of.items() if name != "vm-b" for colour in bars)
    text = browser.find_element(By.TAG_NAME, "body").text
    assert text.index("Failures (3)") < text.index("migration 7 ended error") < text.index("Timeline")
    assert "compute-1.localdomain is not empty" in text.split("Counts")[0]
    assert "Outcome: 1 of" in text and "Window: 2026-11-20" in text
    # each failed step links to its bar, which links back to its row; the queue is drawn apart
    links = [a.get_attribute("href").split("#")[1] for a in browser.find_elements(By.LINK_TEXT, "bar")]
    assert len(links) == 2
    for link in links:
        bar = browser.find_element(By.ID, link)
        assert bar.get_attribute("fill") == "#c62828"
        assert browser.find_element(By.ID, link.removeprefix("bar-")).text.count("migration") == 1
    [queued] = browser.find_elements(By.CSS_SELECTOR, "rect.queued")
    assert "queued in Nova 5.0 s" in queued.get_attribute("innerHTML")
    # the filter: failed steps only leaves vm-b's two bars (and the failed rows); zoom widens the chart
    Select(browser.find_element(By.ID, "f-status")).select_by_visible_text("failed")
    visible = [b for b in browser.find_elements(By.CSS_SELECTOR, "rect.bar") if b.is_displayed()]
    assert len(visible) == 2 and {b.get_attribute("fill") for b in visible} == {"#c62828"}
    rows = [r for r in browser.find_elements(By.CSS_SELECTOR, "#entries tr[data-status]") if r.is_displayed()]
    assert {r.get_attribute("data-status") for r in rows} == {"failed"}
    width = int(browser.find_element(By.ID, "gantt").get_attribute("width"))
    browser.execute_script(
        "var z = document.getElementById('f-zoom'); z.value = 4; z.dispatchEvent(new Event('input'));"
    )
    assert int(float(browser.find_element(By.ID, "gantt").get_attribute("width"))) > 3 * width - 3 * 260


def test_a_node_named_four_ways_is_one_lane(database_url):
    """``Role[i]``, the member's Heat resource, ``address:port`` and the address are one node: one
    lane, named by the inventory's host name."""
    audit = AuditLog.open(database_url)
    envelope = Envelope.new("command.demo.lanes", subject="overcloud")
    [accepted] = audit.accept_many([(envelope, ["lanes"])])
    run_id = accepted.runs["lanes"].id
    heat = "overcloud-ControllerDeployedServer-sigq8jtgev49-0-5vpuemopj82f-ControllerDeployedServer-s2f/deployed-server"
    for n, target in enumerate(("ControllerDeployedServer[0]", heat, "127.0.0.11:39629", "127.0.0.11", "vm-a")):
        audit.record_step(
            run_id,
            1,
            f"step {n}",
            target,
            status="succeeded",
            started_at=T0 + timedelta(seconds=n),
            finished_at=T0 + timedelta(seconds=n + 1),
        )
    inventory = Inventory(
        roles={"ControllerDeployedServer": [Host.parse("127.0.0.11:39629")]},
        hostnames={"overcloud-controller-0": Host.parse("127.0.0.11:39629")},
    )
    found = timeline(audit, Scope(correlation_id=envelope.id))
    lanes = lanes_of(found, inventory)
    assert {lane: len(steps) for lane, steps in lanes.items()} == {"overcloud-controller-0": 4, "vm-a": 1}
    assert set(lanes_of(found)) == {"127.0.0.11", "vm-a"}  # no inventory: the run's one address


def test_a_long_timeline_prints_every_entry_whole_and_fits_an_80_column_terminal(database_url, tmp_path):
    """Piped, nothing is fitted: every entry on a line of its own, each column starting where its
    header does. On an 80-column terminal the table fits: free text wraps at spaces, names after
    a separator, and no word (no run of letters and digits) is ever split."""
    audit = AuditLog.open(database_url)
    envelope = Envelope.new("command.demo.bulk", subject="overcloud")
    [accepted] = audit.accept_many([(envelope, ["bulk"])])
    run_id = accepted.runs["bulk"].id
    nodes = [f"overcloud-novacompute-{i}.localdomain" for i in range(300)]
    for i, node in enumerate(nodes):
        audit.record_step(
            run_id,
            1,
            f"configure the agent of node number {i}",
            node,
            status="succeeded",
            started_at=T0 + timedelta(seconds=i),
            finished_at=T0 + timedelta(seconds=i + 2),
        )
    scope = ("--correlation-id", envelope.id)
    lines = cli(database_url, tmp_path, "timeline", *scope).stdout.splitlines()
    header = next(line for line in lines if "time (UTC)" in line)
    rows = [line for line in lines if "overcloud-novacompute-" in line]
    assert len(rows) == len(nodes)
    for column in ("target", "status"):
        assert {row.index("overcloud-novacompute-" if column == "target" else "succeeded") for row in rows} == {
            header.index(column)
        }
    assert all(node in " ".join(rows) for node in nodes)  # piped: nothing cut

    primary, replica = pty.openpty()
    env = env_for(make_settings(None, database_url, "unused"), tmp_path, {"COLUMNS": "80", "LINES": "24"})
    process = subprocess.Popen(
        [sys.executable, "-m", "stackreflex", "audit", "timeline", *scope], stdout=replica, stderr=replica, env=env
    )
    os.close(replica)
    screen = b""
    while chunk := _read(primary):
        screen += chunk
    process.wait(timeout=60)
    shown = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in screen.decode().splitlines()]
    assert max(len(line) for line in shown) <= 80, max(shown, key=len)
    assert_no_word_split(shown, [*nodes, "succeeded", *(f"configure the agent of node number {i}" for i in range(300))])


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except OSError:  # the other end closed
        return b""

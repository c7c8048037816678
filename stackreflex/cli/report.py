"""The post-mortem report: one self-contained HTML file (no fonts, images or scripts fetched).

A header with the scope, the time window and the outcome; the failures first, each linked to
its bar and its row; the counts; a Gantt chart with one lane per node or host (a node named
by its role and index, its address and port, or its Heat resource is one lane, through the
inventory) and one bar per step attempt, a migration's time in Nova's queue drawn apart from
its move; then every entry with its run, handler and correlation. A small inline script
filters by status, lane and text and zooms the time axis; without it the page still reads.
Every value is escaped and was redacted before it got here.
"""

import html
import json
import math
import re
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from ..models.timeline import Timeline
from ..tasks.inventory import Inventory

#: Bar colours by outcome (also the legend's); a migration's queued time is drawn in QUEUED.
COLOURS = {
    "succeeded": "#2e7d32",
    "failed": "#c62828",
    "dead": "#c62828",
    "interrupted": "#8e24aa",
    "running": "#1565c0",
    "waiting": "#f9a825",
    "pending": "#78909c",
    "skipped": "#b0bec5",
    "cancelled": "#6d4c41",
}
QUEUED = "#c5cae9"
LANE_HEIGHT, BAR_HEIGHT, LABEL_WIDTH, CHART_WIDTH, MIN_BAR = 30, 18, 260, 1000, 3
#: Axis tick spacings to choose from (seconds): the first giving at most ~10 ticks.
TICKS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400)
FAILED = ("failed", "dead", "rejected", "interrupted")

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #1d2330; }
h1 { font-size: 20px; } h2 { font-size: 16px; margin-top: 28px; }
table { border-collapse: collapse; } td, th { border: 1px solid #d0d5dd; padding: 3px 8px; text-align: left; }
.failure { color: #c62828; } .legend span { display: inline-block; margin-right: 14px; }
.swatch { display: inline-block; width: 10px; height: 10px; margin-right: 4px; border: 1px solid #444; }
.chart { overflow-x: auto; border: 1px solid #d0d5dd; } .controls { margin: 8px 0; }
.controls label { margin-right: 14px; } tr:target, tr.hit { background: #fff3c4; }
.bar:hover { stroke: #111; stroke-width: 2; }
"""

SCRIPT = """
(function () {
  var svg = document.getElementById('gantt'), chart = JSON.parse(svg.dataset.chart);
  var status = document.getElementById('f-status'), lane = document.getElementById('f-lane');
  var text = document.getElementById('f-text'), zoom = document.getElementById('f-zoom');
  function shown(el) {
    var s = status.value, l = lane.value, t = text.value.toLowerCase();
    return (!s || el.dataset.status === s) && (!l || el.dataset.lane === l) &&
           (!t || el.dataset.text.toLowerCase().indexOf(t) >= 0);
  }
  function draw() {
    var scale = (chart.width - 10) / chart.span * Number(zoom.value), y = 0;
    svg.setAttribute('width', chart.label + chart.width * Number(zoom.value));
    svg.querySelectorAll('g.lane').forEach(function (g) {
      var any = false;
      g.querySelectorAll('.bar').forEach(function (bar) {
        var on = shown(bar); any = any || on;
        bar.style.display = on ? '' : 'none';
        bar.setAttribute('x', chart.label + Number(bar.dataset.start) * scale);
        bar.setAttribute('width', Math.max(chart.min, Number(bar.dataset.dur) * scale));
      });
      g.style.display = any ? '' : 'none';
      if (any) { g.setAttribute('transform', 'translate(0,' + (y - Number(g.dataset.y)) + ')'); y += chart.lane; }
    });
    svg.querySelectorAll('.tick').forEach(function (tick) {
      tick.setAttribute('transform', 'translate(' + (Number(tick.dataset.t) * scale - Number(tick.dataset.x0)) + ',' +
                        (y - chart.lanes * chart.lane) + ')');
    });
    svg.setAttribute('height', y + 22);
    document.querySelectorAll('#entries tr[data-status]').forEach(function (row) {
      row.style.display = shown(row) ? '' : 'none';
    });
  }
  [status, lane, text, zoom].forEach(function (c) {
    c.addEventListener('input', draw); c.addEventListener('change', draw);
  });
})();
"""


def _when(text: str | None) -> datetime | None:
    return _at(text) if text else None


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value))


_ROLE_INDEX = re.compile(r"^(?P<role>[A-Za-z][\w]*)\[(?P<index>\d+)\]$")
_ADDRESS_PORT = re.compile(r"^\[?(?P<address>[0-9a-fA-F:.]+?)\]?:(?P<port>\d+)$")
_IP = re.compile(r"^[0-9.]+$|^[0-9a-fA-F:]+:[0-9a-fA-F:]*$")


class LaneNames:
    """What a step's target names, as one lane per node: ``Role[i]``, the Heat resource of a
    role's member (``…-Role-…-i-…/deployed-server``), ``address:port`` and ``address`` all come
    to the node's address, then to its host name where the inventory has one."""

    def __init__(self, inventory: Inventory | None):
        self.roles = inventory.roles if inventory else {}
        named = {**(inventory.servers if inventory else {}), **(inventory.hostnames if inventory else {})}
        self.names = {host.address: name for name, host in named.items()}

    def node(self, target: str) -> str | None:
        """The node's address if ``target`` names one, else None."""
        if m := _ROLE_INDEX.match(target):
            return self._member(m["role"], int(m["index"]))
        if m := _ADDRESS_PORT.match(target):
            return m["address"]
        if _IP.match(target):
            return target
        for role, _hosts in self.roles.items():  # a member's Heat resource path
            if m := re.search(rf"-{re.escape(role)}-\w+?-(\d+)-", target):
                return self._member(role, int(m[1]))
        return None

    def _member(self, role: str, index: int) -> str | None:
        hosts = self.roles.get(role, [])
        return hosts[index].address if index < len(hosts) else None

    def label(self, address: str) -> str:
        return self.names.get(address, address)


def _names_a_node(target: str) -> bool:
    """A target that stands for a node without saying which (a role's member, a Heat resource)."""
    return bool(_ROLE_INDEX.match(target)) or "/" in target


def lanes_of(timeline: Timeline, inventory: Inventory | None = None) -> dict[str, list[dict[str, Any]]]:
    """Steps per lane, first seen first: the node a step was aimed at (see :class:`LaneNames`),
    or its target as it is; a step of a run about one node whose target names a node the
    inventory cannot place goes to that run's node."""
    names = LaneNames(inventory)
    steps = [e for e in timeline.entries if e["kind"] == "step"]
    addresses = [names.node(s["target"]) if s["target"] else None for s in steps]
    nodes_of_run: dict[str, set[str]] = {}
    for s, address in zip(steps, addresses, strict=False):
        if address:
            nodes_of_run.setdefault(s["run_id"], set()).add(address)
    lanes: dict[str, list[dict[str, Any]]] = {}
    for s, address in zip(steps, addresses, strict=False):
        target = s["target"] or ""
        if address is None and _names_a_node(target) and len(nodes_of_run.get(s["run_id"], ())) == 1:
            [address] = nodes_of_run[s["run_id"]]
        lane = names.label(address) if address else (target or f"({s['handler']})")
        lanes.setdefault(lane, []).append(s)
    return lanes


def _tick_every(span: float) -> float:
    return next((t for t in TICKS if span / t <= 10), TICKS[-1])


def _tip(s: dict[str, Any], lane: str) -> str:
    detail = s.get("detail") or {}
    tip = f"{s['what']} on {lane}: {s['status']}, {s['duration_s']} s"
    if detail.get("source") or detail.get("destination"):
        tip += f"; {detail.get('source') or '?'} → {detail.get('destination') or '?'}"
    if detail.get("queued_s") is not None:
        tip += f"; queued {detail['queued_s']} s in Nova, moving {detail.get('moving_s')} s"
    if detail.get("attempt"):
        tip += f"; attempt {detail['attempt']}"
    return tip + (f" — {s['error']}" if s["error"] else "")


def gantt(timeline: Timeline, lanes: dict[str, list[dict[str, Any]]], anchors: dict[int, str]) -> str:
    steps = [s for lane in lanes.values() for s in lane]
    if not steps:
        return "<p>No steps in this scope.</p>"
    start = min(_at(s["time"]) for s in steps)  # a step always has its time
    end = max(_at(s["end"] or s["time"]) for s in steps)
    span = max((end - start).total_seconds(), 1e-3)
    scale = (CHART_WIDTH - 10) / span
    rows = []
    for n, (lane, entries) in enumerate(lanes.items()):
        y = n * LANE_HEIGHT
        rows.append(
            f'<g class="lane" data-y="{y}" data-lane="{_e(lane)}">'
            f'<rect x="0" y="{y}" width="100%" height="{LANE_HEIGHT}" '
            f'fill="{"#ffffff" if n % 2 == 0 else "#eef1f5"}"/>'
            f'<text x="6" y="{y + LANE_HEIGHT * 0.65:.0f}" font-size="12">{_e(lane[:40])}'
            f"<title>{_e(lane)}</title></text>"
        )
        top = y + (LANE_HEIGHT - BAR_HEIGHT) / 2
        for s in entries:
            offset = (_at(s["time"]) - start).total_seconds()
            duration = s["duration_s"] or 0
            queued = min((s.get("detail") or {}).get("queued_s") or 0, duration)
            anchor, colour = anchors[id(s)], COLOURS.get(s["status"], "#78909c")
            data = (
                f'data-status="{_e(s["status"])}" data-lane="{_e(lane)}" '
                f'data-text="{_e(" ".join(str(v) for v in (s["what"], s["target"], s["error"]) if v))}"'
            )
            if queued:  # Nova's queue first, in its own colour, then the move
                rows.append(
                    f'<rect class="bar queued" x="{LABEL_WIDTH + offset * scale:.1f}" y="{top:.0f}" '
                    f'width="{max(1.0, queued * scale):.1f}" height="{BAR_HEIGHT}" fill="{QUEUED}" '
                    f'stroke="#fff" data-start="{offset:.3f}" data-dur="{queued:.3f}" {data}>'
                    f"<title>{_e(f'queued in Nova {queued} s before moving')}</title></rect>"
                )
            rows.append(
                f'<a href="#{anchor}"><rect class="bar" id="bar-{anchor}" '
                f'x="{LABEL_WIDTH + (offset + queued) * scale:.1f}" y="{top:.0f}" '
                f'width="{max(MIN_BAR, (duration - queued) * scale):.1f}" height="{BAR_HEIGHT}" '
                f'fill="{colour}" stroke="#fff" data-start="{offset + queued:.3f}" '
                f'data-dur="{duration - queued:.3f}" {data}><title>{_e(_tip(s, lane))}</title></rect></a>'
            )
        rows.append("</g>")
    height = len(lanes) * LANE_HEIGHT
    every = _tick_every(span)
    ticks, moment = [], datetime.fromtimestamp(math.ceil(start.timestamp() / every) * every, start.tzinfo)
    while moment <= end:
        t = (moment - start).total_seconds()
        x = LABEL_WIDTH + t * scale
        ticks.append(
            f'<g class="tick" data-t="{t:.3f}" data-x0="{t * scale:.1f}">'
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{height}" y2="{height + 5}" stroke="#555"/>'
            f'<text x="{x:.1f}" y="{height + 16}" font-size="11" text-anchor="middle">'
            f"{moment:%H:%M:%S}</text></g>"
        )
        moment += timedelta(seconds=every)
    chart = json.dumps(
        {
            "span": span,
            "width": CHART_WIDTH,
            "label": LABEL_WIDTH,
            "min": MIN_BAR,
            "lane": LANE_HEIGHT,
            "lanes": len(lanes),
        }
    )
    return (
        f'<div class="chart"><svg id="gantt" xmlns="http://www.w3.org/2000/svg" '
        f'width="{LABEL_WIDTH + CHART_WIDTH}" height="{height + 22}" shape-rendering="crispEdges" '
        f"data-chart='{_e(chart)}'>{''.join(rows)}{''.join(ticks)}</svg></div>"
    )


def _window(timeline: Timeline) -> str:
    times = [t for e in timeline.entries for t in (_when(e["time"]), _when(e["end"])) if t]
    if not times:
        return "no entries"
    first, last = min(times), max(times)
    return f"{first:%Y-%m-%d %H:%M:%S} to {last:%Y-%m-%d %H:%M:%S} UTC ({(last - first).total_seconds():.0f} s)"


def _outcome(counts: dict[str, Counter[str]]) -> str:
    runs = counts["run"]
    bad = sum(runs[s] for s in ("failed", "dead", "interrupted", "cancelled"))
    parts = ", ".join(f"{n} {s}" for s, n in sorted(runs.items()))
    verdict = (
        "every run succeeded"
        if runs and bad == 0 and set(runs) <= {"succeeded", "skipped"}
        else f"{bad} of {sum(runs.values())} run(s) did not succeed"
        if bad
        else "runs not over yet"
    )
    return f"{verdict} ({parts or 'no runs'})"


def _bar_link(anchor: str) -> str:
    return f'<a href="#bar-{anchor}">bar</a>'


def render_report(timeline: Timeline, title: str, inventory: Inventory | None = None) -> str:
    entries = timeline.entries
    anchors = {id(e): f"e{n}" for n, e in enumerate(entries)}
    lanes = lanes_of(timeline, inventory)
    lane_of = {id(s): lane for lane, steps in lanes.items() for s in steps}
    failures = [e for e in entries if e["status"] in FAILED]
    counts = {kind: Counter(e["status"] for e in entries if e["kind"] == kind) for kind in ("envelope", "run", "step")}
    legend = "".join(
        f'<span><i class="swatch" style="background:{c}"></i>{s}</span>' for s, c in COLOURS.items() if s != "dead"
    )
    legend += f'<span><i class="swatch" style="background:{QUEUED}"></i>queued in Nova</span>'
    failure_rows = "".join(
        f"<tr><td><a href='#{anchors[id(e)]}'>{_e(e['time'])}</a></td><td>{_e(e['kind'])}</td><td>{_e(e['what'])}</td>"
        f"<td>{_e(e['target'])}</td><td class='failure'>{_e(e['status'])}</td><td>{_e(e['error'])}</td>"
        f"<td>{_bar_link(anchors[id(e)]) if id(e) in lane_of else ''}</td></tr>"
        for e in failures
    )
    count_rows = "".join(
        f"<tr><td>{kind}s</td><td>{sum(c.values())}</td><td>"
        + ", ".join(f"{n} {s}" for s, n in sorted(c.items()))
        + "</td></tr>"
        for kind, c in counts.items()
    )
    timeline_rows = "".join(
        f"<tr id='{anchors[id(e)]}' data-status='{_e(e['status'])}' data-lane='{_e(lane_of.get(id(e), ''))}' "
        f"data-text='{_e(' '.join(str(v) for v in (e['what'], e['target'], e['error'], e['run_id']) if v))}'>"
        f"<td>{_e(e['time'])}</td><td>{_e(e['duration_s'])}</td><td>{_e(e['kind'])}</td><td>{_e(e['what'])}</td>"
        f"<td>{_e(e['target'])}</td><td>{_e(e['status'])}</td><td>{_e(e['error'])}</td><td>{_e((e['run_id'] or '')[:8])}</td>"
        f"<td>{_e(e['handler'])}</td><td>{_e((e['correlation_id'] or '')[:8])}</td></tr>"
        for e in entries
    )
    note = (
        f"<p>Only the newest {len(entries)} entries are shown; narrow the scope or raise --limit.</p>"
        if timeline.truncated
        else ""
    )
    statuses = "".join(f"<option>{_e(s)}</option>" for s in sorted({e["status"] for e in entries if e["status"]}))
    lane_options = "".join(f"<option>{_e(lane)}</option>" for lane in lanes)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title><style>{STYLE}</style></head>
<body>
<h1>{_e(title)}</h1>
<p>Scope: {_e(timeline.scope.describe())}.<br>Window: {_e(_window(timeline))}.<br>
Outcome: {_e(_outcome(counts))}. Times are UTC.</p>{note}
<h2>Failures ({len(failures)})</h2>
{
        "<table><tr><th>time</th><th>kind</th><th>what</th><th>target</th><th>status</th><th>reason</th><th></th></tr>"
        + failure_rows
        + "</table>"
        if failures
        else "<p>None.</p>"
    }
<h2>Counts</h2>
<table><tr><th>what</th><th>total</th><th>by status</th></tr>{count_rows}</table>
<h2>Timeline</h2>
<p class="legend">{legend}</p>
<div class="controls"><label>status <select id="f-status"><option value="">all</option>{statuses}</select></label>
<label>lane <select id="f-lane"><option value="">all</option>{lane_options}</select></label>
<label>text <input id="f-text" type="search" placeholder="server, step, error…"></label>
<label>zoom <input id="f-zoom" type="range" min="1" max="20" step="0.5" value="1"></label></div>
{gantt(timeline, lanes, anchors)}
<h2>Every entry</h2>
<table id="entries"><tr><th>time</th><th>seconds</th><th>kind</th><th>what</th><th>target</th><th>status</th><th>error</th>
<th>run</th><th>handler</th><th>correlation</th></tr>
{timeline_rows}</table>
<script>{SCRIPT}</script>
</body></html>
"""

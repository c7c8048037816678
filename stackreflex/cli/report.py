"""The post-mortem report: one self-contained HTML file (no scripts, fonts or images fetched).

A Gantt chart of the steps, one lane per node or host, bars coloured by outcome; the failures
first with their reasons; the counts. Every value is escaped and was redacted before it got here.
"""

import html
from collections import Counter
from datetime import datetime

from ..models.timeline import Timeline

#: Bar colours by outcome (also the legend's).
COLOURS = {"succeeded": "#2e7d32", "failed": "#c62828", "dead": "#c62828", "interrupted": "#8e24aa",
           "running": "#1565c0", "waiting": "#f9a825", "pending": "#78909c", "skipped": "#b0bec5",
           "cancelled": "#6d4c41"}
LANE_HEIGHT, BAR_HEIGHT, LABEL_WIDTH, CHART_WIDTH, MIN_BAR = 30, 18, 260, 900, 3

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #1d2330; }
h1 { font-size: 20px; } h2 { font-size: 16px; margin-top: 28px; }
table { border-collapse: collapse; } td, th { border: 1px solid #d0d5dd; padding: 3px 8px; text-align: left; }
.failure { color: #c62828; } .legend span { display: inline-block; margin-right: 14px; }
.swatch { display: inline-block; width: 10px; height: 10px; margin-right: 4px; border: 1px solid #444; }
"""


def _when(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def _e(value) -> str:
    return html.escape("" if value is None else str(value))


def lanes_of(timeline: Timeline) -> dict[str, list[dict]]:
    """Steps per lane: the node or host a step was aimed at (else its handler), first seen first."""
    lanes: dict[str, list[dict]] = {}
    for entry in timeline.entries:
        if entry["kind"] == "step":
            lanes.setdefault(entry["target"] or f"({entry['handler']})", []).append(entry)
    return lanes


def gantt(timeline: Timeline) -> str:
    lanes = lanes_of(timeline)
    steps = [s for lane in lanes.values() for s in lane]
    if not steps:
        return "<p>No steps in this scope.</p>"
    start = min(_when(s["time"]) for s in steps)
    end = max(_when(s["end"] or s["time"]) for s in steps)
    span = max((end - start).total_seconds(), 1e-3)
    scale = (CHART_WIDTH - 10) / span
    rows = []
    for n, (lane, entries) in enumerate(lanes.items()):
        y = n * LANE_HEIGHT
        rows.append(f'<rect x="0" y="{y}" width="{LABEL_WIDTH + CHART_WIDTH}" height="{LANE_HEIGHT}" '
                    f'fill="{"#ffffff" if n % 2 == 0 else "#eef1f5"}"/>')
        rows.append(f'<text x="6" y="{y + LANE_HEIGHT * 0.65:.0f}" font-size="12">{_e(lane[:40])}</text>')
        for s in entries:
            x = LABEL_WIDTH + ((_when(s["time"]) - start).total_seconds()) * scale
            width = max(MIN_BAR, (s["duration_s"] or 0) * scale)
            colour = COLOURS.get(s["status"], "#78909c")
            tip = f"{s['what']} on {lane}: {s['status']}, {s['duration_s']} s" + (f" — {s['error']}" if s["error"] else "")
            rows.append(f'<rect class="bar" x="{x:.1f}" y="{y + (LANE_HEIGHT - BAR_HEIGHT) / 2:.0f}" '
                        f'width="{width:.1f}" height="{BAR_HEIGHT}" fill="{colour}"><title>{_e(tip)}</title></rect>')
    height = len(lanes) * LANE_HEIGHT
    axis = (f'<text x="{LABEL_WIDTH}" y="{height + 16}" font-size="11">{_e(start.isoformat())}'
            f'</text><text x="{LABEL_WIDTH + CHART_WIDTH}" y="{height + 16}" font-size="11" text-anchor="end">'
            f'+{span:.1f} s</text>')
    return (f'<svg id="gantt" xmlns="http://www.w3.org/2000/svg" width="{LABEL_WIDTH + CHART_WIDTH}" '
            f'height="{height + 22}" shape-rendering="crispEdges">{"".join(rows)}{axis}</svg>')


def render_report(timeline: Timeline, title: str) -> str:
    entries = timeline.entries
    failures = [e for e in entries if e["status"] in ("failed", "dead", "rejected", "interrupted")]
    counts = {kind: Counter(e["status"] for e in entries if e["kind"] == kind) for kind in ("envelope", "run", "step")}
    legend = "".join(f'<span><i class="swatch" style="background:{c}"></i>{s}</span>'
                     for s, c in COLOURS.items() if s != "dead")
    failure_rows = "".join(
        f"<tr><td>{_e(e['time'])}</td><td>{_e(e['kind'])}</td><td>{_e(e['what'])}</td><td>{_e(e['target'])}</td>"
        f"<td class='failure'>{_e(e['status'])}</td><td>{_e(e['error'])}</td></tr>" for e in failures)
    count_rows = "".join(f"<tr><td>{kind}s</td><td>{sum(c.values())}</td><td>"
                         + ", ".join(f"{n} {s}" for s, n in sorted(c.items())) + "</td></tr>"
                         for kind, c in counts.items())
    timeline_rows = "".join(
        f"<tr><td>{_e(e['time'])}</td><td>{_e(e['duration_s'])}</td><td>{_e(e['kind'])}</td><td>{_e(e['what'])}</td>"
        f"<td>{_e(e['target'])}</td><td>{_e(e['status'])}</td><td>{_e(e['error'])}</td></tr>" for e in entries)
    note = (f"<p>Only the newest {len(entries)} entries are shown; narrow the scope or raise --limit.</p>"
            if timeline.truncated else "")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title><style>{STYLE}</style></head>
<body>
<h1>{_e(title)}</h1>
<p>Scope: {_e(timeline.scope.describe())}. Times are UTC.</p>{note}
<h2>Failures ({len(failures)})</h2>
{"<table><tr><th>time</th><th>kind</th><th>what</th><th>target</th><th>status</th><th>reason</th></tr>"
 + failure_rows + "</table>" if failures else "<p>None.</p>"}
<h2>Counts</h2>
<table><tr><th>what</th><th>total</th><th>by status</th></tr>{count_rows}</table>
<h2>Timeline</h2>
<p class="legend">{legend}</p>
{gantt(timeline)}
<h2>Every entry</h2>
<table><tr><th>time</th><th>seconds</th><th>kind</th><th>what</th><th>target</th><th>status</th><th>error</th></tr>
{timeline_rows}</table>
</body></html>
"""

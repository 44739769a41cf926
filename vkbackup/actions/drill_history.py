"""The earlier drills of a host, as a drill's reports show them: RTO and RPO of
each drill on record, a table in Markdown and two small inline SVG bar charts
in HTML (no script, no external asset), this drill last and in blue, so a
recovery that got slower shows at a glance.

The drills are read back through the storage the drill was given
(`drill_history`), so with [signing] an unsigned or forged record is left out,
as is one dated more than `layout.FUTURE_TOLERANCE` ahead. Only the last
HISTORY_LIMIT are shown. A failed drill has no RTO (the time until it failed
is no recovery time): it is a red cross in the chart, "FAILED" in the table.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from vkbackup import layout
from vkbackup.catalog import read_small
from vkbackup.common import iso
from vkbackup.errors import IntegrityError, ObjectNotFoundError, VkError
from vkbackup.logs import get_logger
from vkbackup.storage.base import Storage

log = get_logger("drill")

#: how many earlier drills the reports show
HISTORY_LIMIT = 12
RECORD_LIMIT = 4 * 1024 * 1024
NONE_YET = "None on record: this is the first drill of this host."


@dataclass(frozen=True)
class EarlierDrill:
    """One drill on record, as the reports show it."""

    started: str  # ISO 8601 UTC
    passed: bool
    rto_seconds: float | None  # None: the drill failed
    rpo_seconds: float | None
    snapshot: str


def _seconds(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    v = float(value)
    return v if 0 <= v < 1e9 else None  # also refuses NaN and the infinities


def from_record(
    doc: object, host: str, now: datetime | None = None, *, own: bool = False
) -> EarlierDrill | None:
    """Given a drill record's parsed JSON, return what the reports show of it, or
    None if it is no drill of *host*, names no start time, or (unless it is the
    drill being reported, *own*) is dated more than FUTURE_TOLERANCE after *now*
    (default: the clock)."""
    if not isinstance(doc, Mapping) or doc.get("host") != host:
        return None
    try:
        when = datetime.fromisoformat(str(doc.get("started")).replace("Z", "+00:00"))
    except ValueError:
        return None
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    if not own and layout.is_future(when, now):
        return None
    restore = doc.get("restore")
    snapshot = restore.get("snapshot") if isinstance(restore, Mapping) else None
    passed = doc.get("status") == "ok"
    return EarlierDrill(
        started=iso(when),
        passed=passed,
        rto_seconds=_seconds(doc.get("rto_seconds")) if passed else None,
        rpo_seconds=_seconds(doc.get("rpo_seconds")),
        snapshot=snapshot if isinstance(snapshot, str) and layout.ID_RE.match(snapshot) else "?",
    )


def drill_history(storage: Storage, host: str, limit: int = HISTORY_LIMIT) -> list[EarlierDrill]:
    """Given a host, return its last *limit* drills on record, passed or failed,
    oldest first. A record that cannot be read, whose signature does not check,
    or that `from_record` refuses is left out; a storage that cannot be listed
    gives none, with a warning: the drill's report is still worth writing."""
    out: list[EarlierDrill] = []
    try:
        keys = sorted(i.key for i in storage.list(f"drills/{host}/") if i.key.endswith(".json"))
        for key in reversed(keys):
            if len(out) >= limit:
                break
            try:
                doc = json.loads(read_small(storage, key, RECORD_LIMIT))
            except (ObjectNotFoundError, ValueError):
                continue
            except IntegrityError as e:  # unsigned or badly signed with [signing]
                log.warning("%s: ignored", e)
                continue
            drill = from_record(doc, host)
            if drill is not None:
                out.append(drill)
    except VkError as e:
        log.warning("the earlier drills of %s could not be read: %s", host, e)
    return out[::-1]


def this_drill(doc: Mapping[str, Any]) -> EarlierDrill:
    """The drill being reported, as its own history entry."""
    d = from_record(doc, str(doc["host"]), own=True)
    if d is None:
        raise ValueError(f"not a drill document: started {doc.get('started')!r}")
    return d


def _rto(d: EarlierDrill) -> str:
    return "-" if d.rto_seconds is None else f"{d.rto_seconds:.1f}"


def _rpo(d: EarlierDrill) -> str:
    return "-" if d.rpo_seconds is None else f"{d.rpo_seconds / 3600:.2f}"


# -- Markdown --------------------------------------------------------------------------


def history_markdown(doc: Mapping[str, Any], earlier: Sequence[EarlierDrill]) -> list[str]:
    """Given this drill's document and the earlier drills (oldest first), return
    the lines of the Markdown section comparing their RTO and RPO, this drill last."""
    out = ["## Earlier drills", ""]
    if not earlier:
        return [*out, NONE_YET]
    out += ["| drill started | result | RTO s | RPO h | snapshot |", "|---|---|---|---|---|"]
    rows = [(d, "") for d in earlier] + [(this_drill(doc), " (this drill)")]
    for d, mark in rows:
        result = "passed" if d.passed else "FAILED"
        out.append(f"| {d.started}{mark} | {result} | {_rto(d)} | {_rpo(d)} | `{d.snapshot}` |")
    return out


# -- HTML --------------------------------------------------------------------------------

#: the bar chart's geometry (px): a slot per drill, the plot's height, margins
SLOT, PLOT_H, TOP, BOTTOM, SIDE = 46, 110, 22, 34, 8
THIS_COLOR, EARLIER_COLOR, FAILED_COLOR = "#1565c0", "#90a4ae", "#c62828"


def bar_chart(title: str, bars: Sequence[tuple[EarlierDrill, float | None, str]]) -> str:
    """Given a title and, per drill (oldest first, this drill last), its value
    (None: no bar) and the label written above it, return one small SVG bar
    chart: this drill's bar in blue, earlier ones grey, a drill with no value a
    red cross, each dated below (yy-mm-dd) with the full time in its tooltip."""
    e = html.escape
    top = max((v for _, v, _ in bars if v is not None), default=0.0) or 1.0
    width = SIDE * 2 + SLOT * len(bars)
    height = TOP + PLOT_H + BOTTOM
    base = TOP + PLOT_H
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{e(title)}">',
        f"<title>{e(title)}</title>",
        f'<line x1="{SIDE}" y1="{base}" x2="{width - SIDE}" y2="{base}" stroke="#999"/>',
    ]
    for i, (d, value, label) in enumerate(bars):
        mid = SIDE + i * SLOT + SLOT / 2
        current = i == len(bars) - 1
        value_text = "" if value is None else f": {label}"
        tip = f"<title>{e(d.started)} {'passed' if d.passed else 'FAILED'}{e(value_text)}</title>"
        if value is None:
            parts.append(
                f'<text x="{mid:.1f}" y="{base - 4}" text-anchor="middle" font-size="14" '
                f'fill="{FAILED_COLOR}">{tip}&#x2717;</text>'
            )
        else:
            h = max(PLOT_H * value / top, 1.0)
            color = THIS_COLOR if current else EARLIER_COLOR
            parts.append(
                f'<rect x="{mid - SLOT / 2 + 8:.1f}" y="{base - h:.1f}" width="{SLOT - 16}" '
                f'height="{h:.1f}" fill="{color}">{tip}</rect>'
                f'<text x="{mid:.1f}" y="{base - h - 4:.1f}" text-anchor="middle" '
                f'font-size="10">{e(label)}</text>'
            )
        bold = ' font-weight="bold"' if current else ""
        parts.append(
            f'<text x="{mid:.1f}" y="{base + 14}" text-anchor="middle" font-size="9"{bold}>'
            f"{e(d.started[2:10])}</text>"
        )
        if current:
            parts.append(
                f'<text x="{mid:.1f}" y="{base + 26}" text-anchor="middle" font-size="9"'
                f"{bold}>this</text>"
            )
    parts.append("</svg>")
    return "".join(parts)


def history_html(doc: Mapping[str, Any], earlier: Sequence[EarlierDrill]) -> str:
    """Given this drill's document and the earlier drills (oldest first), return
    the HTML section: two inline SVG bar charts, RTO and RPO, this drill last."""
    if not earlier:
        return f"<h2>Earlier drills</h2><p>{html.escape(NONE_YET)}</p>"
    drills = [*earlier, this_drill(doc)]
    rto = bar_chart(
        "RTO per drill, seconds (restore start to healthy)",
        [(d, d.rto_seconds, "failed" if d.rto_seconds is None else f"{_rto(d)}s") for d in drills],
    )
    rpo = bar_chart(
        "RPO per drill, hours (age of the snapshot used)",
        [(d, d.rpo_seconds, "-" if d.rpo_seconds is None else f"{_rpo(d)}h") for d in drills],
    )
    return (
        f"<h2>Earlier drills</h2><p>{len(earlier)} earlier drills on record, from "
        f"{html.escape(earlier[0].started)}; this drill is the last bar, in blue; a failed "
        "drill is a red cross.</p>"
        '<div style="display:flex;flex-wrap:wrap;gap:2em">'
        f'<figure style="margin:0"><figcaption>RTO (s)</figcaption>{rto}</figure>'
        f'<figure style="margin:0"><figcaption>RPO (h)</figcaption>{rpo}</figure></div>'
    )

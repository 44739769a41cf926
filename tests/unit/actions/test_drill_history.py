"""The drill report's comparison with earlier drills: a Markdown table and
inline SVG bar charts of RTO and RPO, read back from drills/<host>/*.json
through the (signed) storage."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from vkbackup.actions.drill import record, render_html, render_markdown, write_reports
from vkbackup.actions.drill_history import (
    EARLIER_COLOR,
    FAILED_COLOR,
    THIS_COLOR,
    EarlierDrill,
    drill_history,
    from_record,
    history_html,
    history_markdown,
)
from vkbackup.restore.session import RestoreReport
from vkbackup.signed_storage import SignedStorage
from vkbackup.signing import Trust
from vkbackup.storage.local import LocalStorage
from vkbackup.streams import BytesReader


def drill_doc(
    started: str, status: str, rto: float, rpo: float, snapshot: str, host: str = "prod"
) -> dict[str, Any]:
    rr = RestoreReport(snapshot, host, "root@10.0.0.9:22", "visualkit.toml", started)
    rr.status, rr.rto_seconds, rr.snapshot_age_seconds = status, rto, rpo
    return {
        "host": host,
        "target": rr.target,
        "started": started,
        "finished": started,
        "status": status,
        "error": None if status == "ok" else "step health failed: caddy down",
        "rpo_seconds": rpo,
        "rto_seconds": rto,
        "restore": rr.to_json(),
        "warnings": [],
        "teardown": [],
    }


EARLIER = [
    drill_doc("2025-03-01T10:00:00Z", "ok", 41.0, 5 * 3600, "20250301T020000Z-aaaa"),
    drill_doc("2025-06-01T10:00:00Z", "failed", 12.0, 6 * 3600, "20250601T020000Z-bbbb"),
    drill_doc("2025-09-01T10:00:00Z", "ok", 44.5, 4.5 * 3600, "20250901T020000Z-cccc"),
]
THIS = drill_doc("2025-12-01T10:00:00Z", "ok", 95.25, 7.2 * 3600, "20251201T020000Z-dddd")


def earlier() -> list[EarlierDrill]:
    out = [from_record(d, "prod") for d in EARLIER]
    assert all(d is not None for d in out)
    return [d for d in out if d is not None]


def test_a_record_as_the_reports_show_it() -> None:
    ok, failed, _ = earlier()
    assert ok == EarlierDrill("2025-03-01T10:00:00Z", True, 41.0, 18000.0, "20250301T020000Z-aaaa")
    assert failed.rto_seconds is None and failed.rpo_seconds == 21600.0 and not failed.passed
    hostile = {**EARLIER[0], "rto_seconds": float("nan"), "restore": {"snapshot": "x|`<b>"}}
    d = from_record(hostile, "prod")
    assert d is not None and d.rto_seconds is None and d.snapshot == "?"
    assert from_record(EARLIER[0], "other") is None
    assert from_record({**EARLIER[0], "started": "yesterday"}, "prod") is None
    assert from_record({**EARLIER[0], "started": "2099-01-01T00:00:00Z"}, "prod") is None


def test_markdown_table_with_three_earlier_drills() -> None:
    assert history_markdown(THIS, earlier()) == [
        "## Earlier drills",
        "",
        "| drill started | result | RTO s | RPO h | snapshot |",
        "|---|---|---|---|---|",
        "| 2025-03-01T10:00:00Z | passed | 41.0 | 5.00 | `20250301T020000Z-aaaa` |",
        "| 2025-06-01T10:00:00Z | FAILED | - | 6.00 | `20250601T020000Z-bbbb` |",
        "| 2025-09-01T10:00:00Z | passed | 44.5 | 4.50 | `20250901T020000Z-cccc` |",
        "| 2025-12-01T10:00:00Z (this drill) | passed | 95.2 | 7.20 | `20251201T020000Z-dddd` |",
    ]
    md = render_markdown(THIS, earlier())
    assert md.endswith("| 95.2 | 7.20 | `20251201T020000Z-dddd` |\n")
    assert "## Earlier drills" in md and md.index("## Verified") < md.index("## Earlier drills")


def test_html_has_two_inline_svg_charts_this_drill_last_in_blue() -> None:
    section = history_html(THIS, earlier())
    charts = re.findall(r"<svg .*?</svg>", section)
    assert len(charts) == 2
    rto, rpo = charts
    assert 'aria-label="RTO per drill, seconds (restore start to healthy)"' in rto
    # RTO: two earlier bars, a red cross for the failed drill, this drill's bar last
    assert re.findall(r'fill="(#[0-9a-f]{6})"', rto) == [
        EARLIER_COLOR,
        FAILED_COLOR,
        EARLIER_COLOR,
        THIS_COLOR,
    ]
    assert [m for m in re.findall(r">([0-9.]+s|failed)<", rto)] == ["41.0s", "44.5s", "95.2s"]
    heights = [float(h) for h in re.findall(r'<rect [^>]*height="([0-9.]+)"', rto)]
    assert heights[-1] == max(heights) == 110.0  # the slowest recovery is the tallest bar
    assert heights[0] == pytest.approx(110 * 41.0 / 95.25, abs=0.1)
    # RPO: the failed drill still has its snapshot's age
    assert re.findall(r">([0-9.]+h)<", rpo) == ["5.00h", "6.00h", "4.50h", "7.20h"]
    assert rpo.count("<rect") == 4
    # dates below the bars, this drill marked
    assert re.findall(r">(\d\d-\d\d-\d\d)<", rto) == [
        "25-03-01",
        "25-06-01",
        "25-09-01",
        "25-12-01",
    ]
    assert ">this<" in rto
    page = render_html(THIS, earlier())
    assert section in page
    assert "<script" not in page and "src=" not in page and "href=" not in page
    assert page.count("http") == page.count('xmlns="http://www.w3.org/2000/svg"')


def test_no_earlier_drill_says_so() -> None:
    assert history_markdown(THIS, []) == [
        "## Earlier drills",
        "",
        "None on record: this is the first drill of this host.",
    ]
    assert "<svg" not in history_html(THIS, [])
    assert "None on record: this is the first drill of this host." in render_html(THIS)


def test_drill_history_reads_signed_records_oldest_first(tmp_path: Path) -> None:
    raw = LocalStorage(tmp_path / "store")
    k = Ed25519PrivateKey.generate()
    store = SignedStorage(raw, Trust(key=k, trusted=(k.public_key(),)))
    for doc in EARLIER:
        record(store, doc)
    # unsigned (forged), future-dated, another host's, not JSON: all left out
    forged = drill_doc("2025-10-01T10:00:00Z", "ok", 1.0, 1.0, "20251001T020000Z-eeee")
    raw.put("drills/prod/20251001T100000Z.json", BytesReader(json.dumps(forged).encode()))
    future = datetime.now(UTC) + timedelta(days=400)
    ahead = drill_doc(future.strftime("%Y-%m-%dT%H:%M:%SZ"), "ok", 1.0, 1.0, "x")
    record(store, ahead)
    record(store, {**EARLIER[0], "host": "other"})
    store.put("drills/prod/20251101T000000Z.json", BytesReader(b"not json"))
    assert drill_history(store, "prod") == earlier()
    assert drill_history(store, "prod", limit=2) == earlier()[1:]
    assert drill_history(store, "nobody") == []


def test_write_reports_carries_the_history_into_both_reports(tmp_path: Path) -> None:
    md, js, page = write_reports(THIS, tmp_path / "r", earlier())
    assert "| 2025-06-01T10:00:00Z | FAILED | - | 6.00 |" in md.read_text()
    assert page.read_text().count("<svg ") == 2
    assert json.loads(js.read_text()) == THIS  # the JSON report is the drill's own record


def test_timeline_bars_start_where_each_step_started() -> None:
    from vkbackup.actions.drill import step_spans

    # steps side by side: the recorded starts
    side = [{"started": 0.0, "seconds": 1.0}, {"started": 1.0, "seconds": 6.0},
            {"started": 1.2, "seconds": 2.0}, {"started": 7.0, "seconds": 1.5}]  # fmt: skip
    assert step_spans(side) == [(0.0, 1.0), (1.0, 6.0), (1.2, 2.0), (7.0, 1.5)]
    # an older report (no starts recorded): one after the other
    old = [{"seconds": 1.0}, {"seconds": 2.5}, {"seconds": 0.5}]
    assert step_spans(old) == [(0.0, 1.0), (1.0, 2.5), (3.5, 0.5)]

"""Names printed to a terminal are sanitised (issue 16, finding 8): `printable`
itself, the list and show text forms, and the real `show` command reading a
forged manifest. --json stays exact."""

from __future__ import annotations

import json
import subprocess
import sys
import unicodedata
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.unit.actions.builders import SnapshotBuilder
from vkbackup import layout
from vkbackup.actions.list_show import ShowResult, SnapshotRow, format_list, format_show
from vkbackup.crypto import generate_identity
from vkbackup.manifest import encode
from vkbackup.storage.local import LocalStorage
from vkbackup.streams import BytesReader
from vkbackup.textsafe import printable
from vkbackup.verify_records import VerifyRecord

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 5, 1, 2, 15, tzinfo=UTC)
# clear the screen, set the window title, overwrite the line, a C1 CSI, a fake line
EVIL = "pg\x1b[2J\x1b]0;owned\x07\rok\x9b31m\nFAKE: all verified\x7f\u202eevil"
UNSAFE = ("\x1b", "\r", "\n", "\x07", "\x9b", "\x7f", "\u202e")


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain name-1.2_x", "plain name-1.2_x"),
        ("caf\u00e9 \U0001f600 \u6f22\u5b57", "caf\u00e9 \U0001f600 \u6f22\u5b57"),
        ("a\x1b[31mb", "a\\x1b[31mb"),
        ("a\rb\nc\td", "a\\rb\\nc\\td"),
        ("\x00\x7f\x85\x9b", "\\x00\\x7f\\x85\\x9b"),
        ("x\u2028y\u2029z\u202ew\u2066", "x\\u2028y\\u2029z\\u202ew\\u2066"),
        ("bad\udcff byte", "bad\\xff byte"),  # surrogateescape: the byte it stands for
        ("zwj \u200d kept", "zwj \u200d kept"),  # format characters that steer nothing
    ],
)
def test_printable(text: str, shown: str) -> None:
    assert printable(text) == shown
    assert printable(shown) == shown  # idempotent: a second pass changes nothing


def test_printable_leaves_nothing_that_steers_a_terminal() -> None:
    out = printable("".join(chr(c) for c in range(0x00, 0x100)) + EVIL + "\ud800")
    assert not any(ch in out for ch in UNSAFE)
    kinds = {unicodedata.category(ch) for ch in out}
    assert not kinds & {"Cc", "Cs", "Zl", "Zp"}
    out.encode("utf-8")  # no lone surrogate left: printing it cannot raise


def test_list_and_show_lines_are_sanitised() -> None:
    bad = VerifyRecord("box", "20260501T021500Z-abcd", EVIL, True, "full", 0)
    row = SnapshotRow(host="box", id=bad.id, time=T0, status="unreadable", error=EVIL,
                      last_verified=bad)  # fmt: skip
    lines = format_list([row], T0)
    text = "\n".join(lines)
    assert not any(ch in text for ch in UNSAFE if ch != "\n")
    assert all(printable(line) == line for line in lines)
    assert "pg\\x1b[2J\\x1b]0;owned\\x07\\rok\\x9b31m\\nFAKE" in text
    assert not any(line.startswith("FAKE") for line in lines)


def cfg_file(tmp_path: Path, recipient: str) -> Path:
    p = tmp_path / "vkbackup.toml"
    p.write_text(
        f'[storage]\ntype = "local"\npath = "{tmp_path / "store"}"\n\n'
        f'[encryption]\nrecipients = ["{recipient}"]\n\n'
        '[hosts.box]\naddress = "127.0.0.1"\n\n[[hosts.box.sources]]\n'
        'type = "files"\nname = "etc"\npaths = ["/etc/hostname"]\n'
    )
    return p


def vkbackup(*args: str, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "vkbackup", *args],
        capture_output=True,
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "HOME": str(cwd), "PYTHONPATH": str(REPO)},
        timeout=60,
    )


def test_show_command_prints_forged_names_escaped_and_json_exact(tmp_path: Path) -> None:
    """The real printer: `vkbackup show` reading a manifest whose public part was
    edited in the bucket (tool_version and finished are free text there)."""
    ident = generate_identity()
    storage = LocalStorage(tmp_path / "store")
    m = SnapshotBuilder(storage, "box", [ident.recipient()]).snapshot(T0, new={"etc": b"x"})
    forged = replace(m, tool_version=EVIL, finished=EVIL, private={})
    storage.put(layout.manifest_key("box", m.id), BytesReader(encode(forged, [ident.recipient()])))
    cfg = str(cfg_file(tmp_path, str(ident.recipient())))
    r = vkbackup("show", "--public", "latest", "--config", cfg, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert not any(ch in out for ch in UNSAFE if ch != "\n")
    assert out.count("pg\\x1b[2J\\x1b]0;owned\\x07\\rok\\x9b31m\\nFAKE") == 2
    assert not any(line.startswith("FAKE") for line in out.splitlines())
    js = vkbackup("show", "--public", "latest", "--json", "--config", cfg, cwd=tmp_path)
    assert js.returncode == 0, js.stderr
    doc = json.loads(js.stdout)
    assert doc["tool_version"] == EVIL and doc["finished"] == EVIL


def test_show_private_names_are_sanitised(tmp_path: Path) -> None:
    ident = generate_identity()
    storage = LocalStorage(tmp_path / "store")
    m = SnapshotBuilder(storage, "box", [ident.recipient()]).snapshot(T0, new={"etc": b"x"})
    private = {
        "host": {"user": "root", "address": EVIL, "port": 22},
        "facts": {"os_release": {"PRETTY_NAME": EVIL}, "compose_projects": {EVIL: {}}},
        "sources": {
            "etc": {"type": "files", "meta": {"files": [{"path": f"/srv/{EVIL}", "size": 1}]}},
            "db": {
                "type": "postgres",
                "meta": {"container": EVIL, "database": EVIL, "row_counts": {EVIL: 3}},
            },
            "vol": {"type": "docker-volume", "meta": {"volume": EVIL, "used_by": [EVIL]}},
            "img": {"type": "docker-image", "meta": {"images": [{"ref": EVIL, "id": EVIL}]}},
        },
    }
    result = ShowResult(m, None, private, None)
    lines = format_show(result, T0)
    text = "\n".join(lines)
    assert not any(ch in text for ch in UNSAFE if ch != "\n")
    assert text.count("pg\\x1b[2J") >= 8
    assert result.to_json(T0)["private"]["sources"]["vol"]["meta"]["volume"] == EVIL

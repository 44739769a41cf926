"""Issue 15 "Done when": `vkbackup restore latest --to fresh` rebuilds the whole VisualKit
server on a bare Debian 13 host (no Docker, no Caddy, no UFW) until users can get in,
against the lab's real systemd, Docker Engine, Caddy, UFW and PostgreSQL.

Compared with prod after the restore: every public name answers through Caddy over
HTTPS verified against the restored CA, with the same certificate serials; `ufw status
verbose`; `systemctl is-enabled` of caddy, docker and every unit enabled on prod; the
container names and each compose project's services. Then: a restore killed while it
installs packages completes when run again, and a snapshot with one wrong `.env`
value fails the health step naming the app.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from tests.lab.api import Lab
from tests.lab.prod import CADDY_CA

REPO = Path(__file__).resolve().parents[2]
PLAYBOOK = REPO / "restore-playbooks" / "visualkit.toml"
NAMES = ("api", "agent", "janus", "cdn", "support")


def restore(lab: Lab, *extra: str, playbook: Path = PLAYBOOK) -> subprocess.CompletedProcess[str]:
    return lab.vkbackup(
        "restore", "latest", "--host", "prod", "--to", "fresh", "--playbook", str(playbook),
        "--yes", "--json", *extra,
    )  # fmt: skip


def served_serials(lab: Lab, host: str) -> dict[str, int]:
    """Name -> serial number of the certificate Caddy serves for it on *host*, fetched
    with curl on that host (name resolved to itself, verified against Caddy's CA)."""
    out: dict[str, int] = {}
    for n in NAMES:
        name = f"{n}.visualkit.live"
        pem = lab.ssh(
            host,
            f"curl -sS -o /dev/null --cacert {CADDY_CA} --resolve {name}:443:127.0.0.1 "
            f"-w '%{{certs}}' https://{name}/",
        ).stdout
        first = pem[: pem.index("-----END CERTIFICATE-----") + 25]
        out[name] = x509.load_pem_x509_certificate(first.encode()).serial_number
    return out


def enabled_units(lab: Lab, host: str) -> set[str]:
    out = lab.ssh(host, "systemctl list-unit-files --state=enabled --no-legend --no-pager").stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def is_enabled(lab: Lab, host: str, units: list[str]) -> dict[str, str]:
    out = lab.ssh(host, "systemctl is-enabled " + " ".join(units) + " || true").stdout
    return dict(zip(units, out.split(), strict=True))


def compose_services(lab: Lab, host: str) -> dict[str, str]:
    """Container name -> "project/service" of every running compose container."""
    fmt = (
        '{{.Names}} {{.Label "com.docker.compose.project"}}/{{.Label "com.docker.compose.service"}}'
    )
    out = lab.ssh(host, f"docker ps --format '{fmt}'").stdout
    return dict(line.split(" ", 1) for line in out.splitlines() if line.strip())


@pytest.fixture(scope="module")
def restored(lab: Lab) -> dict[str, Any]:
    """A bare fresh host, one snapshot of prod, one restore onto fresh."""
    lab.reset_fresh()
    bare = lab.ssh("fresh", "command -v docker caddy ufw || true").stdout.strip()
    assert bare == "", f"fresh is not bare: {bare}"
    snap = lab.vkbackup("snapshot", "prod", "--json")
    assert snap.returncode == 0, snap.stderr
    cp = restore(lab)
    assert cp.returncode == 0, cp.stdout[-3000:] + cp.stderr[-3000:]
    report: dict[str, Any] = json.loads(cp.stdout)
    return report


def test_every_public_name_answers_through_caddy_over_verified_https(
    lab: Lab, restored: dict[str, Any]
) -> None:
    health = lab.health("fresh")  # curl on fresh: --cacert Caddy's CA, never -k
    https = {u: c for u, c in health.items() if u.startswith("https://")}
    assert sorted(u.split("/")[2] for u in https) == sorted(f"{n}.visualkit.live" for n in NAMES)
    assert all(code == 200 for code in health.values()), health
    passed = [v for v in restored["verified"] if v.startswith(tuple(f"{n}." for n in NAMES))]
    assert len(passed) == len(NAMES), restored["verified"]


def test_certificates_are_prods_not_newly_issued(lab: Lab, restored: dict[str, Any]) -> None:
    assert served_serials(lab, "fresh") == served_serials(lab, "prod")
    ca = f"sha256sum {CADDY_CA}"  # the same local CA, so nothing was re-issued
    assert lab.ssh("fresh", ca).stdout == lab.ssh("prod", ca).stdout


def test_firewall_units_and_containers_equal_prods(lab: Lab, restored: dict[str, Any]) -> None:
    assert (
        lab.ssh("fresh", "ufw status verbose").stdout
        == lab.ssh("prod", "ufw status verbose").stdout
    )
    units = sorted(enabled_units(lab, "prod") | {"caddy.service", "docker.service"})
    assert is_enabled(lab, "fresh", units) == is_enabled(lab, "prod", units)
    assert compose_services(lab, "fresh") == compose_services(lab, "prod")
    assert lab.ssh("fresh", "systemctl is-active caddy docker").stdout.split() == [
        "active",
        "active",
    ]
    # each step started after the steps it waits for had ended: Docker after its
    # packages, the images after Docker, health after the firewall after every start
    steps = {s["id"]: s for s in restored["steps"]}

    def end(i: str) -> float:
        return float(steps[i]["started"]) + float(steps[i]["seconds"])

    def begin(i: str) -> float:
        return float(steps[i]["started"])

    assert begin("ensure-docker") >= end("host-packages:host:docker")
    assert begin("ensure-docker") >= end("host-files:host:docker")  # containerd's config
    assert begin("image:images") >= end("ensure-docker")
    starts = [i for i in steps if i.startswith("start:")]
    assert begin("start:chatwoot:postgres") >= end("image:images")
    assert all(begin(i) >= end("database:chatwoot-db") for i in starts if "postgres" not in i)
    assert begin("host-firewall:host") >= max(end(i) for i in steps if i not in
                                               ("host-firewall:host", "health", "dns"))  # fmt: skip
    assert begin("health") >= end("host-firewall:host")
    # and the rest of the host's packages installed while the images streamed in
    # (the bare host lacks Caddy and UFW: that install takes seconds, not instants)
    assert begin("image:images") < end("host-packages:host")


def test_rerun_changes_nothing(lab: Lab, restored: dict[str, Any]) -> None:
    before = (served_serials(lab, "fresh"), compose_services(lab, "fresh"))
    cp = restore(lab)
    assert cp.returncode == 0, cp.stderr[-2000:]
    steps = json.loads(cp.stdout)["steps"]
    for s in steps:
        if s["kind"] not in ("preflight", "ensure-docker", "health", "dns"):
            assert s["status"] == "already-done", s
    assert (served_serials(lab, "fresh"), compose_services(lab, "fresh")) == before


def test_restore_killed_while_installing_packages_completes_on_rerun(lab: Lab) -> None:
    lab.reset_fresh()
    assert lab.vkbackup("snapshot", "prod").returncode == 0
    argv = [
        sys.executable, "-m", "vkbackup", "--config", str(lab.config_path), "restore", "latest",
        "--host", "prod", "--to", "fresh", "--playbook", str(PLAYBOOK), "--yes",
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen = False
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        # dpkg unpacking or configuring a package: the middle of the installation
        cp = lab.ssh("fresh", "pgrep -x dpkg >/dev/null && echo dpkg || true", check=False)
        if "dpkg" in cp.stdout:
            seen = True
            break
        time.sleep(0.1)
    assert seen, "never saw dpkg run (the restore finished or failed first)"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(2)
    cp = restore(lab)
    assert cp.returncode == 0, cp.stdout[-3000:] + cp.stderr[-3000:]
    report = json.loads(cp.stdout)
    packages = [s for s in report["steps"] if s["kind"] == "host-packages"]
    # the killed one had not finished: run again, not skipped
    assert len(packages) == 2 and "done" in {s["status"] for s in packages}, packages
    assert {s["status"] for s in packages} <= {"done", "already-done"}, packages
    audit = lab.ssh("fresh", "dpkg --audit; dpkg -l docker.io caddy ufw | grep -c '^ii'").stdout
    assert audit.strip() == "3", audit
    assert all(code == 200 for code in lab.health("fresh").values()), lab.health("fresh")


def test_a_wrong_env_value_in_the_snapshot_fails_health_naming_the_app(
    lab: Lab, tmp_path: Path
) -> None:
    """Chatwoot's .env in the snapshot has another POSTGRES_PASSWORD than the database
    it restores: the restore fails at health, naming chatwoot (prod keeps running)."""
    env = "/opt/chatwoot/.env"
    wrong = "s/^POSTGRES_PASSWORD=.*/POSTGRES_PASSWORD=not-the-password/"
    lab.ssh("prod", f"cp -p {env} {env}.vktest && sed -i '{wrong}' {env}")
    try:
        assert lab.vkbackup("snapshot", "prod").returncode == 0
    finally:
        lab.ssh("prod", f"mv {env}.vktest {env}")
    book = tmp_path / "quick.toml"
    book.write_text(PLAYBOOK.read_text().replace("health_timeout = 180", "health_timeout = 40"))
    lab.reset_fresh()
    cp = restore(lab, playbook=book)
    assert cp.returncode == 1, cp.stdout[-2000:]
    report = json.loads(cp.stdout)
    failed = [s for s in report["steps"] if s["status"] == "failed"]
    assert [s["kind"] for s in failed] == ["health"]
    assert "chatwoot" in failed[0]["detail"], failed[0]["detail"]
    # every data step passed: the secret is wrong, not the data
    assert all(s["status"] == "done" for s in report["steps"] if s["kind"] == "database")
    # a good snapshot again, for the tests after this one
    assert lab.vkbackup("snapshot", "prod").returncode == 0

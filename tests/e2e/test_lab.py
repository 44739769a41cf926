"""The lab itself works (issue 5, "Done when"): hosts reachable over SSH with strict host
keys, prod runs VisualKit's containers with healthy endpoints and the seeded database,
fresh has an empty engine, S3 answers boto3, and a wrong host key is refused."""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

import paramiko
import pytest

from tests.lab.api import Lab
from tests.lab.database import ROLES

pytestmark = pytest.mark.e2e


# -- SSH --------------------------------------------------------------------------------
@pytest.mark.parametrize("host", ["prod", "fresh"])
def test_openssh_reaches_host_with_strict_host_key_checking(lab: Lab, host: str) -> None:
    cp = lab.ssh(host, "hostname; id -u")
    hostname, uid = cp.stdout.split()
    assert hostname == lab.hosts[host].hostname
    assert uid == "0"
    if host == "prod":  # fresh is a bare server until a restore installs Docker on it
        engine = lab.ssh(host, "docker info --format '{{.ServerVersion}}'").stdout.strip()
        assert engine  # the host's own Docker Engine answers


@pytest.mark.parametrize("host", ["prod", "fresh"])
def test_paramiko_reaches_host_with_reject_policy(lab: Lab, host: str) -> None:
    h = lab.hosts[host]
    client = paramiko.SSHClient()
    client.load_host_keys(str(lab.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(
            h.address,
            port=h.port,
            username=h.user,
            key_filename=str(lab.key_file),
            look_for_keys=False,
            allow_agent=False,
            timeout=10,
        )
        _, stdout, _ = client.exec_command("hostname")
        assert stdout.read().decode().strip() == h.hostname
    finally:
        client.close()


def test_wrong_host_key_is_refused(lab: Lab, tmp_path: Path) -> None:
    impostor = tmp_path / "impostor"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(impostor)], check=True)
    keytype, key = impostor.with_suffix(".pub").read_text().split()[:2]
    bad = tmp_path / "known_hosts"
    bad.write_text(f"[127.0.0.1]:{lab.hosts['prod'].port} {keytype} {key}\n")
    cp = lab.ssh("prod", "true", check=False, known_hosts=bad)
    assert cp.returncode == 255
    assert "Host key verification failed" in cp.stderr or "IDENTIFICATION HAS CHANGED" in cp.stderr

    client = paramiko.SSHClient()
    client.load_host_keys(str(bad))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    with pytest.raises(paramiko.BadHostKeyException):
        client.connect(
            "127.0.0.1",
            port=lab.hosts["prod"].port,
            username="root",
            key_filename=str(lab.key_file),
            look_for_keys=False,
            allow_agent=False,
            timeout=10,
        )
    client.close()


def test_unknown_host_is_refused(lab: Lab, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    cp = lab.ssh("fresh", "true", check=False, known_hosts=empty)
    assert cp.returncode == 255
    assert "Host key verification failed" in cp.stderr


def test_password_login_is_refused(lab: Lab) -> None:
    argv = lab.ssh_argv("prod")
    argv[argv.index("IdentitiesOnly=yes")] = "PubkeyAuthentication=no"
    cp = subprocess.run([*argv, "true"], capture_output=True, text=True, timeout=30, check=False)
    assert cp.returncode == 255
    assert "Permission denied" in cp.stderr


def test_known_hosts_pins_every_host_key(lab: Lab) -> None:
    lines = lab.known_hosts.read_text().splitlines()
    for h in lab.hosts.values():
        mine = [line for line in lines if line.startswith(f"[127.0.0.1]:{h.port} ")]
        assert {line.split()[1] for line in mine} >= {"ssh-ed25519", "ssh-rsa"}


# -- prod ------------------------------------------------------------------------------
def test_prod_runs_every_container_with_compose_labels(lab: Lab) -> None:
    fmt = (
        '{{.Name}}|{{.State.Status}}|{{index .Config.Labels "com.docker.compose.project"}}'
        '|{{index .Config.Labels "com.docker.compose.project.working_dir"}}'
        '|{{index .Config.Labels "com.docker.compose.project.config_files"}}'
        '|{{index .Config.Labels "com.docker.compose.service"}}'
    )
    names = " ".join(lab.containers)
    out = lab.ssh("prod", f"docker inspect --format '{fmt}' {names}").stdout
    seen = {}
    for line in out.splitlines():
        name, status, project, workdir, files, service = line.split("|")
        seen[name.lstrip("/")] = (status, project, workdir, files, service)
    assert set(seen) == set(lab.containers)
    for name, (status, project, workdir, files, service) in seen.items():
        assert status == "running", name
        assert project == lab.containers[name], name
        assert workdir == f"/opt/{project}", name
        assert files and service, name


def test_prod_health_endpoints_answer(lab: Lab) -> None:
    codes = lab.health("prod")
    assert codes, "no health URLs checked"
    assert {url: code for url, code in codes.items() if code != 200} == {}


def test_prod_database_has_the_seeded_rows(lab: Lab) -> None:
    assert lab.table_row_counts("prod") == lab.row_counts
    assert lab.row_counts["public.messages"] > 1000


def test_prod_database_has_what_a_careless_dump_loses(lab: Lab) -> None:
    q = lab.psql
    roles = q("prod", "SELECT rolname FROM pg_roles WHERE rolname LIKE 'chatwoot%' ORDER BY 1")
    assert roles.split() == sorted(ROLES)
    assert q("prod", "SELECT rolsuper FROM pg_roles WHERE rolname = 'chatwoot_app'") == "f"
    assert q("prod", "SELECT has_table_privilege('chatwoot_app', 'messages', 'INSERT')") == "t"
    schemas = q("prod", "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg_%'").split()
    assert {"public", "analytics", "audit", "reporting"} <= set(schemas)
    assert q("prod", "SELECT count(*) FROM pg_type WHERE typtype = 'e'") == "2"
    assert q("prod", "SELECT count(*) FROM pg_matviews") == "1"
    assert q("prod", "SELECT count(*) FROM pg_views WHERE schemaname = 'public'") == "1"
    assert q("prod", "SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal") == "1"
    assert q("prod", "SELECT count(*) FROM pg_description") != "0"
    assert q("prod", "SELECT last_value, is_called FROM invoice_number_seq") == "42|f"
    assert q("prod", "SELECT count(*) FROM pg_extension WHERE extname IN ('pg_trgm', 'pgcrypto')")
    assert q("prod", "SELECT count(*) FROM attachments WHERE thumbnail IS NOT NULL") != "0"
    assert q("prod", "SELECT tableowner FROM pg_tables WHERE tablename = 'saved_reports'") == (
        "chatwoot_app"
    )


def test_pg_dump_through_docker_exec(lab: Lab) -> None:
    cp = lab.ssh_bytes(
        "prod",
        "bash -o pipefail -c 'docker exec chatwoot-postgres-1 pg_dump -U postgres -Fc -Z1 "
        f"{lab.database} | wc -c'",
        timeout=600,
    )
    assert int(cp.stdout) > 100_000


def test_prod_layout_files_and_secrets(lab: Lab) -> None:
    caddyfile = lab.ssh("prod", "cat /etc/caddy/Caddyfile").stdout
    for sub in ("api", "agent", "janus", "cdn", "support"):
        assert f"{sub}.visualkit.live" in caddyfile
    for project in ("platform-api", "vk-agent", "chatwoot", "janus"):
        lab.ssh("prod", f"test -f /opt/{project}/docker-compose.yml")
    assert lab.ssh("prod", "stat -c '%a' /opt/janus/config/janus.jcfg").stdout.strip() == "640"
    for project, secrets in lab.secrets.items():
        cp = lab.ssh("prod", f"stat -c '%a %U' /opt/{project}/.env; cat /opt/{project}/.env")
        first, _, body = cp.stdout.partition("\n")
        assert first == "600 root"
        for value in secrets.values():
            assert value in body
    assert all(len(v) >= 20 for v in lab.secret_values)


def test_prod_images_are_built_locally(lab: Lab) -> None:
    out = lab.ssh("prod", "docker images --format '{{.Repository}}:{{.Tag}}'").stdout.split()
    assert set(lab.images) <= set(out)
    digests = lab.ssh(
        "prod", "docker inspect --format '{{len .RepoDigests}}' " + " ".join(lab.images)
    ).stdout.split()
    assert set(digests) == {"0"}  # never pulled from a registry


def test_prod_volumes_hold_the_nasty_cases(lab: Lab) -> None:
    vols = lab.ssh("prod", "docker volume ls -q").stdout.split()
    assert set(lab.volumes) <= set(vols)
    listing = lab.ssh_bytes(
        "prod",
        "docker exec chatwoot-chatwoot-1 find /app/storage -printf '%y %m %U %n %s %b %P\\0'",
    ).stdout
    entries = []
    for raw in listing.split(b"\0"):
        if raw:
            kind, mode, uid, nlink, size, blocks, path = raw.split(b" ", 6)
            entries.append((kind, int(mode, 8), int(uid), int(nlink), int(size), int(blocks), path))
    kinds = {e[0] for e in entries}
    assert {b"f", b"d", b"l"} <= kinds
    paths = {e[6]: e for e in entries}
    assert paths[b"links/dangling-link"][0] == b"l"
    assert paths[b"links/original.txt"][3] == 3  # hard links
    sparse = paths[b"sparse/disk.img"]
    assert sparse[4] == 64 * 1024 * 1024 and sparse[5] * 512 < 1024 * 1024
    assert paths[b"tmp-sticky"][1] & stat.S_ISVTX
    assert paths[b"private"][1] == 0o700 and paths[b"private/secret-note.txt"][1] == 0o600
    assert {0, 1000, 999, 65534, 12345} <= {e[2] for e in entries}
    assert b"odd names/line\nbreak.txt" in paths
    assert b"odd names/latin1-caf\xe9.txt" in paths
    assert "odd names/日本語のファイル.txt".encode() in paths
    assert any(e[0] == b"d" and e[6].startswith(b"empty-nested") for e in entries)
    large = [e for e in entries if e[6].startswith(b"large/") and e[0] == b"f"]
    assert len(large) == 3 and min(e[4] for e in large) >= 1024 * 1024
    assert sum(1 for e in entries if e[0] == b"f") > 300


def test_prod_redis_requires_its_password(lab: Lab) -> None:
    pw = lab.secrets["chatwoot"]["REDIS_PASSWORD"]
    noauth = lab.ssh("prod", "docker exec chatwoot-redis-1 redis-cli DBSIZE", check=False)
    assert "NOAUTH" in noauth.stdout + noauth.stderr
    size = lab.ssh(
        "prod",
        "docker exec -i chatwoot-redis-1 sh -c 'REDISCLI_AUTH=$(cat) redis-cli DBSIZE'",
        input=pw,
    ).stdout.strip()
    assert int(size) > 10


def test_prod_is_a_systemd_server_with_caddy_ufw_and_compose_v2(lab: Lab) -> None:
    """prod runs as the VPS does: systemd as PID 1, Caddy and Docker as its services,
    UFW enabled with VisualKit's rules, Compose v2 naming Chatwoot's containers."""
    out = lab.ssh(
        "prod",
        "ps -o comm= -p 1; systemctl is-active caddy docker ssh; systemctl is-enabled caddy; "
        "docker compose version --short; . /etc/os-release; echo $VERSION_CODENAME",
    ).stdout.split()
    assert out == ["systemd", "active", "active", "active", "enabled", out[5], "trixie"]
    assert out[5].startswith("2.")
    ufw = lab.ssh("prod", "ufw status verbose").stdout
    assert "Status: active" in ufw
    for rule in ("22/tcp", "80/tcp", "443/tcp", "5005/udp", "10000:60000/udp"):
        assert rule in ufw
    names = lab.running_containers("prod")
    for name in ("chatwoot-chatwoot-1", "chatwoot-chatwoot-sidekiq-1", "chatwoot-chatwoot-proxy-1"):
        assert name in names
    certs = lab.ssh(
        "prod", "ls /var/lib/caddy/.local/share/caddy/certificates/local/"
    ).stdout.split()
    assert sorted(certs) == sorted(f"{n}.visualkit.live" for n in lab.public_names)


def test_prod_health_needs_the_right_secrets(lab: Lab) -> None:
    """Chatwoot's /health logs in to PostgreSQL and Redis with its .env: a wrong
    password fails it, naming what failed."""
    bad = lab.ssh(
        "prod",
        "docker exec -e REDIS_PASSWORD=wrong -e POSTGRES_PASSWORD=wrong chatwoot-chatwoot-1 "
        "python3 -c 'import sys; sys.path.insert(0, \"/app\"); import app; print(app.problems())'",
    ).stdout
    assert "postgres login as postgres@postgres" in bad and "redis login failed" in bad
    assert all(code == 200 for code in lab.health("prod").values()), lab.health("prod")


# -- fresh -----------------------------------------------------------------------------
def test_fresh_is_a_bare_server(fresh_lab: Lab) -> None:
    """A new server: Debian 13 with systemd and sshd, no Docker, no Caddy, no UFW; its
    packages come from the lab's mirror."""
    out = fresh_lab.ssh(
        "fresh",
        "ps -o comm= -p 1; for x in docker dockerd caddy ufw docker-compose; do "
        "command -v $x >/dev/null && echo has-$x || echo no-$x; done; "
        "test -e /opt/chatwoot && echo opt || echo no-opt; "
        "test -e /etc/caddy && echo caddy || echo no-caddy",
    ).stdout.split()
    assert out == [
        "systemd", "no-docker", "no-dockerd", "no-caddy", "no-ufw", "no-docker-compose",
        "no-opt", "no-caddy",
    ]  # fmt: skip
    policy = fresh_lab.ssh("fresh", "apt-get update -qq && apt-cache policy caddy").stdout
    assert "vklab-mirror" in policy


def test_reset_fresh_wipes_and_keeps_host_key(lab: Lab) -> None:
    lab.ssh("fresh", "mkdir -p /opt/leftover /etc/caddy")
    seconds = lab.reset_fresh()
    assert seconds < 60
    out = lab.ssh("fresh", "ls /opt | wc -l; test -e /etc/caddy && echo caddy || echo no")
    assert out.stdout.split() == ["0", "no"]


# -- S3 and configs ----------------------------------------------------------------------
def test_s3_answers_boto3(lab: Lab) -> None:
    client = lab.s3_client()
    names = {b["Name"] for b in client.list_buckets()["Buckets"]}
    assert {lab.s3.bucket, lab.s3.locked_bucket} <= names
    key = "lab-selftest/hello.txt"
    client.put_object(Bucket=lab.s3.bucket, Key=key, Body=b"hello lab")
    try:
        assert client.get_object(Bucket=lab.s3.bucket, Key=key)["Body"].read() == b"hello lab"
    finally:
        client.delete_object(Bucket=lab.s3.bucket, Key=key)
    lock = client.get_object_lock_configuration(Bucket=lab.s3.locked_bucket)
    assert lock["ObjectLockConfiguration"]["ObjectLockEnabled"] == "Enabled"


def test_lab_configs_are_valid(lab: Lab) -> None:
    for s3 in (False, True):
        cp = lab.vkbackup("config", "check", "--json", s3=s3)
        assert cp.returncode == 0, cp.stderr
        doc = json.loads(cp.stdout)
        assert set(doc["hosts"]) == {"prod", "fresh"}
        assert len(doc["hosts"]["prod"]["sources"]) >= 7
    assert stat.S_IMODE(lab.s3_config_path.stat().st_mode) == 0o600
    assert lab.recipient.startswith("age1")

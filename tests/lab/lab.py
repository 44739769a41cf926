"""Bring the whole lab up, down, report on it, and reset its hosts.

The lab: `vklab-prod` (ssh 127.0.0.1:2222, VisualKit-like: Debian 13 with systemd,
Docker, Caddy and UFW), `vklab-fresh` (127.0.0.1:2223, a bare Debian 13 as a new
server comes: systemd and sshd only), `vklab-mirror` (the Debian mirror both use),
SeaweedFS S3 on 127.0.0.1:8333 with buckets `vkbackup` and `vkbackup-locked` (Object
Lock). State in <lab> ($VKBACKUP_LAB_DIR, default <repo>/.lab): keys, known_hosts,
configs, state.json, secrets.json.

Interface:
    up(scale=None) -> dict          idempotent; returns the state (also in state.json)
    down() -> None                  containers, their volumes, the network, S3 and its
                                    data, <lab> (except nothing: base images stay cached
                                    in the outer engine)
    status() -> dict                what runs, what answers (JSON-able)
    reset_fresh() -> float          recreate the fresh host empty; returns seconds
    reset_prod(scale=None) -> dict  recreate and reseed prod
    check_down() -> list[str]       what a `down` left behind (empty: clean)
    load_state(paths) -> dict | None
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.lab import database, hosts, images, mirror, prod, vkconfig
from tests.lab.paths import (
    BUCKET,
    HOSTS,
    LABEL,
    LOCKED_BUCKET,
    NETWORK,
    S3_PORT,
    LabPaths,
    lab_paths,
)
from tests.lab.sh import LabError, docker, ensure_dockerd, log, run

STATE_VERSION = 1
DEFAULT_SCALE = 1.0


def load_state(paths: LabPaths) -> dict[str, Any] | None:
    """Return the parsed state.json, or None when missing or unreadable."""
    try:
        data = json.loads(paths.state.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_json(path: Path, doc: object, mode: int = 0o600) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=2, sort_keys=True, ensure_ascii=False)
        f.write("\n")
    tmp.replace(path)


def _container_id(name: str) -> str | None:
    cp = docker("container", "inspect", "--format", "{{.Id}}", name, check=False)
    return cp.stdout.decode().strip() if cp.returncode == 0 else None


def _s3_module() -> Any:
    # imported lazily: another engineer owns tests/lab/s3.py
    from tests.lab import s3

    return s3


def _s3_answers(server: Any) -> bool:
    try:
        server.client().list_buckets()
    except Exception:
        return False
    return True


def _start_s3(paths: LabPaths) -> dict[str, Any]:
    s3 = _s3_module()
    server = s3.start(paths.s3_data, s3_port=S3_PORT)
    s3.ensure_bucket(server, BUCKET)
    s3.ensure_bucket(server, LOCKED_BUCKET, object_lock=True)
    return {
        "endpoint": server.endpoint,
        "access_key": server.access_key,
        "secret_key": server.secret_key,
        "region": server.region,
        "pid": server.pid,
        "data_dir": str(server.data_dir),
        "bucket": BUCKET,
        "locked_bucket": LOCKED_BUCKET,
    }


def _secret_values(
    paths: LabPaths, env: dict[str, dict[str, str]], s3: dict[str, Any]
) -> list[str]:
    """Every value that must never show up in logs, manifests or plaintext storage."""
    values = {v for project in env.values() for v in project.values()}
    values.add(str(s3["secret_key"]))
    for line in paths.identity.read_text().splitlines():
        if line.startswith("AGE-SECRET-KEY-"):
            values.add(line.strip())
    return sorted(values)


def _check_config(paths: LabPaths, config: Path) -> None:
    cp = run(
        [sys.executable, "-m", "vkbackup", "config", "check", "--config", str(config)],
        check=False,
        timeout=60,
    )
    if cp.returncode != 0:
        raise LabError(
            f"vkbackup rejects the lab config {config}:\n"
            f"{(cp.stderr or b'').decode()[-1500:]}{(cp.stdout or b'').decode()[-500:]}"
        )


def _prod_facts(state: dict[str, Any] | None) -> dict[str, Any] | None:
    if not state:
        return None
    facts = state.get("prod")
    return facts if isinstance(facts, dict) else None


def up(scale: float | None = None) -> dict[str, Any]:
    """Bring up whatever part of the lab is missing; return (and write) the state."""
    t0 = time.monotonic()
    paths = lab_paths()
    ensure_dockerd()
    paths.root.mkdir(parents=True, exist_ok=True)
    hosts.ensure_keys(paths)
    tags = images.ensure_images(paths.build, paths.logs, paths.cache)
    hosts.ensure_network()
    mirror.ensure(mirror.build(paths.cache / "debs-server", paths.cache / "mirror"), tags["app"])
    state = load_state(paths) or {}
    facts = _prod_facts(state)
    want = float(scale) if scale is not None else float((facts or {}).get("scale", DEFAULT_SCALE))

    spec = HOSTS["prod"]
    cid = _container_id(spec.container)
    secrets_doc: dict[str, Any] | None = None
    try:
        secrets_doc = json.loads(paths.secrets.read_text())
    except (OSError, ValueError):
        secrets_doc = None
    populated = (
        cid is not None
        and facts is not None
        and facts.get("container_id") == cid
        and facts.get("complete") is True
        and float(facts.get("scale", -1)) == want
        and secrets_doc is not None
    )
    if cid is not None and not populated:
        log("prod exists but is not the populated prod this lab recorded: recreating it")
        hosts.remove_host(spec)
    for host in HOSTS.values():
        created = hosts.ensure_host(host, tags[host.image], paths)
        if created and host.name == "prod":
            populated = False
    for host in HOSTS.values():
        hosts.wait_ready(host, paths)
    s3 = _start_s3(paths)

    if populated:
        assert facts is not None and secrets_doc is not None
        if not all(prod.containers_running().values()):
            log("prod: starting stopped services")
            prod.repair()
        prod.wait_healthy()
    else:
        env = prod.make_secrets()
        secrets_doc = {"env": env, "values": []}
        _write_json(paths.secrets, secrets_doc)
        facts = {"complete": False, "container_id": _container_id(spec.container)}
        state["prod"] = facts
        _write_json(paths.state, state)
        facts.update(prod.populate(tags["app"], env, want))
        facts["complete"] = True
        facts["populated_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    assert secrets_doc is not None
    secrets_doc["values"] = _secret_values(paths, secrets_doc["env"], s3)
    secrets_doc["s3"] = {"access_key": s3["access_key"], "secret_key": s3["secret_key"]}
    _write_json(paths.secrets, secrets_doc)

    recipient = hosts.age_recipient(paths)
    config, s3_config = vkconfig.write_configs(paths, recipient, s3)
    _check_config(paths, config)
    if s3_config is not None:
        _check_config(paths, s3_config)

    state = {
        "version": STATE_VERSION,
        "state_dir": str(paths.root),
        "repo": str(paths.repo),
        "images": tags,
        "network": NETWORK,
        "key_file": str(paths.key_file),
        "known_hosts": str(paths.known_hosts),
        "identity": str(paths.identity),
        "recipient": recipient,
        "config": str(config),
        "s3_config": str(s3_config) if s3_config else None,
        "storage_dir": str(paths.storage),
        "secrets_file": str(paths.secrets),
        "hosts": {
            name: {
                "container": h.container,
                "address": "127.0.0.1",
                "port": h.port,
                "user": "root",
                "hostname": h.hostname,
                "docker_volume": h.docker_volume,
                "container_id": _container_id(h.container),
            }
            for name, h in HOSTS.items()
        },
        "s3": {k: v for k, v in s3.items() if k not in ("access_key", "secret_key")},
        "prod": {
            **facts,
            "database": database.DATABASE,
            "app_role": database.APP_ROLE,
            "roles": list(database.ROLES),
            "containers": prod.CONTAINERS,
            "volumes": prod.VOLUMES,
            "images": list(prod.IMAGES),
            "projects": {p: f"/opt/{p}" for p in prod.PROJECTS},
            "health_urls": prod.HEALTH_URLS,
        },
        "up_seconds": round(time.monotonic() - t0, 1),
    }
    _write_json(paths.state, state)
    return state


def summary(state: dict[str, Any]) -> str:
    """A few human lines about an up lab."""
    p = state["prod"]
    lines = [
        f"lab up in {state['up_seconds']}s  (state: {state['state_dir']}/state.json)",
        f"  prod   ssh -i {state['key_file']} -o UserKnownHostsFile={state['known_hosts']} "
        f"-p {state['hosts']['prod']['port']} root@127.0.0.1",
        f"  fresh  ssh ... -p {state['hosts']['fresh']['port']} root@127.0.0.1",
        f"  s3     {state['s3']['endpoint']}  buckets {state['s3']['bucket']}, "
        f"{state['s3']['locked_bucket']} (Object Lock)",
        f"  db     {p['database']} scale {p['scale']}: "
        + ", ".join(f"{k.split('.')[-1]}={v}" for k, v in sorted(p["row_counts"].items())),
        f"  config {state['config']}  /  {state['s3_config']}",
    ]
    return "\n".join(lines)


def reset_fresh() -> float:
    """Recreate the fresh host: empty engine, no /opt, same host keys. Return seconds."""
    t0 = time.monotonic()
    paths = lab_paths()
    spec = HOSTS["fresh"]
    image = images.IMAGES[spec.image].tag
    if not images.image_exists(image):
        raise LabError(f"the {spec.image} image is missing: run `python -m tests.lab up` first")
    hosts.remove_host(spec)
    hosts.ensure_host(spec, image, paths)
    hosts.wait_ready(spec, paths)
    state = load_state(paths)
    if state and "hosts" in state:
        state["hosts"]["fresh"]["container_id"] = _container_id(spec.container)
        _write_json(paths.state, state)
    return time.monotonic() - t0


def reset_prod(scale: float | None = None) -> dict[str, Any]:
    """Recreate prod from scratch and reseed it (new secrets)."""
    paths = lab_paths()
    hosts.remove_host(HOSTS["prod"])
    state = load_state(paths)
    if state is not None and scale is None:
        scale = float(state.get("prod", {}).get("scale", DEFAULT_SCALE))
    if state is not None:
        state.pop("prod", None)
        _write_json(paths.state, state)
    return up(scale)


def down() -> None:
    """Remove the lab's containers, volumes, network, S3 server and state; keep base images."""
    paths = lab_paths()
    if docker("info", check=False).returncode == 0:
        for spec in HOSTS.values():
            hosts.remove_host(spec)
        labelled = (
            docker("ps", "-aq", "--filter", f"label={LABEL}=1", check=False).stdout.decode().split()
        )
        if labelled:
            docker("rm", "-f", "-v", *labelled)
        vols = (
            docker("volume", "ls", "-q", "--filter", f"label={LABEL}=1", check=False)
            .stdout.decode()
            .split()
        )
        if vols:
            docker("volume", "rm", "-f", *vols)
        if docker("network", "inspect", NETWORK, check=False).returncode == 0:
            docker("network", "rm", NETWORK)
    if paths.s3_data.exists():
        _s3_module().stop(paths.s3_data)
    if paths.root.exists():
        shutil.rmtree(paths.root)
    log(f"lab down: removed hosts, network, S3 and {paths.root}")


def check_down() -> list[str]:
    """Return what a `down` left behind: containers, volumes, networks, processes, ports."""
    left: list[str] = []
    paths = lab_paths()
    if docker("info", check=False).returncode == 0:
        for what, argv in (
            ("container", ["ps", "-aq", "--filter", f"label={LABEL}=1"]),
            ("volume", ["volume", "ls", "-q", "--filter", f"label={LABEL}=1"]),
            ("network", ["network", "ls", "-q", "--filter", f"label={LABEL}=1"]),
        ):
            found = docker(*argv, check=False).stdout.decode().split()
            left += [f"{what} {x}" for x in found]
        for spec in HOSTS.values():
            if _container_id(spec.container):
                left.append(f"container {spec.container}")
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            cmd = (pid_dir / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmd and cmd[0].endswith(b"weed") and str(paths.s3_data).encode() in b" ".join(cmd):
            left.append(f"process {pid_dir.name} {b' '.join(cmd)[:120].decode(errors='replace')}")
    import socket

    for port in (HOSTS["prod"].port, HOSTS["fresh"].port, S3_PORT):
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                left.append(f"port 127.0.0.1:{port} still answers")
    for spec in HOSTS.values():
        for cg in Path("/sys/fs/cgroup").glob(f"*/{spec.container}"):
            left.append(f"cgroup {cg}")
    if paths.root.exists():
        left.append(f"state dir {paths.root}")
    return left


def status() -> dict[str, Any]:
    """Report what is up and answering (never raises for a missing lab)."""
    paths = lab_paths()
    state = load_state(paths)
    doc: dict[str, Any] = {"state_dir": str(paths.root), "state": state is not None}
    if docker("info", check=False).returncode != 0:
        doc["dockerd"] = False
        doc["up"] = False
        return doc
    doc["dockerd"] = True
    doc["images"] = {
        k: {"tag": s.tag, "cached": images.image_exists(s.tag)} for k, s in images.IMAGES.items()
    }
    host_doc: dict[str, Any] = {}
    for name, spec in HOSTS.items():
        running = hosts.host_running(spec)
        entry: dict[str, Any] = {"container": spec.container, "port": spec.port, "running": running}
        if running and paths.key_file.exists():
            entry["ssh"] = hosts.ssh(paths, spec, "true", check=False, timeout=15).returncode == 0
            ps = docker(
                "exec",
                spec.container,
                "docker",
                "ps",
                "-a",
                "--format",
                "{{.Names}} {{.State}}",
                check=False,
            )
            entry["engine"] = ps.returncode == 0
            entry["containers"] = dict(
                line.split(" ", 1) for line in ps.stdout.decode().splitlines() if " " in line
            )
        host_doc[name] = entry
    doc["hosts"] = host_doc
    s3_doc: dict[str, Any] = {"running": False}
    if paths.s3_data.exists():
        s3 = _s3_module()
        rec = s3.load(paths.s3_data)
        if rec is not None:
            s3_doc = {"endpoint": rec.endpoint, "pid": rec.pid, "running": _s3_answers(rec)}
    doc["s3"] = s3_doc
    prod_ok = host_doc["prod"].get("containers", {})
    doc["up"] = bool(
        state
        and all(h.get("ssh") for h in host_doc.values())
        and s3_doc["running"]
        and all(prod_ok.get(c) == "running" for c in prod.CONTAINERS)
    )
    return doc

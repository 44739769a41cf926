"""Lay out and start the production host of the lab, like VisualKit's VPS.

On the prod host (Debian 13 with systemd, driven with `docker exec` from outside):
- Caddy as a host service under systemd (`/etc/caddy/Caddyfile`, user `caddy`,
  certificates from its local CA in /var/lib/caddy/.local/share/caddy), serving
  api, agent, janus, cdn and support .visualkit.live over HTTPS; cdn from /var/www/cdn.
- UFW enabled: 22/tcp, 80/tcp, 443/tcp, 5005/udp (VK-Agent RTP), 10000:60000/udp (Janus).
- `/opt/{platform-api,vk-agent,chatwoot,janus}/docker-compose.yml` (0644) and `.env`
  (0600, secrets); Janus's config files in /opt/janus/config (0640, they hold secrets).
- Compose v2 (`docker compose`), with container_name only where the real stack sets one
  (platform-api, vk-agent, janus-gateway); Chatwoot's containers carry Compose v2's own
  names (chatwoot-chatwoot-1, chatwoot-chatwoot-sidekiq-1, chatwoot-chatwoot-proxy-1).
- Images built there (FROM debian-lab:bookworm, the lab's app base): IMAGES; build
  contexts in /srv/lab-build.
- Named volumes: VOLUMES (chatwoot storage, postgres data, redis data), seeded
  deterministically for a scale.
The stand-in apps' /health logs in to PostgreSQL and Redis with the credentials of
their .env (Chatwoot), so a wrong secret after a restore fails it.
"""

from __future__ import annotations

import io
import json
import secrets as pysecrets
import string
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.lab import database
from tests.lab.paths import DOMAIN, HOSTS
from tests.lab.sh import LabError, dexec, docker, docker_bin, log, wait_for

PROD = HOSTS["prod"].container
FILES = Path(__file__).resolve().parent / "files"
BASE_TAG = "debian-lab:bookworm"
BUILD_DIR = "/srv/lab-build"

# image tag -> (build context name, Dockerfile text)
PROJECTS = ("chatwoot", "platform-api", "vk-agent", "janus")
CONTAINERS: dict[str, str] = {
    # container -> compose project
    "chatwoot-postgres-1": "chatwoot",
    "chatwoot-redis-1": "chatwoot",
    "chatwoot-chatwoot-1": "chatwoot",
    "chatwoot-chatwoot-sidekiq-1": "chatwoot",
    "chatwoot-chatwoot-proxy-1": "chatwoot",
    "platform-api": "platform-api",
    "vk-agent": "vk-agent",
    "janus-gateway": "janus",
}
VOLUMES: dict[str, str] = {
    # volume -> what it holds
    "chatwoot_storage_data": "Chatwoot attachments (/app/storage)",
    "chatwoot_postgres_data": "PostgreSQL data directory",
    "chatwoot_redis_data": "Redis dump (/data)",
}
SERVICE_PORTS = {"platform-api": 3001, "vk-agent": 3004, "janus-gateway": 8088, "chatwoot": 3003}
CADDY_CA = "/var/lib/caddy/.local/share/caddy/pki/authorities/local/root.crt"
PUBLIC_NAMES = ("api", "agent", "janus", "cdn", "support")
HEALTH_URLS = {
    "http://127.0.0.1:3001/health": "platform-api",
    "http://127.0.0.1:3004/health": "vk-agent",
    "http://127.0.0.1:8088/janus/info": "janus-gateway",
    "http://127.0.0.1:3003/health": "chatwoot",
    f"https://api.{DOMAIN}/health": "api",
    f"https://agent.{DOMAIN}/health": "agent",
    f"https://janus.{DOMAIN}/janus/info": "janus",
    f"https://cdn.{DOMAIN}/health.txt": "cdn",
    f"https://support.{DOMAIN}/health": "support",
}
UFW_RULES = ("22/tcp", "80/tcp", "443/tcp", "5005/udp", "10000:60000/udp")

_APP_DOCKERFILE = """\
FROM {base}
LABEL org.opencontainers.image.title="{service}" \\
      org.opencontainers.image.vendor="VisualKit (lab stand-in)"
COPY app.py /app/app.py
WORKDIR /app
{extra}ENV SERVICE={service} PORT={port} REQUIRED_ENV={required}
EXPOSE {port}
HEALTHCHECK --interval=5s --timeout=3s --start-period=5s --retries=3 \\
    CMD curl -fsS http://127.0.0.1:{port}/health >/dev/null || exit 1
CMD ["python3", "/app/app.py"]
"""

_PG_ENTRYPOINT = """\
#!/bin/sh
# PostgreSQL 15 for the vkbackup lab: initdb on first start (password from the env), then run.
set -eu
: "${PGDATA:=/var/lib/postgresql/data}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is required}"
    pwfile=$(mktemp)
    printf '%s\\n' "$POSTGRES_PASSWORD" > "$pwfile"
    initdb -D "$PGDATA" -U postgres --pwfile="$pwfile" --encoding=UTF8 --locale=C.UTF-8 \\
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "$pwfile"
    {
        echo "listen_addresses = '*'"
        echo "unix_socket_directories = '/var/run/postgresql'"
        echo "max_connections = 50"
        echo "shared_buffers = 64MB"
        echo "jit = off"
    } >> "$PGDATA/postgresql.conf"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
fi
exec "$@"
"""

_DOCKERFILES: dict[str, str] = {
    "platform-api:latest": _APP_DOCKERFILE.format(
        base=BASE_TAG,
        service="platform-api",
        port=3001,
        required="JWT_SECRET,DATABASE_URL",
        extra="",
    ),
    "vk-agent:latest": _APP_DOCKERFILE.format(
        base=BASE_TAG, service="vk-agent", port=3004, required="AGENT_API_TOKEN", extra=""
    ),
    "janus-gateway:latest": _APP_DOCKERFILE.format(
        base=BASE_TAG,
        service="janus-gateway",
        port=8088,
        required="JANUS_ADMIN_SECRET",
        extra="RUN mkdir -p /usr/local/etc/janus\n"
        "ENV REQUIRED_FILES=/usr/local/etc/janus/janus.jcfg EXTRA_PORTS=8188\n",
    ),
    "chatwoot:lab": _APP_DOCKERFILE.format(
        base=BASE_TAG,
        service="chatwoot",
        port=3000,
        required="SECRET_KEY_BASE,POSTGRES_PASSWORD,REDIS_PASSWORD",
        extra="RUN mkdir -p /app/storage\n"
        "ENV STORAGE_DIR=/app/storage CHECK_POSTGRES=1 CHECK_REDIS=1\n",
    ),
    "postgres:15-lab": f"""\
FROM {BASE_TAG}
COPY docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
RUN chmod 0755 /usr/local/bin/docker-entrypoint.sh \\
 && mkdir -p /var/lib/postgresql/data /var/run/postgresql \\
 && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql \\
 && chmod 0700 /var/lib/postgresql/data && chmod 2775 /var/run/postgresql
ENV PGDATA=/var/lib/postgresql/data
USER postgres
EXPOSE 5432
STOPSIGNAL SIGINT
HEALTHCHECK --interval=5s --timeout=3s --retries=5 CMD pg_isready -q -U postgres || exit 1
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["postgres"]
""",
    "redis:lab": f"""\
FROM {BASE_TAG}
RUN mkdir -p /data && chown redis:redis /data && chmod 0750 /data
WORKDIR /data
USER redis
EXPOSE 6379
HEALTHCHECK --interval=5s --timeout=3s --retries=5 \\
    CMD redis-cli --no-auth-warning -a "$REDIS_PASSWORD" ping | grep -q PONG || exit 1
CMD ["redis-server", "--dir", "/data", "--protected-mode", "no"]
""",
    # Chatwoot's own proxy container (chatwoot-chatwoot-proxy-1)
    "caddy:lab": f"""\
FROM {BASE_TAG}
ENV XDG_DATA_HOME=/data XDG_CONFIG_HOME=/config
RUN mkdir -p /data /config
EXPOSE 3003
CMD ["caddy", "reverse-proxy", "--from", ":3003", "--to", "chatwoot:3000"]
""",
}
IMAGES = tuple(_DOCKERFILES)

CADDYFILE = f"""\
# VisualKit production ingress (vkbackup lab). Certificates from Caddy's local CA
# (no ACME is reachable here); they live in Caddy's data dir and are restored.
{{
	email ops@{DOMAIN}
	local_certs
	skip_install_trust
}}

api.{DOMAIN} {{
	encode gzip
	reverse_proxy 127.0.0.1:3001
}}

agent.{DOMAIN} {{
	reverse_proxy 127.0.0.1:3004
}}

janus.{DOMAIN} {{
	handle /janus* {{
		reverse_proxy 127.0.0.1:8088
	}}
	handle {{
		reverse_proxy 127.0.0.1:8188
	}}
}}

cdn.{DOMAIN} {{
	header Cache-Control "public, max-age=31536000, immutable"
	root * /var/www/cdn
	file_server
}}

support.{DOMAIN} {{
	reverse_proxy 127.0.0.1:3003
}}
"""

CDN_FILES = {
    "index.html": b"<!doctype html><title>VisualKit CDN</title>\n",
    "health.txt": b"ok\n",
    "widget/v1/visualkit.js": b"/* VisualKit widget (lab) */\nwindow.VisualKit = {v: 1};\n",
}

COMPOSE: dict[str, str] = {
    "chatwoot": """\
# Chatwoot (as in chatwoot/chatwoot docker-compose.production.yaml, with lab images).
# No container_name: Compose v2 names them chatwoot-<service>-1, as on the real VPS.
services:
  chatwoot:
    image: chatwoot:lab
    env_file: .env
    depends_on:
      - postgres
      - redis
    volumes:
      - storage_data:/app/storage
    restart: always
  chatwoot-sidekiq:
    image: chatwoot:lab
    env_file: .env
    environment:
      - SERVICE=chatwoot-sidekiq
      - PORT=3002
    depends_on:
      - postgres
      - redis
    volumes:
      - storage_data:/app/storage
    healthcheck:
      test: ["CMD-SHELL", "curl -fsS http://127.0.0.1:3002/health >/dev/null || exit 1"]
      interval: 5s
    restart: always
  chatwoot-proxy:
    image: caddy:lab
    depends_on:
      - chatwoot
    ports:
      - "127.0.0.1:3003:3003"
    restart: always
  postgres:
    image: postgres:15-lab
    environment:
      - POSTGRES_DB=chatwoot_production
      - POSTGRES_USER=postgres
      - POSTGRES_PASSWORD=${POSTGRES_PASSWORD}
    volumes:
      - postgres_data:/var/lib/postgresql/data
    restart: always
  redis:
    image: redis:lab
    env_file: .env
    command:
      - sh
      - -c
      - exec redis-server --dir /data --protected-mode no --requirepass "$REDIS_PASSWORD"
    volumes:
      - redis_data:/data
    restart: always

volumes:
  storage_data:
  postgres_data:
  redis_data:
""",
    "platform-api": """\
services:
  platform-api:
    image: platform-api:latest
    container_name: platform-api
    env_file: .env
    ports:
      - "127.0.0.1:3001:3001"
    restart: unless-stopped
""",
    "vk-agent": """\
services:
  vk-agent:
    image: vk-agent:latest
    container_name: vk-agent
    env_file: .env
    ports:
      - "127.0.0.1:3004:3004"
      - "5005:5005/udp"
    restart: unless-stopped
""",
    "janus": """\
# Janus needs its RTP range (10000-60000/udp): host networking, config from the host.
services:
  janus-gateway:
    image: janus-gateway:latest
    container_name: janus-gateway
    env_file: .env
    network_mode: host
    volumes:
      - /opt/janus/config:/usr/local/etc/janus:ro
    restart: unless-stopped
""",
}


def _token(n: int) -> str:
    return pysecrets.token_urlsafe(n)


def _akid() -> str:
    alphabet = string.ascii_uppercase + string.digits
    return "AKIA" + "".join(pysecrets.choice(alphabet) for _ in range(16))


def make_secrets() -> dict[str, dict[str, str]]:
    """Return fresh random secrets: project -> {ENV_NAME: value}."""
    janus_api = pysecrets.token_hex(20)
    return {
        "platform-api": {
            "DB_PASSWORD": _token(24),
            "JWT_SECRET": pysecrets.token_hex(32),
            "JWT_REFRESH_SECRET": pysecrets.token_hex(32),
            "S3_ACCESS_KEY_ID": _akid(),
            "S3_SECRET_ACCESS_KEY": _token(30),
            "STRIPE_SECRET_KEY": "sk_live_" + _token(24),
            "OPENAI_API_KEY": "sk-proj-" + _token(36),
        },
        "vk-agent": {
            "AGENT_API_TOKEN": pysecrets.token_hex(24),
            "JWT_SECRET": pysecrets.token_hex(32),
            "OPENAI_API_KEY": "sk-proj-" + _token(36),
            "JANUS_API_SECRET": janus_api,
        },
        "janus": {
            "JANUS_ADMIN_SECRET": pysecrets.token_hex(20),
            "JANUS_API_SECRET": janus_api,
            "TURN_SECRET": _token(24),
        },
        "chatwoot": {
            "SECRET_KEY_BASE": pysecrets.token_hex(64),
            "POSTGRES_PASSWORD": _token(24),
            "CHATWOOT_DB_PASSWORD": _token(24),
            "ANALYST_DB_PASSWORD": _token(24),
            "REDIS_PASSWORD": _token(24),
            "SMTP_PASSWORD": _token(20),
            "AWS_ACCESS_KEY_ID": _akid(),
            "AWS_SECRET_ACCESS_KEY": _token(30),
        },
    }


def env_files(secrets: dict[str, dict[str, str]]) -> dict[str, str]:
    """Return project -> `.env` text (plain settings and the secrets of *secrets*)."""
    p, a, j, c = (secrets[k] for k in ("platform-api", "vk-agent", "janus", "chatwoot"))
    files = {
        "platform-api": [
            "# platform-api production settings",
            "NODE_ENV=production",
            f"PUBLIC_URL=https://api.{DOMAIN}",
            f"DATABASE_URL=postgresql://vk_api:{p['DB_PASSWORD']}@db.internal.{DOMAIN}:5432/platform",
            f"JWT_SECRET={p['JWT_SECRET']}",
            f"JWT_REFRESH_SECRET={p['JWT_REFRESH_SECRET']}",
            "S3_BUCKET=visualkit-media",
            f"S3_ACCESS_KEY_ID={p['S3_ACCESS_KEY_ID']}",
            f"S3_SECRET_ACCESS_KEY={p['S3_SECRET_ACCESS_KEY']}",
            f"STRIPE_SECRET_KEY={p['STRIPE_SECRET_KEY']}",
            f"OPENAI_API_KEY={p['OPENAI_API_KEY']}",
            f"CDN_URL=https://cdn.{DOMAIN}",
        ],
        "vk-agent": [
            "# vk-agent",
            "LOG_LEVEL=info",
            f"PLATFORM_API_URL=https://api.{DOMAIN}",
            f"AGENT_API_TOKEN={a['AGENT_API_TOKEN']}",
            f"JWT_SECRET={a['JWT_SECRET']}",
            f"OPENAI_API_KEY={a['OPENAI_API_KEY']}",
            f"JANUS_URL=https://janus.{DOMAIN}/janus",
            f"JANUS_API_SECRET={a['JANUS_API_SECRET']}",
        ],
        "janus": [
            "# Janus WebRTC gateway",
            f"JANUS_ADMIN_SECRET={j['JANUS_ADMIN_SECRET']}",
            f"JANUS_API_SECRET={j['JANUS_API_SECRET']}",
            f"TURN_SECRET={j['TURN_SECRET']}",
            f"TURN_SERVER=turn:turn.{DOMAIN}:3478",
        ],
        "chatwoot": [
            "# Chatwoot (see chatwoot/chatwoot .env.example)",
            f"SECRET_KEY_BASE={c['SECRET_KEY_BASE']}",
            f"FRONTEND_URL=https://support.{DOMAIN}",
            "RAILS_ENV=production",
            "NODE_ENV=production",
            "INSTALLATION_ENV=docker",
            "POSTGRES_HOST=postgres",
            "POSTGRES_USERNAME=postgres",
            f"POSTGRES_PASSWORD={c['POSTGRES_PASSWORD']}",
            f"POSTGRES_DATABASE={database.DATABASE}",
            f"DATABASE_URL=postgres://{database.APP_ROLE}:{c['CHATWOOT_DB_PASSWORD']}"
            f"@postgres:5432/{database.DATABASE}",
            f"CHATWOOT_DB_PASSWORD={c['CHATWOOT_DB_PASSWORD']}",
            f"ANALYST_DB_PASSWORD={c['ANALYST_DB_PASSWORD']}",
            f"REDIS_URL=redis://:{c['REDIS_PASSWORD']}@redis:6379",
            f"REDIS_PASSWORD={c['REDIS_PASSWORD']}",
            "ACTIVE_STORAGE_SERVICE=local",
            f"SMTP_ADDRESS=smtp.{DOMAIN}",
            "SMTP_USERNAME=chatwoot",
            f"SMTP_PASSWORD={c['SMTP_PASSWORD']}",
            f"AWS_ACCESS_KEY_ID={c['AWS_ACCESS_KEY_ID']}",
            f"AWS_SECRET_ACCESS_KEY={c['AWS_SECRET_ACCESS_KEY']}",
        ],
    }
    return {k: "\n".join(v) + "\n" for k, v in files.items()}


def janus_config(secrets: dict[str, dict[str, str]]) -> dict[str, str]:
    """Return the Janus configuration files (they hold the admin and API secrets)."""
    j = secrets["janus"]
    return {
        "janus.jcfg": f"""general: {{
\tconfigs_folder = "/usr/local/etc/janus"
\tplugins_folder = "/usr/local/lib/janus/plugins"
\tdebug_level = 4
\tadmin_secret = "{j["JANUS_ADMIN_SECRET"]}"
\tapi_secret = "{j["JANUS_API_SECRET"]}"
}}
media: {{
\trtp_port_range = "10000-60000"
}}
nat: {{
\tturn_server = "turn.{DOMAIN}"
\tturn_port = 3478
\tturn_rest_api_key = "{j["TURN_SECRET"]}"
}}
""",
        "janus.plugin.videoroom.jcfg": """general: {
\tstring_ids = true
}
room-1234: {
\tdescription = "VisualKit demo room"
\tpublishers = 6
\tbitrate = 512000
}
""",
        "janus.transport.http.jcfg": """general: {
\tjson = "indented"
\tbase_path = "/janus"
\thttp = true
\tport = 8088
}
admin: {
\tadmin_base_path = "/admin"
\tadmin_http = false
}
""",
        "janus.transport.websockets.jcfg": """general: {
\tws = true
\tws_port = 8188
}
""",
    }


def _tar(entries: list[tuple[str, bytes | None, int]], mtime: int = 1_700_000_000) -> bytes:
    """Build a tar of (path, content or None for a directory, mode), owned by root."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for path, data, mode in entries:
            info = tarfile.TarInfo(path.lstrip("/"))
            info.mode = mode
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mtime = mtime
            if data is None:
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _on_prod(argv: list[str], *, input: bytes | None = None, timeout: float = 600) -> str:
    cp = dexec(PROD, argv, input=input, timeout=timeout)
    return cp.stdout.decode("utf-8", "replace").strip()


def _sh(script: str, *, input: bytes | None = None, timeout: float = 600) -> str:
    return _on_prod(["bash", "-o", "pipefail", "-ec", script], input=input, timeout=timeout)


def _put_files(secrets: dict[str, dict[str, str]]) -> None:
    envs = env_files(secrets)
    entries: list[tuple[str, bytes | None, int]] = [
        ("/etc/caddy", None, 0o755),
        ("/etc/caddy/Caddyfile", CADDYFILE.encode(), 0o644),
        ("/opt", None, 0o755),
        ("/var/www", None, 0o755),
        ("/var/www/cdn", None, 0o755),
        ("/var/www/cdn/widget", None, 0o755),
        ("/var/www/cdn/widget/v1", None, 0o755),
    ]
    entries += [(f"/var/www/cdn/{name}", data, 0o644) for name, data in CDN_FILES.items()]
    for project in PROJECTS:
        entries.append((f"/opt/{project}", None, 0o755))
        entries.append((f"/opt/{project}/docker-compose.yml", COMPOSE[project].encode(), 0o644))
        if project in envs:
            entries.append((f"/opt/{project}/.env", envs[project].encode(), 0o600))
    entries.append(("/opt/janus/config", None, 0o750))
    entries += [
        (f"/opt/janus/config/{name}", text.encode(), 0o640)
        for name, text in janus_config(secrets).items()
    ]
    app_py = (FILES / "app.py").read_bytes()
    entries.append((BUILD_DIR, None, 0o755))
    for image, dockerfile in _DOCKERFILES.items():
        ctx = f"{BUILD_DIR}/{_ctx(image)}"
        entries.append((ctx, None, 0o755))
        entries.append((f"{ctx}/Dockerfile", dockerfile.encode(), 0o644))
        if "app.py" in dockerfile:
            entries.append((f"{ctx}/app.py", app_py, 0o644))
        if "docker-entrypoint.sh" in dockerfile:
            entries.append((f"{ctx}/docker-entrypoint.sh", _PG_ENTRYPOINT.encode(), 0o755))
    _on_prod(["tar", "-x", "-p", "--no-same-owner", "-C", "/"], input=_tar(entries))


def _ctx(image: str) -> str:
    return image.split(":")[0]


def _load_base(app_image: str) -> None:
    have = dexec(PROD, ["docker", "image", "inspect", BASE_TAG], check=False).returncode == 0
    if have:
        return
    log(f"loading {app_image} into prod as {BASE_TAG}")
    import subprocess

    save = subprocess.Popen([docker_bin(), "save", app_image], stdout=subprocess.PIPE)
    assert save.stdout is not None
    load = subprocess.Popen(
        [docker_bin(), "exec", "-i", PROD, "docker", "load", "-q"],
        stdin=save.stdout,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    save.stdout.close()
    _, err = load.communicate()
    if save.wait() != 0 or load.returncode != 0:
        raise LabError(f"loading the app base into prod failed: {err.decode()[-800:]}")
    _on_prod(["docker", "tag", app_image, BASE_TAG])
    _on_prod(["docker", "rmi", app_image])


def _build_images() -> None:
    missing = [
        image
        for image in IMAGES
        if dexec(PROD, ["docker", "image", "inspect", image], check=False).returncode != 0
    ]

    def build(image: str) -> None:
        t0 = time.monotonic()
        _on_prod(["docker", "build", "-q", "-t", image, f"{BUILD_DIR}/{_ctx(image)}"])
        log(f"built {image} on prod ({time.monotonic() - t0:.1f}s)")

    with ThreadPoolExecutor(max_workers=3) as pool:
        list(pool.map(build, missing))


def _compose_up(project: str, *services: str) -> None:
    _sh(f"cd /opt/{project} && docker compose up -d --no-build {' '.join(services)} 2>&1")


def _host_services() -> None:
    """Caddy under systemd with the lab's Caddyfile, and the firewall, as on the VPS."""
    _sh("systemctl enable caddy >/dev/null 2>&1; systemctl restart caddy")
    names = " ".join(f"{sub}.{DOMAIN}" for sub in PUBLIC_NAMES)
    _sh(
        "d=/var/lib/caddy/.local/share/caddy/certificates/local; "
        f"for i in $(seq 1 60); do ok=1; for n in {names}; do "
        '[ -s "$d/$n/$n.crt" ] || ok=0; done; [ $ok = 1 ] && exit 0; sleep 1; done; '
        'echo "caddy issued no certificates" >&2; journalctl -u caddy --no-pager | tail -20 >&2; '
        "exit 1"
    )
    rules = "; ".join(f"ufw allow {r} >/dev/null" for r in UFW_RULES)
    _sh(f"{rules}; ufw --force enable >/dev/null")


def psql(sql: str, database_name: str = database.DATABASE, user: str = "postgres") -> str:
    """Run *sql* with psql inside chatwoot-postgres-1 on prod; return its unaligned output."""
    cp = dexec(
        PROD,
        [
            "docker",
            "exec",
            "-i",
            "chatwoot-postgres-1",
            "psql",
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-U",
            user,
            "-d",
            database_name,
        ],
        input=sql.encode(),
        timeout=3600,
    )
    return cp.stdout.decode("utf-8", "replace").strip()


def row_counts() -> dict[str, int]:
    """Return schema.table -> row count of the lab database on prod."""
    counts: dict[str, int] = {}
    for line in psql(database.COUNT_SQL).splitlines():
        if "|" in line:
            name, n = line.rsplit("|", 1)
            counts[name] = int(n)
    return counts


def _wait_postgres() -> None:
    def ready() -> bool:
        return (
            dexec(
                PROD,
                ["docker", "exec", "chatwoot-postgres-1", "pg_isready", "-q", "-U", "postgres"],
                check=False,
            ).returncode
            == 0
        )

    wait_for("chatwoot-postgres-1 accepting connections", ready, 90)


def _resp(*args: str) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for a in args:
        b = a.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def _seed_redis(password: str, scale: float) -> int:
    cmds: list[bytes] = []
    jobs = max(10, int(200 * scale))
    for i in range(jobs):
        job = json.dumps(
            {
                "class": "Conversations::ReopenSnoozedConversationsJob",
                "jid": f"{i:024x}",
                "queue": "default",
                "args": [i],
                "created_at": 1_700_000_000 + i,
            }
        )
        cmds.append(_resp("LPUSH", "queue:default", job))
    for i in range(jobs // 2):
        cmds.append(_resp("SET", f"cache:conversation:{i}", f"cached payload {i} " * 8))
    cmds.append(_resp("SADD", "queues", "default", "mailers", "low"))
    cmds.append(_resp("HSET", "stat", "processed", str(jobs * 10), "failed", "3"))
    dexec(
        PROD,
        [
            "docker",
            "exec",
            "-i",
            "chatwoot-redis-1",
            "redis-cli",
            "--no-auth-warning",
            "-a",
            password,
            "--pipe",
        ],
        input=b"".join(cmds),
    )
    _on_prod(
        [
            "docker",
            "exec",
            "chatwoot-redis-1",
            "redis-cli",
            "--no-auth-warning",
            "-a",
            password,
            "SAVE",
        ]
    )
    return jobs + jobs // 2 + 2


def _seed_storage(scale: float) -> dict[str, object]:
    script = (FILES / "seed_storage.py").read_bytes()
    cp = dexec(
        PROD,
        [
            "docker",
            "exec",
            "-i",
            "-u",
            "0",
            "chatwoot-chatwoot-1",
            "python3",
            "-",
            "/app/storage",
            str(scale),
        ],
        input=script,
        timeout=3600,
    )
    summary = json.loads(cp.stdout.decode())
    assert isinstance(summary, dict)
    return summary


def containers_running() -> dict[str, bool]:
    """Return container -> running, for every container of the prod layout."""
    cp = dexec(PROD, ["docker", "ps", "--format", "{{.Names}}"], check=False)
    running = set(cp.stdout.decode().split())
    return {name: name in running for name in CONTAINERS}


def health_script() -> str:
    """A bash script printing `URL STATUS` per health URL, run on a lab host."""
    script = []
    for url in HEALTH_URLS:
        resolve = ""
        if url.startswith("https://"):
            # through Caddy, verified against the CA in Caddy's own data dir (never -k)
            resolve = f"--cacert {CADDY_CA} --resolve {url.split('/')[2]}:443:127.0.0.1 "
        script.append(
            f"printf '%s %s\\n' {url} $(curl -s -o /dev/null -w '%{{http_code}}' "
            f"--max-time 5 {resolve}{url} || true)"
        )
    return "\n".join(script)


def parse_health(output: str) -> dict[str, int]:
    """Parse health_script() output into URL -> HTTP status (0: no answer)."""
    result: dict[str, int] = {}
    for line in output.splitlines():
        url, _, code = line.partition(" ")
        result[url] = int(code) if code.strip().isdigit() and code.strip() != "000" else 0
    return result


def health() -> dict[str, int]:
    """Return URL -> HTTP status of every health URL, fetched with curl inside prod."""
    cp = dexec(PROD, ["bash", "-c", health_script()], check=False)
    return parse_health(cp.stdout.decode())


def wait_healthy(timeout: float = 120) -> None:
    """Wait until every container runs and every health URL answers 200."""
    last: dict[str, int] = {}

    def ok() -> bool:
        nonlocal last
        if not all(containers_running().values()):
            return False
        last = health()
        return bool(last) and all(code == 200 for code in last.values())

    try:
        wait_for("prod services healthy", ok, timeout, interval=1)
    except LabError as e:
        bad = {u: c for u, c in last.items() if c != 200}
        raise LabError(f"{e}: failing {bad} running {containers_running()}") from e


def repair() -> None:
    """Start any stopped compose service on prod (after a host restart, or a killed test)."""
    for project in PROJECTS:
        _compose_up(project)
    _sh("systemctl is-active -q caddy || systemctl restart caddy")


def populate(app_image: str, secrets: dict[str, dict[str, str]], scale: float) -> dict[str, object]:
    """Build the whole prod layout on an empty prod host; return facts for state.json."""
    t0 = time.monotonic()
    _put_files(secrets)
    _load_base(app_image)
    _build_images()
    log(f"prod: files and images ready ({time.monotonic() - t0:.0f}s)")
    _compose_up("chatwoot", "postgres", "redis")
    _wait_postgres()
    chat = secrets["chatwoot"]
    t1 = time.monotonic()
    psql(
        database.seed_sql(scale, chat["CHATWOOT_DB_PASSWORD"], chat["ANALYST_DB_PASSWORD"]),
        database_name="postgres",
    )
    log(f"prod: database seeded at scale {scale} ({time.monotonic() - t1:.0f}s)")
    redis_keys = _seed_redis(chat["REDIS_PASSWORD"], scale)
    for project in PROJECTS:
        _compose_up(project)
    _host_services()
    storage = _seed_storage(scale)
    log(f"prod: volumes seeded ({time.monotonic() - t0:.0f}s)")
    wait_healthy()
    counts = row_counts()
    size = psql(f"SELECT pg_database_size('{database.DATABASE}')")
    log(f"prod: populated in {time.monotonic() - t0:.0f}s")
    return {
        "scale": scale,
        "row_counts": counts,
        "database_bytes": int(size),
        "redis_keys": redis_keys,
        "storage": storage,
    }


def docker_ps_prod() -> str:
    """`docker ps -a` on prod (for error messages)."""
    return docker("exec", PROD, "docker", "ps", "-a", check=False).stdout.decode()

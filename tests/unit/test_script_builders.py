"""Every value that reaches a remote script is data, never code (issue 16, finding 2).

Every function of vkbackup/sources/*.py and vkbackup/restore/target.py whose name
says it builds a script or an argv is found by name (a new one cannot be
forgotten), called with hostile values in each of its string parameters in turn,
and its output is

1. parsed by `bash -n` (a value must not break the script's syntax), then
2. run by bash for real, as SSH would run it (an argv joined with shlex.join),
   with every outside command replaced by a stub from a PATH of stubs that
   only log their argv. `docker exec` runs its command (so the `sh -c` text a
   builder hands to a container runs too), `timeout`, `setsid` and `env` run
   theirs, `sh` and `bash` are the real bash.

Each hostile value tries to write a marker file, with a shell redirection (no
command needed) or /usr/bin/touch (an absolute path, not a stub); the marker
must never appear. A deliberately broken builder proves the harness catches
the pattern the issue found (a name inside double quotes in an echo).
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import shlex
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

MODULES = [
    "vkbackup.sources.base",
    "vkbackup.sources.docker_image",
    "vkbackup.sources.docker_volume",
    "vkbackup.sources.files",
    "vkbackup.sources.host",
    "vkbackup.sources.postgres",
    "vkbackup.restore.target",
]
BUILDER_NAME = re.compile(r"script|argv")
# helpers the builders above use, checked the same way
EXTRA = [("vkbackup.sources.files", "for_each_match")]

MARK = "PWNED"


def hostile_values(marker: Path) -> list[str]:
    m = str(marker)
    return [
        f"pg$(echo pwned >{m})",
        f"pg`echo pwned >{m}`",
        f"a;echo pwned >{m};b",
        f"a&&/usr/bin/touch {m}||b",
        f"\"'$(echo pwned >{m})'\"",
        f"x'; echo pwned >{m}; '",
        f'x"; echo pwned >{m}; "',
        f"line\necho pwned >{m}\n",
        f"a|/usr/bin/touch {m}",
        f"$(/usr/bin/touch {m})",
        f"}}; echo pwned >{m}; {{",
        f"${{IFS}}$(echo pwned >{m})",
        f"-e $(echo pwned >{m})",
        f"a\\$(echo pwned >{m})\\",
        f"%s%n\\n$(echo pwned >{m}) \t*?[",
    ]


# -- the stub PATH ------------------------------------------------------------------

LOG_ARGV = '{ printf %s "${0##*/}"; printf " %q" "$@"; printf "\\n"; } >>"$STUB_LOG"\n'
STUBS: dict[str, str] = {
    "docker": LOG_ARGV
    + """if [ "$1" = exec ]; then
  shift
  while [ $# -gt 0 ]; do
    case $1 in -u|-e|-w|--user|--env|--workdir) shift 2;; -*) shift;; *) break;; esac
  done
  shift  # the container
  [ $# -gt 0 ] && exec "$@"
  exit 0
fi
if [ "$1" = volume ] && [ "$2" = inspect ]; then
  for a in "$@"; do [ "$a" = -f ] && { echo /nonexistent-mountpoint; exit 0; }; done
fi
exit 0
""",
    "sh": 'exec /bin/bash "$@"\n',
    "bash": 'exec /bin/bash "$@"\n',
    "timeout": LOG_ARGV + 'shift; exec "$@"\n',
    "setsid": LOG_ARGV + 'exec "$@"\n',
    "nohup": LOG_ARGV + 'exec "$@"\n',
    "env": LOG_ARGV + 'while [ $# -gt 0 ] && [[ $1 == *=* ]]; do shift; done; exec "$@"\n',
    # answers the dump script's coprocess: a snapshot name, and each "SELECT 'MARK';"
    "psql": LOG_ARGV
    + """while IFS= read -r line; do
  case $line in
    *pg_export_snapshot*) echo 00000003-1;;
    "SELECT '"*"';") m=${line#SELECT \\'}; echo "${m%\\';}";;
    '\\q') exit 0;;
  esac
done
""",
    "sleep": "exit 0\n",
    "seq": 'for ((i=$1; i<=$2; i++)); do echo "$i"; done\n',
    "date": "echo 0\n",
}
# fmt: off
LOGGED = [
    "tar", "gzip", "zstd", "psql", "pg_dump", "pg_dumpall", "pg_restore", "dropdb", "createdb",
    "sha256sum", "md5sum", "cut", "sort", "find", "stat", "mkdir", "cp", "mv", "rm", "ls",
    "sed", "grep", "tr", "head", "tail", "cat", "dirname", "readlink", "realpath", "systemctl",
    "systemd-run", "dpkg", "dpkg-query", "apt-mark", "apt-get", "ufw", "nft", "iptables-save",
    "iptables-restore", "id", "curl", "touch", "ln", "chmod", "chown", "tee", "wc", "xargs",
    "awk", "basename", "mktemp", "docker-compose", "useradd", "groupadd", "usermod", "getent",
    "install",
]
# fmt: on


@pytest.fixture(scope="module")
def stubs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("stubs")
    for name in LOGGED:
        STUBS.setdefault(name, LOG_ARGV + "exit 0\n")
    for name, body in STUBS.items():
        p = d / name
        p.write_text("#!/bin/bash\n" + body)
        p.chmod(0o755)
    return d


def run_bash(text: str, stubs: Path, work: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["/bin/bash", "-c", text],
        cwd=work,
        env={"PATH": str(stubs), "STUB_LOG": str(work / "stub.log"), "HOME": str(work)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
    )


def command_text(built: str | list[str]) -> str:
    """What bash on the remote side runs: a script as is, an argv as SSH joins it."""
    return built if isinstance(built, str) else shlex.join(built)


# -- filling the parameters ------------------------------------------------------------


def plain_for(name: str, annotation: str, work: Path) -> Any:
    if name in ("compression", "compressor"):
        return "gzip"
    if name == "kind":
        return "nftables"
    if name == "quiesce":  # every mode: tests/unit/sources/test_docker_volume_quiesce.py
        return "pause"
    if name == "body":
        return "true"
    if name == "script":
        return 'for a in "$@"; do printf "%s\\n" "$a"; done'
    if name == "working_dir":
        return str(work)
    if name == "compose":
        return ["docker", "compose"]
    if name == "labels_json":
        return json.dumps({"com.example": "plain"})
    if name == "urls":
        return ["http://127.0.0.1:1/plain", "https://127.0.0.1:1/plain"]
    if name == "cas":
        return None
    if name in ("patterns", "paths", "members", "names", "data_dirs", "files"):
        return [str(work / "plain.txt")]
    if "int" in annotation:
        return 5
    if "bool" in annotation:
        return True
    if annotation.startswith(("list", "tuple", "Sequence")):
        return ["plain"]
    return "plain"


def hostile_for(name: str, annotation: str, h: str, plain: Any) -> Any:
    """The hostile version of one parameter, or None when it takes no names (a key of
    a fixed table, a number, a flag, the body of code the caller writes)."""
    if name in ("compression", "compressor", "kind", "quiesce", "body", "script", "compose"):
        return None
    if name == "labels_json":
        return json.dumps({h: h, "plain": h})
    if name == "urls":
        return [f"http://127.0.0.1:1/{h}", f"https://127.0.0.1:1/{h}"]
    if name == "cas":
        return {f"https://127.0.0.1:1/{h}": h}
    if isinstance(plain, (bool, int)):
        return None
    if isinstance(plain, list):
        return [*plain, h]
    return h


def builders() -> list[tuple[str, Callable[..., Any]]]:
    found: list[tuple[str, Callable[..., Any]]] = []
    for modname in MODULES:
        mod = importlib.import_module(modname)
        for name, fn in inspect.getmembers(mod, inspect.isfunction):
            if fn.__module__ == modname and BUILDER_NAME.search(name):
                found.append((f"{modname.rsplit('.', 1)[1]}.{name}", fn))
    for modname, name in EXTRA:
        found.append(
            (f"{modname.rsplit('.', 1)[1]}.{name}", getattr(importlib.import_module(modname), name))
        )
    return found


BUILDERS = builders()


def calls(fn: Callable[..., Any], h: str, work: Path) -> list[tuple[str, str | list[str]]]:
    """(which parameter is hostile, the builder's output) for each parameter that takes
    names; one call with plain values for a builder that takes none."""
    sig = inspect.signature(fn)
    plain: dict[str, Any] = {}
    varargs: str | None = None
    for p in sig.parameters.values():
        if p.kind == p.VAR_POSITIONAL:
            varargs = p.name
            continue
        plain[p.name] = plain_for(p.name, str(p.annotation), work)
    out: list[tuple[str, str | list[str]]] = []
    for pname, value in plain.items():
        bad = hostile_for(pname, str(sig.parameters[pname].annotation), h, value)
        if bad is not None:
            out.append((pname, fn(**{**plain, pname: bad})))
    if varargs is not None:  # script_argv(script, *args): the args are the data
        out.append((f"*{varargs}", fn(*plain.values(), h, "plain")))
    if not out:
        out.append(("-", fn(**plain)))
    return out


def test_every_builder_is_covered() -> None:
    names = {n for n, _ in BUILDERS}
    for expected in (
        "postgres.wait_ready_script",
        "docker_volume.restore_script",
        "files.restore_script",
        "target.health_probe_argv",
        "host.script_argv",
    ):
        assert expected in names  # fmt: skip
    assert len(names) >= 30


@pytest.mark.parametrize(("name", "fn"), BUILDERS, ids=[n for n, _ in BUILDERS])
def test_hostile_names_stay_data(
    name: str, fn: Callable[..., Any], stubs: Path, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "plain.txt").write_text("x")
    marker = tmp_path / MARK
    for h in hostile_values(marker):
        for pname, built in calls(fn, h, work):
            text = command_text(built)
            syntax = subprocess.run(["/bin/bash", "-n", "-c", text], capture_output=True)
            assert syntax.returncode == 0, (name, pname, h, syntax.stderr)
            ran = run_bash(text, stubs, work)
            assert not marker.exists(), (
                f"{name}: {pname}={h!r} ran a command: {text!r}\n{ran.stderr.decode()[-500:]}"
            )


def test_the_harness_catches_an_unquoted_name(stubs: Path, tmp_path: Path) -> None:
    """The pattern the review found: a recorded name inside double quotes in an echo."""
    marker = tmp_path / MARK

    def broken(container: str) -> str:
        return f'echo "waiting for {container}"; docker exec {shlex.quote(container)} true'

    run_bash(broken(hostile_values(marker)[0]), stubs, tmp_path)
    assert marker.exists()


def test_the_stubs_run_what_docker_exec_is_given(stubs: Path, tmp_path: Path) -> None:
    """`docker exec C sh -c TEXT` runs TEXT, so a name spliced into the text a builder
    hands to a container is caught too."""
    marker = tmp_path / MARK
    run_bash(shlex.join(["docker", "exec", "-i", "c", "sh", "-c", f"echo x >{marker}"]),
             stubs, tmp_path)  # fmt: skip
    assert marker.exists()

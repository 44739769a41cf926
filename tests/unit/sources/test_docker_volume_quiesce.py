"""docker-volume `quiesce` (issue 18): "pause", "stop" or "none" around the tar.

The scripts run for real under bash against a fake `docker` that keeps each
container's state (running, paused, exited) in a file, so every guarantee of
the module docstring is exercised without a Docker Engine: only running,
unpaused containers are held; exactly those are undone on success, on error,
on SIGTERM and (by the setsid guard) on SIGKILL; a container somebody else
paused stays paused; the guard never acts after a clean end; names stay data.
Partial failures (a hold or an undo failing for one container, a container held by
somebody else between our inspect and our hold, a SIGKILL inside a hold command)
leave every container that is not ours alone, now and after the script's end.
An unchanged tree is referenced in `plan`, before anything is held.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_script_builders import hostile_values
from vkbackup.config import parse_config
from vkbackup.config.model import SourceConfig
from vkbackup.errors import ConfigError
from vkbackup.manifest import ObjectRecord
from vkbackup.sources.base import PlanContext, SourcePlan, StreamPlan, fingerprint_tag
from vkbackup.sources.docker_volume import (
    TREE_FP,
    DockerVolumeSource,
    parse_container_downtime,
    parse_downtime,
    quiesce_script,
    volume_tar_script,
)
from vkbackup.streams import Readable
from vkbackup.transport.base import Completed, Process, pipeline_argv

# -- a fake docker with state -------------------------------------------------------

FAKE_DOCKER = r"""#!/bin/bash
# each container's state in $DOCKER_STATE/<md5 of its name>: running | paused | exited
{ printf docker; printf ' %q' "$@"; printf '\n'; } >>"$DOCKER_LOG"
key() { printf %s "$1" | md5sum | cut -c1-32; }
cmd=$1; shift
rc=0
case $cmd in
  inspect)  # inspect -f TEMPLATE NAME
    f=$DOCKER_STATE/$(key "$3")
    [ -f "$f" ] || { echo "Error: No such object: $3" >&2; exit 1; }
    st=$(cat "$f")
    case $2 in
      *State.Status*) echo "$st";;
      '{{.State.Running}}') [ "$st" = exited ] && echo false || echo true;;
      *) r=true p=false
         [ "$st" = exited ] && r=false
         [ "$st" = paused ] && p=true
         echo "$r $p";;
    esac;;
  pause|unpause|start|stop)
    [ "$cmd" = stop ] && [ "$1" = -t ] && shift 2
    for c in "$@"; do
      k=$(key "$c")
      f=$DOCKER_STATE/$k
      # injected: somebody else holds C just before this command (race-CMD-KEY holds
      # the state they leave), it fails (fail-CMD-KEY; "once": only the first time),
      # or it takes a while after acting (slow-CMD-KEY holds the seconds)
      race=$DOCKER_STATE/race-$cmd-$k fail=$DOCKER_STATE/fail-$cmd-$k
      if [ -f "$race" ]; then cat "$race" >"$f"; rm -f "$race"; fi
      if [ -f "$fail" ]; then
        [ "$(cat "$fail")" = once ] && rm -f "$fail"
        echo "Error: $cmd $c failed" >&2; rc=1; continue
      fi
      st=$(cat "$f" 2>/dev/null || echo missing)
      case $cmd:$st in
        pause:running) echo paused >"$f";;
        unpause:paused|start:exited) echo running >"$f";;
        start:running) ;;
        stop:running|stop:paused) echo exited >"$f";;
        *) echo "Error: cannot $cmd $c: it is $st" >&2; rc=1;;
      esac
      [ -f "$DOCKER_STATE/slow-$cmd-$k" ] && sleep "$(cat "$DOCKER_STATE/slow-$cmd-$k")"
    done;;
esac
exit $rc
"""


@dataclass
class Host:
    """A directory standing for the host's Docker Engine, and a PATH with the fake."""

    root: Path

    def __post_init__(self) -> None:
        (self.root / "bin").mkdir()
        (self.root / "state").mkdir()
        fake = self.root / "bin" / "docker"
        fake.write_text(FAKE_DOCKER)
        fake.chmod(0o755)
        (self.root / "docker.log").write_text("")

    def _file(self, name: str) -> Path:
        return self.root / "state" / hashlib.md5(name.encode()).hexdigest()

    def set(self, name: str, state: str) -> None:
        self._file(name).write_text(state + "\n")

    def inject(self, kind: str, cmd: str, name: str, value: str = "") -> None:
        """race / fail / slow: see FAKE_DOCKER."""
        (self.root / "state" / f"{kind}-{cmd}-{self._file(name).name}").write_text(value)

    def state(self, name: str) -> str:
        return self._file(name).read_text().strip()

    def log(self) -> list[str]:
        return (self.root / "docker.log").read_text().splitlines()

    def env(self) -> dict[str, str]:
        (self.root / "tmp").mkdir(exist_ok=True)
        return {
            "TMPDIR": str(self.root / "tmp"),
            "PATH": f"{self.root / 'bin'}:/usr/bin:/bin",
            "DOCKER_STATE": str(self.root / "state"),
            "DOCKER_LOG": str(self.root / "docker.log"),
            "HOME": str(self.root),
        }

    def run(self, script: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            pipeline_argv(script), env=self.env(), capture_output=True, text=True, timeout=60
        )

    def start(self, script: str) -> subprocess.Popen[bytes]:
        out = (self.root / "out").open("wb")
        return subprocess.Popen(
            pipeline_argv(script), env=self.env(), stdout=out, stderr=out, stdin=subprocess.DEVNULL
        )

    def wait_for(self, name: str, state: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._file(name).exists() and self.state(name) == state:
                return
            time.sleep(0.05)
        raise AssertionError(f"{name} never became {state}: {self.state(name)}; {self.log()}")


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    h = Host(tmp_path)
    h.set("app", "running")
    h.set("held-by-someone", "paused")
    h.set("down", "exited")
    yield h
    pid_file = tmp_path / "sleep.pid"  # a body's background sleep, if a test left one
    if pid_file.exists():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


HOLD = {"pause": "paused", "stop": "exited"}
UNDO = {"pause": "unpause", "stop": "start"}
ALL = ["app", "held-by-someone", "down"]


def probe(h: Host) -> str:
    """A body that records, while it runs, the state of each container."""
    return "".join(
        f"docker inspect -f '{{{{.State.Status}}}}' {c} >/dev/null; "
        f"cp $DOCKER_STATE/{hashlib.md5(c.encode()).hexdigest()} {h.root}/during-{c}\n"
        for c in ALL
    )


def long_body(h: Host) -> str:
    """A body that lasts until it is interrupted (wait, unlike a foreground command,
    lets bash run its signal trap at once)."""
    return f"sleep 30 & echo $! >{h.root}/sleep.pid; wait $!\n"


# -- each mode, end to end on the fake ------------------------------------------------


@pytest.mark.parametrize("mode", ["pause", "stop"])
def test_only_running_unpaused_containers_are_held_and_only_they_are_undone(
    host: Host, mode: str
) -> None:
    cp = host.run(quiesce_script(ALL, probe(host), mode, 7))
    assert cp.returncode == 0, cp.stderr
    during = {c: (host.root / f"during-{c}").read_text().strip() for c in ALL}
    assert during == {"app": HOLD[mode], "held-by-someone": "paused", "down": "exited"}
    # afterwards: app runs again; the one somebody else paused is still paused; the
    # stopped one was never started
    assert [host.state(c) for c in ALL] == ["running", "paused", "exited"]
    held = [line for line in host.log() if not line.startswith("docker inspect")]
    hold = "docker stop -t 7 app" if mode == "stop" else "docker pause app"
    assert held == [hold, f"docker {UNDO[mode]} app"]
    assert set(parse_container_downtime(cp.stderr)) == {"app"}
    down = parse_downtime(cp.stderr)
    assert down is not None and down >= parse_container_downtime(cp.stderr)["app"]


def test_none_holds_nothing(host: Host) -> None:
    body = f"echo copied >{host.root}/copied\n"
    assert quiesce_script(ALL, body, "none") == body
    cp = host.run(quiesce_script(ALL, body, "none"))
    assert cp.returncode == 0 and (host.root / "copied").exists()
    assert host.log() == [] and parse_downtime(cp.stderr) is None
    assert parse_container_downtime(cp.stderr) == {}


def test_nothing_running_means_nothing_held_and_no_downtime(host: Host) -> None:
    cp = host.run(quiesce_script(["held-by-someone", "down", "gone"], "true", "pause"))
    assert cp.returncode == 0, cp.stderr
    assert all(line.startswith("docker inspect") for line in host.log())
    assert parse_downtime(cp.stderr) is None


@pytest.mark.parametrize("mode", ["pause", "stop"])
def test_a_failing_copy_still_undoes_and_keeps_its_status(host: Host, mode: str) -> None:
    cp = host.run(quiesce_script(ALL, "exit 3", mode))
    assert cp.returncode == 3
    assert [host.state(c) for c in ALL] == ["running", "paused", "exited"]
    assert set(parse_container_downtime(cp.stderr)) == {"app"}


@pytest.mark.parametrize("mode", ["pause", "stop"])
def test_sigterm_undoes_by_the_trap(host: Host, mode: str) -> None:
    proc = host.start(quiesce_script(ALL, long_body(host), mode))
    host.wait_for("app", HOLD[mode])
    time.sleep(0.2)  # into `wait`
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 130
    assert [host.state(c) for c in ALL] == ["running", "paused", "exited"]
    assert "VKBACKUP-DOWNTIME-CONTAINER-MS" in (host.root / "out").read_text()


@pytest.mark.parametrize("mode", ["pause", "stop"])
def test_sigkill_is_undone_by_the_guard(host: Host, mode: str) -> None:
    proc = host.start(quiesce_script(ALL, long_body(host), mode))
    host.wait_for("app", HOLD[mode])
    proc.kill()
    proc.wait(timeout=10)
    host.wait_for("app", "running", timeout=10)  # the guard polls every second
    assert host.state("held-by-someone") == "paused"  # the guard undoes only ours
    assert host.state("down") == "exited"
    guard = [line for line in host.log() if line.startswith(f"docker {UNDO[mode]}")]
    assert guard == [f"docker {UNDO[mode]} app"]


@pytest.mark.parametrize("mode", ["pause", "stop"])
def test_the_guard_does_nothing_after_a_clean_end(host: Host, mode: str) -> None:
    cp = host.run(quiesce_script(ALL, "true", mode))
    assert cp.returncode == 0, cp.stderr
    host.set("app", "paused")  # another run (or a person) holds it right after
    time.sleep(2.5)  # longer than the guard's poll
    assert host.state("app") == "paused"
    assert [line for line in host.log() if line.startswith(f"docker {UNDO[mode]}")] == [
        f"docker {UNDO[mode]} app"
    ]


@pytest.mark.parametrize("mode", ["pause", "stop"])
def test_hostile_container_names_stay_data_while_held(host: Host, mode: str) -> None:
    marker = host.root / "PWNED"
    for h in hostile_values(marker):
        host.set(h, "running")
        cp = host.run(quiesce_script([h, "app"], "true", mode))
        assert not marker.exists(), (mode, h, cp.stderr)
        assert cp.returncode == 0, (mode, h, cp.stderr)
        assert host.state(h) == "running" and host.state("app") == "running"
        # a name Docker would refuse never reaches the recorded downtime
        assert set(parse_container_downtime(cp.stderr)) <= {"app"}


# -- partial failures: only what is ours, only while it is ours ----------------------


def holds(h: Host, cmd: str) -> list[str]:
    return [line for line in h.log() if line.startswith(f"docker {cmd} ")]


def three(h: Host) -> list[str]:
    for c in ("a", "b", "c"):
        h.set(c, "running")
    return ["a", "b", "c"]


@pytest.mark.parametrize("mode", ["pause", "stop"])
def test_a_failed_hold_undoes_what_was_held_and_the_guard_stays_away(host: Host, mode: str) -> None:
    names = three(host)
    host.inject("fail", mode, "b")
    cp = host.run(quiesce_script(names, f"touch {host.root}/copied", mode))
    assert cp.returncode == 1 and f"could not {mode} b" in cp.stderr
    assert not (host.root / "copied").exists()  # no copy of a tree b may be writing
    assert [host.state(c) for c in names] == ["running"] * 3
    assert [line.split()[-1] for line in holds(host, mode)] == ["a", "b"]  # c: never
    assert holds(host, UNDO[mode]) == [f"docker {UNDO[mode]} a"]
    assert set(parse_container_downtime(cp.stderr)) == {"a"}
    host.set("a", HOLD[mode])  # another run holds a right after
    time.sleep(2.5)  # longer than the guard's poll
    assert host.state("a") == HOLD[mode] and len(holds(host, UNDO[mode])) == 1


@pytest.mark.parametrize("mode", ["pause", "stop"])
def test_a_container_somebody_else_holds_just_before_our_hold_stays_theirs(
    host: Host, mode: str
) -> None:
    names = three(host)
    host.inject("race", mode, "b", HOLD[mode])  # they pause b between inspect and pause
    body = f"cat $DOCKER_STATE/* >{host.root}/during 2>/dev/null || true"
    cp = host.run(quiesce_script(names, body, mode))
    assert cp.returncode == 0, cp.stderr
    assert [host.state(c) for c in names] == ["running", HOLD[mode], "running"]
    assert [line.split()[-1] for line in holds(host, UNDO[mode])] == ["a", "c"]
    assert set(parse_container_downtime(cp.stderr)) == {"a", "c"}
    time.sleep(2.5)
    assert host.state("b") == HOLD[mode] and len(holds(host, UNDO[mode])) == 2


def test_no_downtime_when_every_hold_found_the_container_held_already(host: Host) -> None:
    names = three(host)
    for c in names:
        host.inject("race", "pause", c, "paused")
    cp = host.run(quiesce_script(names, "true", "pause"))
    assert cp.returncode == 0, cp.stderr
    assert [host.state(c) for c in names] == ["paused"] * 3 and holds(host, "unpause") == []
    assert parse_downtime(cp.stderr) is None and parse_container_downtime(cp.stderr) == {}


@pytest.mark.parametrize("mode", ["pause", "stop"])
def test_a_failed_undo_is_retried_by_the_guard_for_that_container_alone(
    host: Host, mode: str
) -> None:
    names = three(host)
    host.inject("fail", UNDO[mode], "b", "once")
    cp = host.run(quiesce_script(names, "true", mode))
    assert cp.returncode == 1 and f"could not {UNDO[mode]} b" in cp.stderr
    assert [host.state(c) for c in names] == ["running", HOLD[mode], "running"]
    assert set(parse_container_downtime(cp.stderr)) == {"a", "c"}
    host.set("a", HOLD[mode])  # another run holds a meanwhile: not ours to undo
    host.wait_for("b", "running", timeout=10)  # the guard, after the script's end
    time.sleep(0.5)
    assert host.state("a") == HOLD[mode]
    assert [line.split()[-1] for line in holds(host, UNDO[mode])] == ["a", "b", "c", "b"]
    assert list((host.root / "tmp").iterdir()) == []  # the guard removed the state dir


@pytest.mark.parametrize("mode", ["pause", "stop"])
def test_an_undo_somebody_else_already_did_counts_as_done(host: Host, mode: str) -> None:
    names = three(host)
    # somebody releases b during the copy: our undo fails, Docker says it is released
    body = f"echo running >$DOCKER_STATE/{hashlib.md5(b'b').hexdigest()}"
    cp = host.run(quiesce_script(names, body, mode))
    assert cp.returncode == 0, cp.stderr
    assert [host.state(c) for c in names] == ["running"] * 3
    # (`docker start` of a running container succeeds: nothing to tell apart)
    done = {"a", "c"} if mode == "pause" else {"a", "b", "c"}
    assert set(parse_container_downtime(cp.stderr)) == done
    host.set("b", HOLD[mode])  # another run holds b: the guard was ended, stays away
    time.sleep(2.5)
    assert host.state("b") == HOLD[mode] and len(holds(host, UNDO[mode])) == 3
    assert list((host.root / "tmp").iterdir()) == []


def test_the_state_is_kept_in_a_private_directory_removed_at_the_end(host: Host) -> None:
    body = (
        f'stat -c %a "$qdir" >{host.root}/mode; '
        f'tr "\\0" "\\n" <"$qdir/held" >{host.root}/held; ls "$qdir" >{host.root}/files'
    )
    cp = host.run(quiesce_script(["app", "held-by-someone"], body, "pause"))
    assert cp.returncode == 0, cp.stderr
    assert (host.root / "mode").read_text().strip() == "700"
    assert (host.root / "held").read_text().split() == ["app"]  # ours only
    assert list((host.root / "tmp").iterdir()) == []


@pytest.mark.parametrize("mode", ["pause", "stop"])
def test_sigkill_during_a_hold_command_is_undone_by_the_guard(host: Host, mode: str) -> None:
    names = three(host)
    host.inject("slow", mode, "b", "2")  # b is held, its command has not returned yet
    proc = host.start(quiesce_script(names, long_body(host), mode))
    host.wait_for("b", HOLD[mode])
    proc.kill()
    proc.wait(timeout=10)
    host.wait_for("a", "running", timeout=10)
    host.wait_for("b", "running", timeout=10)
    assert host.state("c") == "running"  # never held
    assert [line.split()[-1] for line in holds(host, UNDO[mode])] == ["a", "b"]


def test_a_signal_during_a_hold_waits_until_it_is_recorded(host: Host) -> None:
    names = three(host)
    host.inject("slow", "pause", "b", "1")
    proc = host.start(quiesce_script(names, long_body(host), "pause"))
    host.wait_for("b", "paused")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 130
    assert [host.state(c) for c in names] == ["running"] * 3
    assert [line.split()[-1] for line in holds(host, "pause")] == ["a", "b"]
    assert [line.split()[-1] for line in holds(host, "unpause")] == ["a", "b"]
    out = (host.root / "out").read_text()
    assert set(parse_container_downtime(out)) == {"a", "b"}


# -- the script text --------------------------------------------------------------


def test_script_text_of_each_mode() -> None:
    pause = volume_tar_script("vol", ["app"], "zstd", "20261130T030000Z-aaaa")
    assert "docker pause" in pause and "unpause" in pause and "docker stop" not in pause
    stop = volume_tar_script("vol", ["app"], "zstd", "20261130T030000Z-aaaa", quiesce="stop")
    # no stop_timeout: no -t, so Docker uses the container's own stop timeout
    assert 'docker stop "$c"' in stop and "docker start" in stop and "docker stop -t" not in stop
    assert 'vkbackup-guard $$ "$qdir" start' in stop and "-t 60" not in stop
    ten = volume_tar_script(
        "vol", ["app"], "zstd", "20261130T030000Z-aaaa", quiesce="stop", stop_timeout=10
    )
    assert 'docker stop -t 10 "$c"' in ten
    quick = volume_tar_script(
        "vol", ["app"], "zstd", "20261130T030000Z-aaaa", quiesce="stop", stop_timeout=0
    )
    assert 'docker stop -t 0 "$c"' in quick
    none = volume_tar_script("vol", ["app"], "zstd", "20261130T030000Z-aaaa", quiesce="none")
    assert "docker pause" not in none and "docker stop" not in none and "trap" not in none
    assert "tar -cf -" in none
    with pytest.raises(ValueError):
        quiesce_script(["app"], "true", "freeze")


def test_per_container_downtime_is_parsed_from_the_stderr_tail() -> None:
    tail = (
        "tar: ./log: file changed as we read it\n"
        "VKBACKUP-DOWNTIME-CONTAINER-MS 1250 chatwoot-chatwoot-1\n"
        "VKBACKUP-DOWNTIME-CONTAINER-MS 1310 chatwoot-chatwoot-sidekiq-1\n"
        "VKBACKUP-DOWNTIME-CONTAINER-MS 5 bad\x1b[2Jname\n"
        "VKBACKUP-DOWNTIME-MS 1312\n"
    )
    assert parse_container_downtime(tail) == {
        "chatwoot-chatwoot-1": 1.25,
        "chatwoot-chatwoot-sidekiq-1": 1.31,
    }
    assert parse_downtime(tail) == 1.312


# -- plan: the tree fingerprint is compared before anything is held -----------------


@dataclass
class FakeTransport:
    """Answers the source's small queries; records every argv it was asked to run."""

    tree: str
    calls: list[list[str]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return "prod"

    def run(
        self, argv: list[str], *, input: bytes = b"", check: bool = True, timeout: Any = None
    ) -> Completed:
        self.calls.append(argv)
        text = " ".join(argv)
        if "du -sb" in text:
            return Completed(argv, 0, b"8388608\n", "")
        if argv[:3] == ["docker", "ps", "-a"]:
            return Completed(argv, 0, b"app\n", "")
        if TREE_FP.strip() in text:
            return Completed(argv, 0, self.tree.encode() + b"\n", "")
        if "{{json .Labels}}" in text:
            return Completed(argv, 0, b"null\n", "")
        return Completed(argv, 0, b"", "")  # test -f SNAR: present

    def start(self, argv: list[str]) -> Process:
        raise AssertionError("plan streams nothing")

    def feed(self, argv: list[str], src: Readable) -> Completed:
        raise AssertionError("plan feeds nothing")

    def close(self) -> None:
        pass


def volume_cfg(**kw: Any) -> SourceConfig:
    return SourceConfig(
        type="docker-volume", name="data", where="hosts.prod.sources[0]", volume="vol", **kw
    )


def chain_with(tree: str) -> tuple[ObjectRecord, ...]:
    return (
        ObjectRecord(
            key="data/prod/20261129T030000Z-aaaa/data/volume-0.tar.zst.age", source="data",
            name="volume-0.tar.zst", role="tar", size=10, sha256="0" * 64,
            compression="zstd", chain=0, fingerprint=fingerprint_tag(f"volume-tree:vol:{tree}"),
            uploaded_in="20261129T030000Z-aaaa",
        ),
    )  # fmt: skip


def plan_of(cfg: SourceConfig, t: FakeTransport, previous_tree: str) -> SourcePlan:
    ctx = PlanContext(
        "20261130T030000Z-bbbb", compressor="zstd", previous=chain_with(previous_tree)
    )
    return DockerVolumeSource(cfg).plan(t, ctx)


HOLDING = ("pause", "unpause", "stop", "start")


@pytest.mark.parametrize("mode", ["pause", "stop", "none"])
def test_an_unchanged_tree_is_referenced_before_anything_is_held(mode: str) -> None:
    """With pause nothing restarts, so an app that writes on start leaves the tree as
    it was, and the next night's plan references the chain without holding anything."""
    t = FakeTransport(tree="f" * 64)
    kw: dict[str, Any] = {"quiesce": mode}
    plan = plan_of(volume_cfg(**kw), t, "f" * 64)
    assert plan.streams == [] and plan.meta["chain"]["unchanged"] is True
    assert plan.holds == ()  # nothing streams, nothing is held: no other source waits
    assert [o.chain for o in plan.reuse] == [0]
    for argv in t.calls:  # the only commands that ran: queries
        assert not any(w in HOLDING for w in argv[:2]), argv
        assert "docker pause" not in " ".join(argv) and "docker stop" not in " ".join(argv)


@pytest.mark.parametrize(
    ("mode", "timeout", "expect", "absent"),
    [
        ("pause", None, "docker pause ", "docker stop"),
        ("stop", 3, 'docker stop -t 3 "$c"', "docker pause"),
        ("stop", None, 'docker stop "$c"', "docker stop -t"),
        ("none", None, "tar -cf -", "trap undo"),
    ],
)
def test_a_changed_tree_is_copied_as_quiesce_says(
    mode: str, timeout: int | None, expect: str, absent: str
) -> None:
    t = FakeTransport(tree="e" * 64)
    plan = plan_of(volume_cfg(quiesce=mode, stop_timeout=timeout), t, "f" * 64)
    (stream,) = plan.streams
    script = stream.argv[-1]
    assert expect in script and absent not in script
    assert stream.fingerprint == "volume-tree:vol:" + "e" * 64
    assert plan.meta["quiesce"] == mode
    assert plan.meta["stopped"] == ([] if mode == "none" else ["app"])
    # what the run serializes on (actions.snapshot.HoldLocks): the containers it holds
    assert plan.holds == (() if mode == "none" else ("app",))


def test_after_stream_records_the_total_and_each_container() -> None:
    src = DockerVolumeSource(volume_cfg())
    plan = SourcePlan(streams=[], meta={})
    stream = StreamPlan(name="volume-0.tar.zst", role="tar", argv=[])
    tail = "VKBACKUP-DOWNTIME-CONTAINER-MS 420 app\nVKBACKUP-DOWNTIME-MS 433\n"
    src.after_stream(FakeTransport(tree=""), stream, plan, tail)
    assert plan.meta["downtime_seconds"] == 0.433
    assert plan.meta["downtime"] == {"app": 0.42}


# -- config ------------------------------------------------------------------------


def config_with(**source: Any) -> dict[str, Any]:
    return {
        "hosts": {
            "prod": {
                "address": "127.0.0.1",
                "sources": [{"type": "docker-volume", "name": "data", "volume": "vol", **source}],
            }
        }
    }


def source_of(**source: Any) -> SourceConfig:
    return parse_config(config_with(**source), "t.toml").hosts["prod"].sources[0]


def test_quiesce_defaults_to_pause_and_stop_timeout_to_the_containers_own() -> None:
    s = source_of()
    assert (s.quiesce, s.stop_timeout) == ("pause", None)
    assert source_of(quiesce="stop").stop_timeout is None
    assert source_of(quiesce="stop", stop_timeout=10).stop_timeout == 10
    s = source_of(quiesce="stop", stop_timeout=2)
    assert (s.quiesce, s.stop_timeout) == ("stop", 2)
    assert source_of(quiesce="none").quiesce == "none"
    assert source_of(quiesce="none", stop=[]).stop == ()


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"quiesce": "freeze"}, "hosts.prod.sources[0].quiesce: must be one of 'pause'"),
        ({"quiesce": 1}, "hosts.prod.sources[0].quiesce: must be a string"),
        (
            {"quiesce": "stop", "stop_timeout": -1},
            "hosts.prod.sources[0].stop_timeout: must be between 0 and 3600",
        ),
        (
            {"quiesce": "stop", "stop_timeout": "10s"},
            "hosts.prod.sources[0].stop_timeout: must be an integer",
        ),
        ({"stop_timeout": 5}, "hosts.prod.sources[0].stop_timeout: only applies with quiesce"),
        (
            {"quiesce": "none", "stop": ["app"]},
            "hosts.prod.sources[0].stop: lists containers to hold still",
        ),
    ],
)
def test_bad_quiesce_settings_name_their_key(source: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        source_of(**source)
    assert message in str(exc.value)


@pytest.mark.parametrize("key", ["quiesce", "stop_timeout"])
def test_quiesce_keys_are_refused_on_other_source_types(key: str) -> None:
    doc = config_with()
    doc["hosts"]["prod"]["sources"] = [
        {"type": "files", "name": "etc", "paths": ["/etc/hosts"], key: "stop"}
    ]
    with pytest.raises(ConfigError) as exc:
        parse_config(doc, "t.toml")
    assert f"hosts.prod.sources[0].{key}: only applies to docker-volume sources" in str(exc.value)

"""Hooks: the operator's own commands around a snapshot or a restore of a host.

    [hosts.prod.hooks]
    before_snapshot = ["docker exec chatwoot-rails-1 bin/rails maintenance:on"]
    after_snapshot  = ["docker exec chatwoot-rails-1 bin/rails maintenance:off"]
    after_restore   = ["curl -fsS -o /dev/null http://127.0.0.1:3000/warm"]
    on_failure      = ["/usr/local/bin/page-oncall"]
    timeout         = "10m"          # each command; seconds or "90s", "10m", "1h"

What runs where
---------------
* ``before_snapshot``, ``after_snapshot``: on the host being snapshotted, over
  the snapshot's own SSH connection (the `Transport`), each command as
  ``timeout -k 10 SECONDS bash -c COMMAND`` (`remote_argv`): the host kills a
  command that runs past ``hooks.timeout``, with everything it started, even
  when the connection is gone; the connection gives up 30 s later.
* ``before_restore``, ``after_restore``: on the restore **target** (the new
  server), the same way (the after ones on a new connection: the restore's own
  may be gone by then, after the firewall step). They are taken from
  ``[hosts.NAME.hooks]`` of the host whose snapshot is restored, not from the
  target's entry: the target is usually a bare address on the command line
  with no config of its own, and the hooks belong to the application that is
  being brought back (what it needs before and after its data is in place),
  not to a machine. A snapshot
  whose host has no ``[hosts.NAME]`` in this config runs no restore hooks.
  A drill runs none either: it rebuilds on a scratch host, where a hook meant
  for the real new server (warm a cache, announce the switch) must not run.
* ``on_failure``: on the backup machine (locally, ``bash -c COMMAND``, the same
  timeout), with vkbackup's environment minus passphrases
  (``$VKBACKUP_PASSPHRASE``, the host's ``key_passphrase_env``), plus
  ``VKBACKUP_HOST`` (the configured host name), ``VKBACKUP_COMMAND``
  (``snapshot`` or ``restore``), ``VKBACKUP_STATUS`` (``failed``, ``partial``
  or ``interrupted``), ``VKBACKUP_ERROR`` (the error, secrets masked),
  ``VKBACKUP_SNAPSHOT`` (the snapshot id, only when that snapshot exists: a
  listed snapshot, or the one being restored) and, for a restore,
  ``VKBACKUP_TARGET`` (``user@address:port``).

Order
-----
snapshot::

    config checked -> lock taken -> before_snapshot[0..] -> host facts -> sources
    (containers stopped and started again inside each volume source) -> manifest
    written -> after_snapshot[0..] -> leftovers deleted -> lock released -> on_failure

restore::

    target connected -> before_restore[0..] -> resume state read, preflight,
    steps, health -> after_restore[0..] -> on_failure

The before hooks run inside the lock so two runs never interleave their
hooks, and before anything that changes the host or the storage. A
``--dry-run`` runs no hook.

Failure semantics
-----------------
* A ``before_*`` command that fails (non-zero exit, killed, timed out, or its
  connection lost) stops the run at once: the later before commands, the
  after commands and the run itself do not run. Nothing was stopped, uploaded
  or listed (the lock is released); for a restore nothing was written on the
  target. The error (`HookError`, exit 1) names the host, the hook's key path
  and index (``hosts.prod.hooks.before_snapshot[1]``), the exit status and the
  tail of its stderr. Undoing what the earlier before commands did is the job
  of ``on_failure``, which runs.
* ``after_*`` commands run whenever every before command passed, whatever
  became of the run: a failed source, a failed step, an error or Ctrl-C. They
  run after the sources ended, so the containers a snapshot stopped have been
  started again. Each runs even if an earlier one failed (they are usually
  independent undo steps: maintenance off, cache warm). A failure makes the
  run **partial** (exit 3; monitoring pings "failure") unless it had already
  failed. For a snapshot, the manifest is not changed: it is written (signed)
  before the after hooks run and describes data that is whole, so the
  snapshot stays listed as complete and ``restore latest`` still takes it; the
  run result says ``partial`` and lists the hook errors (``hook_errors``).
* ``on_failure`` runs once, last, for every run that did not end ok (failed,
  partial or interrupted, raised errors such as a held lock included; a
  ``--only`` snapshot that skipped sources but lost none is ok).
  Each command runs even if an earlier one failed; its own failure is a
  warning and never changes the exit code.

Output
------
Every command's exit status and duration are logged at info, with the last
lines of its stdout and stderr, through the vkbackup logger: masked like every
other logged text (values registered with `vkbackup.logs.register_secret`
become ``***``) and with control characters shown as escapes. The command
text itself is logged only at debug (-v), since a command may carry a token;
errors name a command by its key path, never by its text.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from vkbackup.config.model import HooksConfig
from vkbackup.errors import HookError, TransportError, VkError
from vkbackup.logs import get_logger, redact
from vkbackup.textsafe import printable
from vkbackup.transport.base import Transport, describe_status

log = get_logger("hooks")

#: seconds between the host's `timeout` sending TERM and KILL
KILL_AFTER = 10
#: the connection waits this much longer than the host's own timeout
TRANSPORT_GRACE = 30
#: lines of a command's stdout and stderr that are logged (and kept in errors)
TAIL_LINES = 20
TAIL_LINE_CHARS = 500
#: VKBACKUP_ERROR is cut to this many characters
ERROR_ENV_CHARS = 4000
#: environment variables never passed to on_failure
SECRET_ENV = ("VKBACKUP_PASSPHRASE",)

VERBS = ("snapshot", "restore")


@dataclass(frozen=True)
class Hook:
    """One configured command: *key* ("before_snapshot"), its *index* in that list,
    the *command* text and its key path *where* ("hosts.prod.hooks.before_snapshot[0]")."""

    key: str
    index: int
    command: str
    where: str


@dataclass(frozen=True)
class HookPlan:
    """The hooks of one run of *verb* on *host*, in the order they run."""

    host: str
    verb: str
    before: tuple[Hook, ...]
    after: tuple[Hook, ...]
    on_failure: tuple[Hook, ...]
    timeout: float


@dataclass(frozen=True)
class LocalResult:
    status: int  # negative: killed by that signal
    stdout: bytes
    stderr: bytes
    timed_out: bool = False


LocalRun = Callable[[list[str], Mapping[str, str], float], LocalResult]


def hooks_of(host: str, hooks: HooksConfig, key: str) -> tuple[Hook, ...]:
    """Given a host name, its hooks config and a key ("after_restore"), return that
    list's hooks with their key paths (pure)."""
    commands: tuple[str, ...] = getattr(hooks, key)
    return tuple(
        Hook(key, i, cmd, f"hosts.{host}.hooks.{key}[{i}]") for i, cmd in enumerate(commands)
    )


def plan_hooks(host: str, hooks: HooksConfig, verb: str) -> HookPlan:
    """Given a host name, its hooks config and "snapshot" or "restore", return the
    hooks of that run in order (pure). Raise ValueError for another verb."""
    if verb not in VERBS:
        raise ValueError(f"hooks: unknown verb {verb!r}")
    return HookPlan(
        host=host,
        verb=verb,
        before=hooks_of(host, hooks, f"before_{verb}"),
        after=hooks_of(host, hooks, f"after_{verb}"),
        on_failure=hooks_of(host, hooks, "on_failure"),
        timeout=hooks.timeout,
    )


def remote_argv(command: str, timeout: float) -> list[str]:
    """Given a hook's command and its timeout in seconds, return the argv run on the
    host: bash under coreutils' `timeout`, which kills it (and what it started)
    on the host itself when it runs too long."""
    return ["timeout", "-k", str(KILL_AFTER), f"{max(1, round(timeout))}s", "bash", "-c", command]


def local_argv(command: str) -> list[str]:
    """Given an on_failure command, return the argv run on the backup machine."""
    return ["bash", "-c", command]


def failure_env(
    host: str,
    verb: str,
    status: str,
    error: str,
    snapshot: str | None = None,
    target: str | None = None,
) -> dict[str, str]:
    """Given what failed, return the VKBACKUP_* variables on_failure receives (pure;
    the error is secret-masked and cut to ERROR_ENV_CHARS)."""
    text = redact(error).replace("\x00", "")
    if len(text) > ERROR_ENV_CHARS:
        text = text[: ERROR_ENV_CHARS - 4] + " ..."
    env = {
        "VKBACKUP_HOST": host,
        "VKBACKUP_COMMAND": verb,
        "VKBACKUP_STATUS": status,
        "VKBACKUP_ERROR": text,
    }
    if snapshot:
        env["VKBACKUP_SNAPSHOT"] = snapshot
    if target:
        env["VKBACKUP_TARGET"] = target
    return env


def tail_lines(data: bytes | str) -> list[str]:
    """Given a command's output, return its last TAIL_LINES non-empty lines, each
    cut to TAIL_LINE_CHARS and made printable (pure; not yet secret-masked)."""
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    lines = [ln.rstrip() for ln in text.splitlines() if ln.strip()][-TAIL_LINES:]
    return [
        printable(ln[:TAIL_LINE_CHARS] + (" ..." if len(ln) > TAIL_LINE_CHARS else ""))
        for ln in lines
    ]


def run_local_command(argv: list[str], env: Mapping[str, str], timeout: float) -> LocalResult:
    """Run *argv* on this machine with *env*, no stdin, in its own process group;
    after *timeout* seconds kill the group. Return its status and output."""
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env),
            start_new_session=True,
        )
    except OSError as e:
        return LocalResult(127, b"", f"cannot start: {e.strerror or e}".encode())
    try:
        out, err = proc.communicate(timeout=timeout)
        return LocalResult(proc.returncode, out, err)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return LocalResult(proc.returncode, out, err, timed_out=True)
    except BaseException:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise


def _status_text(status: int, timed_out: bool, timeout: float) -> str:
    if timed_out:
        return f"did not finish within hooks.timeout ({timeout:g}s) and was killed"
    if status == 124:
        return (
            "exited with status 124 (what `timeout` returns when the command ran past "
            f"hooks.timeout, {timeout:g}s)"
        )
    return describe_status(status)


class HookRunner:
    """Runs one run's hooks (see the module docstring): the before and after lists
    on a Transport, on_failure through *run_local* (a fake in unit tests)."""

    def __init__(
        self,
        host: str,
        hooks: HooksConfig,
        verb: str,
        *,
        run_local: LocalRun = run_local_command,
        drop_env: Sequence[str] = (),
    ) -> None:
        self.plan = plan_hooks(host, hooks, verb)
        self.run_local = run_local
        self.drop_env = {*SECRET_ENV, *drop_env}

    @property
    def has_after(self) -> bool:
        return bool(self.plan.after)

    def _log_output(self, hook: Hook, stdout: bytes | str, stderr: bytes | str) -> list[str]:
        """Log the tails of a command's output at info; return stderr's tail lines."""
        err = tail_lines(stderr)
        for name, lines in (("stdout", tail_lines(stdout)), ("stderr", err)):
            if lines:
                log.info("hook %s %s:\n    %s", hook.where, name, "\n    ".join(lines))
        return err

    def _remote(self, t: Transport, hook: Hook) -> None:
        """Run one hook on *t*; raise HookError if it fails."""
        timeout = self.plan.timeout
        log.info("hook %s: running on %s", hook.where, t.name)
        log.debug("hook %s: %s", hook.where, hook.command)
        t0 = time.monotonic()
        try:
            done = t.run(
                remote_argv(hook.command, timeout),
                check=False,
                timeout=timeout + KILL_AFTER + TRANSPORT_GRACE,
            )
        except TransportError as e:
            raise HookError(
                redact(f"{self.plan.host}: hook {hook.where} could not run on {t.name}: {e}"),
                where=hook.where,
            ) from None
        seconds = time.monotonic() - t0
        err = self._log_output(hook, done.stdout, done.stderr)
        if done.status == 0:
            log.info("hook %s: ok in %.1fs", hook.where, seconds)
            return
        what = _status_text(done.status, False, timeout)
        log.info("hook %s: %s after %.1fs", hook.where, what, seconds)
        msg = f"{self.plan.host}: hook {hook.where} {what} (on {t.name})"
        if err:
            msg += "\n  stderr (last lines):\n    " + "\n    ".join(err)
        raise HookError(
            redact(msg), where=hook.where, exit_status=done.status, stderr_tail="\n".join(err)
        )

    def before(self, t: Transport) -> None:
        """Run the before hooks on *t* in order. Raise HookError at the first that
        fails (the later ones do not run)."""
        verb = self.plan.verb
        for hook in self.plan.before:
            try:
                self._remote(t, hook)
            except HookError as e:
                nothing = (
                    "nothing was stopped or written"
                    if verb == "snapshot"
                    else "nothing was written on the target"
                )
                e.hint = f"the {verb} did not start ({nothing}); fix the hook or remove it"
                raise

    def after(self, t: Transport) -> list[HookError]:
        """Run every after hook on *t*, even after one failed. Return the failures
        (each logged as an error)."""
        errors: list[HookError] = []
        for hook in self.plan.after:
            try:
                self._remote(t, hook)
            except HookError as e:
                log.error("%s", e)
                errors.append(e)
        return errors

    def after_on(self, connect: Callable[[], Transport]) -> list[str]:
        """Open a connection with *connect* (the run's own may be gone: a cut, the
        restore's firewall step), run every after hook on it (`after`) and close it.
        Return the failures as text, a failed connect included (`unreachable`)."""
        try:
            t = connect()
        except VkError as e:
            return [str(err) for err in self.unreachable(e)]
        try:
            return [str(err) for err in self.after(t)]
        finally:
            t.close()

    def unreachable(self, error: Exception) -> list[HookError]:
        """The failure of the after hooks when no connection to run them on could
        be opened (*error* says why), logged as an error."""
        if not self.plan.after:
            return []
        err = HookError(
            redact(f"{self.plan.host}: the after hooks could not run: {error}"),
            where=self.plan.after[0].where,
        )
        log.error("%s", err)
        return [err]

    def on_failure(
        self,
        status: str,
        error: str,
        *,
        snapshot: str | None = None,
        target: str | None = None,
    ) -> None:
        """Run every on_failure command on this machine with the failure in its
        environment (`failure_env`). Never raise: a failing command is a warning."""
        if not self.plan.on_failure:
            return
        env = {k: v for k, v in os.environ.items() if k not in self.drop_env}
        env.update(failure_env(self.plan.host, self.plan.verb, status, error, snapshot, target))
        for hook in self.plan.on_failure:
            log.info("hook %s: running on this machine", hook.where)
            log.debug("hook %s: %s", hook.where, hook.command)
            t0 = time.monotonic()
            res = self.run_local(local_argv(hook.command), env, self.plan.timeout)
            self._log_output(hook, res.stdout, res.stderr)
            seconds = time.monotonic() - t0
            if res.status == 0 and not res.timed_out:
                log.info("hook %s: ok in %.1fs", hook.where, seconds)
            else:
                what = _status_text(res.status, res.timed_out, self.plan.timeout)
                log.warning("hook %s %s after %.1fs", hook.where, what, seconds)

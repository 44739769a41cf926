"""Test-only: see every file a Python process writes, including those it deletes.

Put this directory on PYTHONPATH and set VKWATCH_DIR to an empty directory: the
interpreter imports this module as it starts (`site` imports `sitecustomize`),
before any of the program's own code, and it installs an audit hook (PEP 578):

- every path opened for writing is recorded (the "open" event, raised by
  builtins.open, io.open, os.open and so pathlib, tempfile.mkstemp and
  shutil.copyfile: flags with O_WRONLY, O_RDWR, O_CREAT, O_TRUNC or O_APPEND);
- a file's content is copied into VKWATCH_DIR BEFORE it is destroyed: removed
  ("os.remove": os.remove, os.unlink, Path.unlink), renamed away or renamed
  over ("os.rename": os.rename, os.replace, Path.rename/replace, shutil.move),
  truncated ("os.truncate": os.truncate, os.ftruncate; and an "open" with
  O_TRUNC of a path written earlier in the run), or below a tree that
  shutil.rmtree removes ("shutil.rmtree", walked first). A removed or
  renamed-over file's inode is also held open read-only, and copied again at
  exit: what is written after the unlink (the unlink-while-open idiom) is seen;
- at exit (atexit, registered before anything else, so it runs last) every
  recorded path still present and every held inode is copied;
- what it cannot see is logged, so the test can refuse it: anonymous files
  (O_TMPFILE, as tempfile.TemporaryFile makes them: no name, never copied),
  child processes (subprocess, fork, exec, posix_spawn, os.system: a child
  that is not Python with this hook on is not watched), and its own errors.

It writes only into VKWATCH_DIR: events-<pid>.jsonl (one JSON object a line)
and the copies, named <pid>-<n>-<reason>-<file name>. Without VKWATCH_DIR it
does nothing.

Blind spots, by construction: native code calling open(2) itself (a C
extension writing a file; vkbackup's are OpenSSL, cffi, zstd: none writes
files); a descriptor the process did not open by path (inherited, received
over a socket); a path relative to a dir_fd (the "open" event does not carry
dir_fd); and os._exit or a kill by signal, which skip atexit (the test checks
for the "exit" event).
"""

from __future__ import annotations

import atexit
import json
import os
import stat
import sys
import threading
from typing import Any

CHUNK = 1024 * 1024
MAX_COPY = 256 * 1024 * 1024
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
O_TMPFILE = getattr(os, "O_TMPFILE", 0)
CHILD_EVENTS = frozenset(
    {
        "subprocess.Popen",
        "os.fork",
        "os.forkpty",
        "os.exec",
        "os.posix_spawn",
        "os.spawn",
        "os.system",
        "pty.spawn",
    }
)
EVENTS = frozenset({"open", "os.remove", "os.rename", "os.truncate", "shutil.rmtree", "os.link"})
EVENTS |= CHILD_EVENTS


class Watch:
    """The hook's state: what was written, what is held, where copies go."""

    def __init__(self, out: str) -> None:
        self.out = os.path.realpath(out)
        self.pid = os.getpid()
        self.lock = threading.RLock()
        self.local = threading.local()
        self.written: dict[str, None] = {}  # ordered set of absolute paths
        self.held: list[tuple[str, int]] = []
        self.n = 0
        self.log_fd = os.open(
            os.path.join(self.out, f"events-{self.pid}.jsonl"),
            os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
            0o600,
        )
        self.log({"event": "start", "argv": list(sys.argv), "cwd": os.getcwd()})

    # -- plumbing ------------------------------------------------------------------

    def log(self, doc: dict[str, Any]) -> None:
        os.write(self.log_fd, (json.dumps({"pid": os.getpid(), **doc}) + "\n").encode())

    def mine(self, path: str) -> bool:
        return path == self.out or path.startswith(self.out + os.sep)

    @staticmethod
    def fd_path(fd: object) -> str | None:
        if not isinstance(fd, int) or fd < 0:
            return None
        try:
            return os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return None

    def path_of(self, p: object, dir_fd: object = None) -> str | None:
        """The absolute path an event names (an int is a descriptor)."""
        if isinstance(p, int):
            return self.fd_path(p)
        try:
            s = os.fsdecode(os.fspath(p))  # type: ignore[call-overload]
        except TypeError:
            return None
        if not os.path.isabs(s):
            base = self.fd_path(dir_fd) if dir_fd not in (None, -1) else os.getcwd()
            if base is None:
                return None
            s = os.path.join(base, s)
        return os.path.normpath(s)

    def copy(self, reason: str, path: str, fd: int | None = None) -> None:
        """Copy a regular file's content now: from *fd* (held or the process's own,
        reopened through /proc so a write-only one reads too) or else from *path*."""
        flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK
        try:
            if fd is not None:  # /proc/self/fd/N is a link by design: follow it
                rfd = os.open(f"/proc/self/fd/{fd}", flags)
            else:
                rfd = os.open(path, flags | os.O_NOFOLLOW)
        except OSError:
            return
        try:
            if not stat.S_ISREG(os.fstat(rfd).st_mode):
                return
            self.n += 1
            name = f"{self.pid}-{self.n:05d}-{reason}-{os.path.basename(path)[:80]}"
            wfd = os.open(
                os.path.join(self.out, name),
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                0o600,
            )
            size = 0
            try:
                while size < MAX_COPY:
                    data = os.pread(rfd, min(CHUNK, MAX_COPY - size), size)
                    if not data:
                        break
                    os.write(wfd, data)
                    size += len(data)
            finally:
                os.close(wfd)
            capped = size >= MAX_COPY
            self.log(
                {"event": "capture", "reason": reason, "path": path, "copy": name,
                 "size": size, "capped": capped}
            )  # fmt: skip
        finally:
            os.close(rfd)

    def destroyed(self, reason: str, path: str | None, hold: bool = True) -> None:
        """*path* is about to be removed, renamed away or over: copy it, hold its inode."""
        if path is None or self.mine(path):
            return
        try:
            if not stat.S_ISREG(os.lstat(path).st_mode):
                return
        except OSError:
            return
        self.copy(reason, path)
        if hold:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOFOLLOW)
            except OSError:
                return
            self.held.append((path, fd))

    def wrote(self, path: str) -> None:
        if path not in self.written:
            self.written[path] = None
            self.log({"event": "write-open", "path": path})

    # -- the hook ------------------------------------------------------------------

    def hook(self, event: str, args: tuple[Any, ...]) -> None:
        if event not in EVENTS:
            return
        if event == "open" and not (isinstance(args[2], int) and args[2] & WRITE_FLAGS):
            return  # the common case: reading (imports, config, keys)
        if getattr(self.local, "busy", False):
            return  # the watch's own files
        self.local.busy = True
        try:
            with self.lock:
                self.handle(event, args)
        except Exception as e:  # never break the program; the test refuses these
            self.log({"event": "watch-error", "on": event, "error": repr(e)})
        finally:
            self.local.busy = False

    def handle(self, event: str, args: tuple[Any, ...]) -> None:
        if event == "open":
            if isinstance(args[0], int):
                return
            p = self.path_of(args[0])
            if p is None or self.mine(p):
                return
            flags = args[2]
            if O_TMPFILE and flags & O_TMPFILE == O_TMPFILE:
                self.log({"event": "anonymous", "dir": p})
                return
            if flags & os.O_TRUNC and p in self.written:
                self.copy("truncate", p)
            self.wrote(p)
        elif event == "os.remove":
            self.destroyed("remove", self.path_of(args[0], args[1]))
        elif event == "os.rename":
            src, dst = self.path_of(args[0], args[2]), self.path_of(args[1], args[3])
            self.log({"event": "rename", "src": src, "dst": dst})
            # the source keeps a name (dst): no need to hold it; the old dst loses its last
            self.destroyed("rename-from", src, hold=False)
            self.destroyed("rename-over", dst)
            if dst is not None and not self.mine(dst):
                self.wrote(dst)
        elif event == "os.truncate":
            p = self.path_of(args[0])
            if p is not None and not self.mine(p):
                self.copy("truncate", p, fd=args[0] if isinstance(args[0], int) else None)
        elif event == "shutil.rmtree":
            top = self.path_of(args[0], args[1])
            if top is None or self.mine(top):
                return
            for dirpath, _dirs, files in os.walk(top):
                for name in files:
                    self.destroyed("rmtree", os.path.join(dirpath, name))
        elif event == "os.link":
            dst = self.path_of(args[1], args[3])
            if dst is not None and not self.mine(dst):
                self.wrote(dst)
        else:
            self.log({"event": "child", "what": event, "args": repr(args)[:500]})

    def at_exit(self) -> None:
        self.local.busy = True
        with self.lock:
            for p in list(self.written):
                self.copy("exit", p)
            for p, fd in self.held:
                self.copy("held", p, fd=fd)
                os.close(fd)
            self.log({"event": "exit", "written": len(self.written), "held": len(self.held)})


def install() -> Watch | None:
    out = os.environ.get("VKWATCH_DIR")
    if not out:
        return None
    watch = Watch(out)
    atexit.register(watch.at_exit)
    sys.addaudithook(watch.hook)
    return watch


WATCH = install()

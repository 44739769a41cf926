"""`files` source: exact paths and globs (Caddyfile, compose files, `.env`
files) as one tar stream, keeping mode, owner (numeric) and mtime.

A pattern that matches nothing is an error: a typo must never silently drop a
file from the backup. `secret = true` changes nothing in the data path (every
object is encrypted on this machine before it leaves it, and nothing is ever
written to disk here); it marks the source so that its paths are recorded
only in the manifest's private part and never logged.

Fingerprint: sha256 over "path mode uid gid size mtime sha256(content)" of
every file, computed on the host, so an unchanged set is reused, not re-uploaded.

The host is not trusted to say what matched. It expands the patterns and
prints one line per match, but a hostile host can print any path it likes,
and restore writes what the snapshot recorded at / on the new server. So every
reported path is checked here against the configured patterns (bash's glob
rules, `vkbackup.pathglob`); one that is not a match refuses the source,
naming the host and the path. Restore checks again, member by member, against
the patterns the snapshot recorded, so a forged member list cannot widen them.
"""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from vkbackup.config.model import SourceConfig
from vkbackup.errors import IntegrityError, SnapshotError
from vkbackup.manifest import ObjectRecord
from vkbackup.pathglob import PathPatterns
from vkbackup.restore.objects import TarCheck
from vkbackup.restore.steps import FilesParams, Step, StepContext
from vkbackup.sources.base import (
    DECOMPRESSORS,
    SUFFIX,
    PlanContext,
    SourcePlan,
    StreamPlan,
    compress_stage,
)
from vkbackup.textsafe import printable
from vkbackup.transport.base import Transport, pipeline_argv

MARK = "__VKBACKUP_NOMATCH__"


def for_each_match(patterns: tuple[str, ...], body: str) -> str:
    """Bash that runs *body* with $f set to each match of each pattern, or fails naming
    the first pattern that matches nothing."""
    pats = " ".join(shlex.quote(p) for p in patterns)
    return f"""
for pat in {pats}; do
  found=0
  while IFS= read -r f; do found=1; {body}; done < <(compgen -G "$pat" || true)
  if [ "$found" = 0 ]; then echo "{MARK} $pat" >&2; exit 3; fi
done
"""


# One line per match: mode uid gid size mtime digest path. A directory's digest
# covers the metadata of everything below it (tar takes it recursively).
STAT_BODY = (
    'if [ -d "$f" ] && [ ! -L "$f" ]; then '
    "d=$(find \"$f\" -printf '%p %m %U %G %s %T@ %l\\n' | sort | sha256sum | cut -c1-64); "
    'elif [ -f "$f" ]; then d=$(sha256sum -- "$f" | cut -c1-64); else d=-; fi; '
    'printf \'%s %s %s\\n\' "$(stat -c \'%a %u %g %s %Y\' -- "$f")" "$d" "$f"'
)


def stat_script(patterns: tuple[str, ...]) -> str:
    """Bash that prints one line per matched path: mode uid gid size mtime sha256 path."""
    return for_each_match(patterns, STAT_BODY)


def tar_script(patterns: tuple[str, ...], compressor: str) -> str:
    """Bash that streams one tar of every match (paths relative to /), compressed."""
    return (
        "files=()\n"
        + for_each_match(patterns, 'files+=("${f#/}")')
        + 'tar -C / -cf - --numeric-owner -- "${files[@]}"'
        + compress_stage(compressor)
        + "\n"
    )


def listing_error(t: Transport, cfg: SourceConfig, stderr: str, what: str) -> SnapshotError:
    """Given the stderr of a for_each_match script that failed, return the error: the
    pattern that matched nothing (named with its key path), else *what* failed."""
    for line in stderr.splitlines():
        if line.startswith(MARK):
            pat = line[len(MARK) + 1 :]
            return SnapshotError(
                f"{t.name}: {cfg.type} source {cfg.name!r} ({cfg.where}.paths): "
                f"nothing matches {pat!r}",
                hint="fix the path in the config, or remove it if the file is gone on purpose",
            )
    return SnapshotError(
        f"{t.name}: {cfg.type} source {cfg.name!r}: {what}: {stderr.strip()[-300:]}"
    )


class FilesSource:
    type = "files"

    def __init__(self, cfg: SourceConfig) -> None:
        self.cfg = cfg

    def _missing(self, t: Transport, stderr: str) -> SnapshotError:
        return listing_error(t, self.cfg, stderr, "cannot list files")

    def _refuse(self, t: Transport, why: str) -> SnapshotError:
        return SnapshotError(
            f"{t.name}: files source {self.cfg.name!r} ({self.cfg.where}.paths): {why}; "
            "refusing this source",
            hint="the host reported something no configured pattern produces: check "
            "what runs there (a wrapper around stat, find or bash) before trusting it",
        )

    def plan(self, t: Transport, ctx: PlanContext) -> SourcePlan:
        res = t.run(pipeline_argv(stat_script(self.cfg.paths)), check=False)
        if res.status != 0:
            raise self._missing(t, res.stderr)
        patterns = PathPatterns(self.cfg.paths)
        entries: list[dict[str, Any]] = []
        for line in res.stdout.decode("utf-8", errors="surrogateescape").splitlines():
            fields = line.split(" ", 6)
            try:
                mode, uid, gid, size, mtime, digest, path = fields
                numbers = int(uid), int(gid), int(size), int(mtime)
            except ValueError:
                # a secret source's paths are never logged, not even a fragment
                shown = "(not shown: secret)" if self.cfg.secret else repr(printable(line[:200]))
                raise self._refuse(t, f"unreadable line {shown}") from None
            if not path.startswith("/") or not patterns.covers(path):
                raise self._refuse(
                    t, f"the host listed {printable(path)!r}, which no configured path matches"
                )
            entries.append(
                {
                    "path": path,
                    "mode": mode,
                    "uid": numbers[0],
                    "gid": numbers[1],
                    "size": numbers[2],
                    "mtime": numbers[3],
                    "sha256": digest,
                }
            )
        fp = hashlib.sha256(
            "\n".join(
                f"{e['path']} {e['mode']} {e['uid']} {e['gid']} {e['size']} {e['mtime']} "
                f"{e['sha256']}"
                for e in sorted(entries, key=lambda e: str(e["path"]))
            ).encode("utf-8", errors="surrogateescape")
        ).hexdigest()
        total = sum(int(e["size"]) for e in entries)
        stream = StreamPlan(
            name="files.tar" + SUFFIX[ctx.compressor],
            role="tar",
            argv=pipeline_argv(tar_script(self.cfg.paths, ctx.compressor)),
            compression=ctx.compressor,
            fingerprint="files:" + fp,
            size_hint=total,
        )
        return SourcePlan(
            streams=[stream],
            meta={"files": entries, "secret": self.cfg.secret, "patterns": list(self.cfg.paths)},
        )

    def after_stream(
        self, t: Transport, stream: StreamPlan, plan: SourcePlan, stderr_tail: str
    ) -> None:
        return None


# -- restore --------------------------------------------------------------------
#
# The tar is extracted at / on the target, but only the members the snapshot
# recorded: tar is given their names, and every header is checked here by the
# tar guard against the same list, and against the recorded patterns, before it
# leaves this machine. The member list comes from the host's report; the
# patterns from the config. Checking both means a forged or hostile list can
# narrow what is written, never widen it beyond what was configured.


@dataclass(frozen=True)
class Meta:
    """What a snapshot recorded of a files source (private part)."""

    paths: tuple[str, ...]  # every recorded path, as the host's stat printed it
    patterns: tuple[str, ...]
    secret: bool

    @classmethod
    def decode(cls, doc: dict[str, Any], where: str) -> Meta:
        entries = doc.get("files") or []
        if not isinstance(entries, list) or not all(
            isinstance(e, dict) and isinstance(e.get("path"), str) for e in entries
        ):
            raise IntegrityError(f"{where}.files: expected a list of {{path: ...}} records")
        patterns = doc.get("patterns") or []
        if not isinstance(patterns, list):
            raise IntegrityError(f"{where}.patterns: expected a list")
        return cls(
            paths=tuple(str(e["path"]) for e in entries),
            patterns=tuple(str(x) for x in patterns),
            secret=bool(doc.get("secret")),
        )


def restore_steps(name: str, meta: Meta, objects: list[ObjectRecord]) -> list[Step]:
    """The restore steps of a files source: one step putting the recorded paths back.

    A recorded path outside the recorded patterns is refused here, before any
    step runs: the same list also drives the preflight's "files exist" check and
    a drill's teardown, which must not be pointed at paths nobody configured."""
    if meta.paths and not meta.patterns:
        raise IntegrityError(
            f"files source {name!r}: the snapshot records no patterns, so no path can be "
            "checked; refusing to restore it"
        )
    outside = PathPatterns(meta.patterns).outside(meta.paths)
    if outside:
        raise IntegrityError(
            f"files source {name!r}: recorded path {printable(outside[0])!r} matches none of "
            "its recorded patterns; refusing to restore it",
            hint="the snapshot's host or its storage may have been tampered with",
        )
    title = f"put files of {name} ({len(meta.paths)} paths)"
    params = FilesParams(members=meta.paths, patterns=meta.patterns)
    return [Step(f"files:{name}", title, params, name, list(objects))]


def restore_script(compression: str, members: Sequence[str]) -> str:
    """Bash that extracts the tar on stdin at / — only the recorded members, with
    their modes and numeric owners. Nothing outside those paths is written."""
    dec = DECOMPRESSORS[compression]
    head = (shlex.join(dec) + " | ") if dec else ""
    names = " ".join(shlex.quote(m.lstrip("/")) for m in members)
    return f"{head}tar -C / -xpf - --numeric-owner --same-owner -- {names}"


def restore_files(ctx: StepContext, step: Step) -> str:
    """The files step: stream each object through the tar guard into `tar -x` at /.
    The guard allows a member only when it is a recorded path (or below one) and a
    match of a recorded pattern (or below one): no patterns, nothing passes."""
    p = step.params
    assert isinstance(p, FilesParams)
    for obj in step.objects:
        ctx.feed(
            obj,
            lambda compression: pipeline_argv(restore_script(compression, p.members)),
            tar=TarCheck.files(p.members, patterns=p.patterns),
        )
    return f"{len(p.members)} paths"

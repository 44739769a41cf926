"""Does a path belong to a set of configured glob patterns, as bash would say?

A `files` source is configured with absolute paths and globs; the host expands
them (bash's `compgen -G`) and reports what matched. The host may be hostile:
it can report, and put in the tar, paths nobody configured (say
/usr/local/bin/docker), which restore would then write at / on the new
server. So both ends check every path against the patterns themselves: the
snapshot keeps only paths that are a match, and restore's tar guard refuses a
member that is neither a match nor below one (a pattern naming a directory
takes its whole tree, as tar does).

Matching follows bash's pathname expansion with its default options (no
dotglob, extglob, nocaseglob or globstar), one path component at a time:

- ``*`` any run of characters, ``?`` one character, ``[...]`` a bracket
  expression (``!`` or ``^`` negates; ranges; POSIX classes such as
  ``[:alpha:]``), a backslash quotes the next character;
- nothing crosses a ``/``;
- a component that starts with ``.`` is matched only by a pattern component
  that starts with a literal ``.``, and ``.`` and ``..`` only by themselves
  (bash 5.2's globskipdots), so ``/srv/*`` can never reach ``/srv/..``;
- below a match, a ``..`` component is never covered: ``/srv/app/../../etc``
  is lexically below ``/srv/app`` but names a file outside it.

Empty and ``.`` components are dropped from both sides first (``/srv//a/./b``
is ``/srv/a/b``), as the kernel resolves them. Erring strict is safe here:
a path bash would not have produced is exactly what the check exists to refuse.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

_CLASSES = {
    "alnum": "0-9A-Za-z",
    "alpha": "A-Za-z",
    "ascii": "\\x00-\\x7f",
    "blank": " \\t",
    "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9",
    "graph": "\\x21-\\x7e",
    "lower": "a-z",
    "print": "\\x20-\\x7e",
    "punct": re.escape("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"),
    "space": " \\t\\n\\r\\f\\v",
    "upper": "A-Z",
    "word": "0-9A-Za-z_",
    "xdigit": "0-9A-Fa-f",
}


def components(path: str) -> list[str]:
    """The components of *path*, without empty and '.' ones."""
    return [c for c in path.split("/") if c and c != "."]


def _bracket(pat: str, i: int) -> tuple[str, int] | None:
    """Given the index just past a '[', return the regex class and the index past
    its ']', or None when the bracket does not close (then '[' is literal)."""
    j = i
    negate = j < len(pat) and pat[j] in "!^"
    if negate:
        j += 1
    parts: list[str] = []
    first = True
    while j < len(pat):
        ch = pat[j]
        if ch == "]" and not first:
            body = "".join(parts)
            if not body:
                return None
            return ("[^" if negate else "[") + body + "]", j + 1
        first = False
        if ch == "[" and pat.startswith(":", j + 1):
            end = pat.find(":]", j + 2)
            name = pat[j + 2 : end] if end > 0 else ""
            if name in _CLASSES:
                parts.append(_CLASSES[name])
                j = end + 2
                continue
        if ch == "\\" and j + 1 < len(pat):
            j += 1
            ch = pat[j]
        if j + 2 < len(pat) and pat[j + 1] == "-" and pat[j + 2] != "]":
            hi = pat[j + 2]
            if hi == "\\" and j + 3 < len(pat):
                hi = pat[j + 3]
                j += 1
            if ord(hi) >= ord(ch):
                parts.append(re.escape(ch) + "-" + re.escape(hi))
            j += 3
            continue
        parts.append(re.escape(ch))
        j += 1
    return None


def _compile(component: str) -> tuple[re.Pattern[str], bool]:
    """One pattern component as a regex, and whether it starts with a literal '.'."""
    out: list[str] = []
    i = 0
    literal_dot = component.startswith(".") or component.startswith("\\.")
    while i < len(component):
        ch = component[i]
        if ch == "\\" and i + 1 < len(component):
            out.append(re.escape(component[i + 1]))
            i += 2
        elif ch == "*":
            out.append(".*")
            i += 1
        elif ch == "?":
            out.append(".")
            i += 1
        elif ch == "[":
            got = _bracket(component, i + 1)
            if got is None:
                out.append(re.escape("["))
                i += 1
            else:
                out.append(got[0])
                i = got[1]
        else:
            out.append(re.escape(ch))
            i += 1
    return re.compile("".join(out), re.DOTALL), literal_dot


class PathPatterns:
    """A set of absolute glob patterns, compiled once, asked about many paths."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = tuple(patterns)
        self._compiled: list[tuple[tuple[str, ...], list[tuple[re.Pattern[str], bool]]]] = []
        for p in self.patterns:
            comps = components(p)
            if comps:
                self._compiled.append((tuple(comps), [_compile(c) for c in comps]))

    def _component_matches(self, name: str, raw: str, rx: re.Pattern[str], dot: bool) -> bool:
        if name in (".", ".."):
            return raw == name
        if name.startswith(".") and not dot:
            return False
        return rx.fullmatch(name) is not None

    def covers(self, path: str | Sequence[str]) -> bool:
        """Given a path (absolute, or relative to / as in a tar, or as its
        components), return whether it is a match of a pattern or lies below one."""
        comps = components(path) if isinstance(path, str) else [c for c in path if c != "."]
        for raw, compiled in self._compiled:
            if len(comps) < len(compiled) or ".." in comps[len(compiled) :]:
                continue
            if all(
                self._component_matches(name, r, rx, dot)
                for name, r, (rx, dot) in zip(comps, raw, compiled, strict=False)
            ):
                return True
        return False

    def outside(self, paths: Iterable[str]) -> list[str]:
        """The paths of *paths* that no pattern covers, in order."""
        return [p for p in paths if not self.covers(p)]

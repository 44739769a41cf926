"""The files source's pattern check agrees with bash: for every pattern, the paths
`compgen -G` prints (what an honest host reports) are exactly the paths of the
tree that PathPatterns calls a match, and a path below a match is covered."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from vkbackup.pathglob import PathPatterns, components

FILES = [
    "srv/app/.env", "srv/app/a.env", "srv/app/b.yml", "srv/app/sub/x", "srv/.hidden/y",
    "srv/sp ace/z", "srv/app/[x]", "srv/app/x", "srv/app/a*b", "srv/app/Ab", "srv/app/ab",
    "srv/app/a1", "srv/other/.dot", "srv/..weird", "srv/app/-dash", "srv/app/caf\u00e9",
]  # fmt: skip
PATTERNS = [
    "/srv/app/*", "/srv/*", "/srv/app/.*", "/srv/.*", "/srv/*/*", "/srv/app/[ab]*",
    "/srv/app/[!a]*", "/srv/app/[^a]*", "/srv/app/[[:upper:]]*", "/srv/app/a?",
    "/srv/app/\\[x\\]", "/srv/app/[x]", "/srv/app/a\\*b", "/srv/app/[.]env", "/srv/app/*.env",
    "/srv/sp ace/*", "/srv/app/[]x]", "/srv/app/[a-z][0-9]", "/srv/app/", "/srv/app/[",
    "/srv/*/.*", "/srv/app/[[:alpha:][:digit:]]?", "/srv/?app/*", "/srv/app/*[b]",
    "/srv/app/[a-]*", "/srv/app/caf?", "/srv/app/.env", "/srv/nothing",
]  # fmt: skip


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("globs")
    for f in FILES:
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        (root / f).write_text("x")
    paths = []
    for d, ds, fs in os.walk(root):
        for n in ds + fs:
            paths.append("/" + os.path.relpath(os.path.join(d, n), root))
    return root, paths


@pytest.mark.parametrize("pattern", PATTERNS)
def test_matches_are_what_bash_expands(tree: tuple[Path, list[str]], pattern: str) -> None:
    root, paths = tree
    out = subprocess.run(
        ["bash", "-c", 'cd "$1" && { compgen -G "$2" || true; }', "x", str(root),
         pattern.lstrip("/")],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    bash = {"/" + "/".join(components(p)) for p in out.split("\n") if p}
    pp = PathPatterns([pattern])
    assert all(pp.covers(p) for p in bash), "an honest host's match would be refused"
    exact = {p for p in paths if len(components(p)) == len(components(pattern)) and pp.covers(p)}
    assert exact == bash


def test_below_a_match_is_covered_and_nothing_else() -> None:
    pp = PathPatterns(["/srv/app", "/etc/caddy/Caddyfile", "/opt/*/.env"])
    assert pp.covers("/srv/app") and pp.covers("/srv/app/deep/.hidden/file")
    assert pp.covers("srv/app/x")  # a tar member: relative to /
    assert pp.covers(["opt", "web", ".env"]) and pp.covers("/opt/web/.env")
    assert pp.covers("/srv//app/./x")
    for p in ("/srv", "/srv/application", "/usr/local/bin/docker", "/opt/web/.envx",
              "/opt/.web/.env", "/opt/../.env", "/opt/web/../.env", "/etc/caddy", "/",
              "", "/srv/app/../../etc/passwd"):  # fmt: skip
        assert not pp.covers(p), p
    assert not PathPatterns(["/srv/*"]).covers("/srv/..")
    assert not PathPatterns(["/srv/.*"]).covers("/srv/../etc")
    assert PathPatterns([]).outside(["/a", "/b"]) == ["/a", "/b"]

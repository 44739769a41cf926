"""Where the tests find stock age 1.3 (the first release with post-quantum keys).

Debian stable's age (/usr/bin/age) predates the mlkem768x25519 recipient, so
interop with it needs a newer build. .ci/setup fetches Debian unstable's
age_1.3.2 .deb, checks its hash and unpacks it with `dpkg-deb -x` into the
cache directory below, without installing it: it is a test peer, never
something users run. One path, spelled here and in .ci/setup.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.realparts import require

VERSION = "1.3.2"


def age13_dir() -> Path:
    """The directory .ci/setup unpacks the .deb into (its usr/bin holds the tools)."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "vkbackup-age-1.3"


def age13_tool(name: str) -> str:
    """Return the path of *name* (age, age-keygen) from age 1.3.2; require() it if missing."""
    path = age13_dir() / "usr" / "bin" / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        require(f"{path} missing: stock age {VERSION} is fetched by .ci/setup")
    r = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=30)
    if r.stdout.strip() != VERSION:
        require(f"{path} is version {r.stdout.strip()!r}, not {VERSION}; rerun .ci/setup")
    return str(path)

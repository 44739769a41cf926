"""What several e2e tests build the same way: a config of the lab's own with a
storage of the test's, and one more docker-volume source on prod.

    own_config(lab, path, storage, *extra_sources) -> Path
        the lab's config (local storage) pointed at *storage*, with each of
        *extra_sources* (a dict of keys) appended as [[hosts.prod.sources]]; mode 0600
    volume_source(name, volume, **keys) -> dict     a docker-volume source's keys
    drop_volume(lab, volume)                        the volume and its tar snapshot files
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tests.lab.api import Lab


def volume_source(name: str, volume: str, **keys: Any) -> dict[str, Any]:
    """A docker-volume source; held containers none unless *keys* say (stop = [...])."""
    return {"type": "docker-volume", "name": name, "volume": volume, "stop": [], **keys}


def own_config(lab: Lab, path: Path, storage: Path, *extra_sources: dict[str, Any]) -> Path:
    text = lab.config_path.read_text()
    text = re.sub(r'(?m)^path = ".*"$', f'path = "{storage}"', text, count=1)
    for src in extra_sources:
        # JSON strings, numbers and lists of strings are TOML too
        text += "\n[[hosts.prod.sources]]\n" + "".join(
            f"{k} = {json.dumps(v)}\n" for k, v in src.items()
        )
    path.write_text(text)
    path.chmod(0o600)
    return path


def drop_volume(lab: Lab, volume: str) -> None:
    lab.ssh("prod", f"docker volume rm -f {volume}; rm -rf /var/lib/vkbackup/snar/{volume}")

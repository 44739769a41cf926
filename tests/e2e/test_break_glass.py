"""restore-playbooks/BREAK-GLASS.md, followed literally: every `sh` block of the guide runs
in order (the variables block replaced by the lab's values) and must rebuild prod on the
fresh host with stock tools only: age, tar, gzip, docker, pg_restore, ssh."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

from tests.e2e import treesig
from tests.e2e.guides import PLAYBOOKS, guide_blocks
from tests.lab.api import Lab
from vkbackup import catalog
from vkbackup.config import load_config
from vkbackup.storage import open_storage

GUIDE = PLAYBOOKS / "BREAK-GLASS.md"


def guide_script(storage: Path, identity: Path, target: list[str], signer: str) -> str:
    """The guide as one bash script: its variables block replaced by these values
    (a local storage directory, an identity file, the argv reaching the new host,
    the public signing key)."""
    _, blocks = guide_blocks(GUIDE)
    return "\n".join(
        [
            "set -euo pipefail",
            f"VK={shlex.quote(str(storage))}",
            f"IDENTITY={shlex.quote(str(identity))}",
            "HOST=prod",
            f"TARGET={shlex.quote(shlex.join(target))}",
            f"SIGNER={shlex.quote(signer)}",
            *blocks,
        ]
    )


def public_line(signing_key: Path) -> str:
    """The public line ("ssh-ed25519 AAAA...") of an OpenSSH private key, by ssh-keygen."""
    return subprocess.run(
        ["ssh-keygen", "-y", "-f", str(signing_key)], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_guide_has_the_expected_shape() -> None:
    variables, blocks = guide_blocks(GUIDE)
    for name in ("VK=", "IDENTITY=", "HOST=", "TARGET=", "SIGNER="):
        assert name in variables
    assert len(blocks) >= 7


def test_break_glass_guide_restores_prod_with_stock_tools(fresh_lab: Lab, tmp_path: Path) -> None:
    lab = fresh_lab
    # two snapshots with a change between: the second is an incremental link of the
    # storage volume's chain (a file added, one deleted), so the guide must apply a chain
    # (its own files: the seeded ones, hard links included, stay as test_lab expects)
    volume = "cd $(docker volume inspect -f '{{.Mountpoint}}' chatwoot_storage_data) && "
    lab.ssh("prod", volume + "rm -f added.txt && echo doomed > bg-doomed.txt")
    cp = lab.vkbackup("snapshot", "prod")
    assert cp.returncode == 0, cp.stderr
    lab.ssh("prod", volume + "echo added-by-break-glass-test > added.txt && rm bg-doomed.txt")
    cp = lab.vkbackup("snapshot", "prod", "--json")  # the newest complete snapshot
    assert cp.returncode == 0, cp.stderr
    newest = json.loads(cp.stdout)["id"]
    storage = open_storage(load_config(lab.config_path).storage)
    latest = catalog.resolve(storage, "latest", "prod")
    assert latest.id == newest
    levels = sorted(o.chain for o in latest.objects if o.source == "chatwoot-storage")
    assert levels[-1] >= 1, "the storage volume should be an incremental chain here"
    signer = public_line(lab.paths.signing_key)
    script = guide_script(lab.storage_dir, lab.identity, lab.ssh_argv("fresh"), signer)
    (tmp_path / "break-glass.sh").write_text(script)
    cp = subprocess.run(
        ["bash", str(tmp_path / "break-glass.sh")], capture_output=True, text=True, timeout=1200
    )
    assert cp.returncode == 0, cp.stdout[-3000:] + cp.stderr[-3000:]
    assert 'Good "vkbackup" signature' in cp.stdout + cp.stderr
    assert "manifest signed, objects match" in cp.stdout
    assert cp.stdout.count("200 ") == 9, cp.stdout[-2000:]
    running = lab.running_containers("fresh")
    for name in lab.containers:
        assert name in running, f"{name} does not run after the break-glass restore"
    assert lab.table_checksums("fresh") == lab.table_checksums("prod")
    for volume in ("chatwoot_storage_data", "chatwoot_redis_data"):
        assert treesig.volume_signature(lab, "fresh", volume) == treesig.volume_signature(
            lab, "prod", volume
        ), volume

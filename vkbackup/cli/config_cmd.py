"""`vkbackup config check`."""

from __future__ import annotations

from typing import Any

import click

from vkbackup.cli.context import AppContext, emit_json, pass_app
from vkbackup.cli.options import json_output
from vkbackup.config import Config
from vkbackup.config.model import StorageConfig


@click.group("config")
def config_group() -> None:
    """Inspect and validate the configuration."""


@config_group.command("check")
@json_output
@pass_app
def config_check(app: AppContext, as_json: bool) -> None:
    """Find the config file (--config, $VKBACKUP_CONFIG, ./vkbackup.toml,
    ~/.config/vkbackup/config.toml, /etc/vkbackup/vkbackup.toml), say which one
    and why, load and validate it; name every problem. Exit 2 on an error, and
    when no config file is found (it lists every place it looked in). With the
    global --storage NAME, also say which storage the other commands would
    use (exit 2 when no [[copies]] has that name). Warnings (exit 0): what is
    set but does nothing, such as snapshot.copy_after without [[copies]]."""
    found = app.lookup()
    if found.path is None:
        if as_json:
            emit_json({"file": None, "looked_in": found.lines()})
        raise app.no_config_error(needed=False)
    cfg = app.config()
    sig = _signing(cfg)  # reads the key file: once
    selected = None
    if app.storage_name is not None:
        selected = {
            "name": app.storage_name,
            "where": _where(app.copy_config(app.storage_name).storage),
        }
    warnings = config_warnings(cfg)
    summary = {
        "file": str(cfg.source_file) if cfg.source_file else None,
        "found_by": found.found_by,
        "looked_in": found.lines(),
        "storage": cfg.storage.type,
        "copies": {c.name: _where(c.storage) for c in cfg.copies},
        "copy_after": cfg.snapshot.copy_after,
        "selected_storage": selected,
        "warnings": warnings,
        "hosts": {
            name: {"address": h.address, "sources": [f"{s.type}:{s.name}" for s in h.sources]}
            for name, h in cfg.hosts.items()
        },
        "recipients": len(cfg.encryption.recipients),
        "signing": sig,
    }
    if as_json:
        emit_json(summary)
        return
    click.echo(f"config OK: {cfg.source_file}")
    before = "; ".join(found.lines()[:-1])
    click.echo(f"  found by: {found.found_by}" + (f" (before it: {before})" if before else ""))
    click.echo(f"  storage: {_where(cfg.storage)}")
    for c in cfg.copies:
        after = " (after each snapshot: snapshot.copy_after)" if cfg.snapshot.copy_after else ""
        click.echo(f"  copy {c.name}: {_where(c.storage)}{after}")
    if selected is not None:
        click.echo(
            f"  selected by --storage {selected['name']}: the copy {selected['name']}, "
            f"{selected['where']} (instead of [storage])"
        )
    click.echo(f"  recipients: {len(cfg.encryption.recipients)}")
    if not sig["configured"]:
        click.echo("  signing: OFF (records are not signed; anyone who can write to the storage")
        click.echo("           could forge them: see [signing] in the README)")
    else:
        key = sig["key"] or "none on this machine (can check, cannot sign)"
        click.echo(f"  signing: key {key}")
        for fp in sig["trusted"] or ():
            click.echo(f"    trusts {fp}")
    for name, h in cfg.hosts.items():
        click.echo(f"  host {name}: {h.user}@{h.address}:{h.port}, {len(h.sources)} sources")
        for s in h.sources:
            click.echo(f"    - {s.type} {s.name}")
    for w in warnings:
        click.echo(f"  warning: {w}")


def config_warnings(cfg: Config) -> list[str]:
    """What the config sets that has no effect, one sentence each."""
    out = []
    if cfg.snapshot.copy_after and not cfg.copies:
        out.append(
            "snapshot.copy_after = true, but no [[copies]] is configured: "
            "nothing is copied after a snapshot"
        )
    return out


def _where(storage: StorageConfig) -> str:
    """Where a [storage] or [[copies]] table points, in words."""
    if storage.type == "local":
        return f"local directory {storage.path}"
    return f"s3 bucket {storage.bucket} prefix {storage.prefix!r}"


def _signing(cfg: Config) -> dict[str, Any]:
    """[signing] as config check reports it: the key file is read (a key that is
    missing, readable by others or locked is an error here, not at 2 a.m.)."""
    from vkbackup import sshsig
    from vkbackup.signing import Trust

    trust = Trust.from_config(cfg.signing)
    return {
        "configured": trust.configured,
        "key": str(cfg.signing.key) if cfg.signing.key else None,
        "trusted": [sshsig.fingerprint(k) for k in trust.trusted],
    }


def register(cli: click.Group) -> None:
    cli.add_command(config_group)

"""The `vkbackup` command: global options, command registration, and the ONE
place where vkbackup's exceptions become a message and an exit code.

Each top-level command lives in its own module next to this one, named after
it: `vkbackup X` is `cli/X_cmd.py`. Each is thin: parse, get what the action
needs from the composition root (`cli/context.py`), call an action in
`vkbackup.actions`, print the result. A command is added by importing its
module below and naming it in the registration loop; the global options
(--config, -v, -q, --log-json, --storage) are then accepted after its name too
(`_add_global_options`, run after the loop).
"""

from __future__ import annotations

import logging
import signal
import sys
import types
from typing import Any

import click

from vkbackup import __version__
from vkbackup.cli import (
    check_cmd,
    config_cmd,
    copy_cmd,
    decrypt_cmd,
    drill_cmd,
    dump_cmd,
    encrypt_cmd,
    init_cmd,
    keys_cmd,
    list_cmd,
    ls_cmd,
    prune_cmd,
    restore_cmd,
    show_cmd,
    snapshot_cmd,
    storage_cmd,
    verify_cmd,
    wal_stream_cmd,
)
from vkbackup.cli.context import AppContext
from vkbackup.errors import ExitCode, Interrupted, VkError, WrongKeyError
from vkbackup.logs import redact

log = logging.getLogger("vkbackup.cli")


def _on_sigterm(signum: int, frame: types.FrameType | None) -> None:
    # Turn SIGTERM into the same path as Ctrl-C so every `finally` (container
    # restarts, multipart aborts, temp-file removal) runs.
    raise KeyboardInterrupt


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vkbackup")
@click.option(
    "--config",
    "config_path",
    metavar="PATH",
    help="Config file. Else $VKBACKUP_CONFIG, ./vkbackup.toml, ~/.config/vkbackup/config.toml, "
    "/etc/vkbackup/vkbackup.toml.",
)
@click.option("-v", "--verbose", count=True, help="More output (-vv: library debug too).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors (for cron).")
@click.option("--log-json", is_flag=True, help="Log as JSON lines on standard error.")
@click.option(
    "--storage",
    "storage_name",
    metavar="NAME",
    help="Use the [[copies]] storage NAME instead of [storage] (list, show, verify, restore, "
    "drill, prune, check; the source of copy).",
)
@click.pass_context
def cli(
    ctx: click.Context,
    config_path: str | None,
    verbose: int,
    quiet: bool,
    log_json: bool,
    storage_name: str | None,
) -> None:
    """vkbackup: snapshot a Docker host over SSH into encrypted storage, restore it
    onto a fresh host, and prove it works with drills.

    The options above are accepted after the command name too
    (`vkbackup list prod -q --config PATH`, `vkbackup list --storage offsite`).

    Exit codes: 0 ok, 1 failed, 2 usage or config error (no config file found
    included), 3 partly failed, 10 storage missing or unreachable, 11 lock held
    by another run, 12 wrong identity or passphrase, 130 interrupted.
    """
    app = ctx.ensure_object(AppContext)
    if config_path:
        app.config_path = config_path
    if storage_name:
        app.storage_name = storage_name
    app.set_output(verbose=verbose, quiet=quiet, log_json=log_json)


for module in (
    config_cmd,
    keys_cmd,
    encrypt_cmd,
    decrypt_cmd,
    storage_cmd,
    init_cmd,
    snapshot_cmd,
    restore_cmd,
    list_cmd,
    show_cmd,
    verify_cmd,
    prune_cmd,
    drill_cmd,
    check_cmd,
    copy_cmd,
    ls_cmd,
    dump_cmd,
    wal_stream_cmd,
):
    module.register(cli)


def _late_global(ctx: click.Context, param: click.Parameter, value: object) -> None:
    """Apply a global option given after the command name to the AppContext."""
    app = ctx.find_object(AppContext)
    if app is None or not value:
        return
    if param.name == "late_config":
        app.config_path = str(value)
    elif param.name == "late_verbose":
        app.set_output(verbose=value if isinstance(value, int) else 0)
    elif param.name == "late_quiet":
        app.set_output(quiet=True)
    elif param.name == "late_log_json":
        app.set_output(log_json=True)
    elif param.name == "late_storage":
        app.storage_name = str(value)


def _global_options() -> list[click.Option]:
    """The global options as a command's own: same names, same effect."""
    common: dict[str, Any] = {"expose_value": False, "is_eager": True, "callback": _late_global}
    return [
        click.Option(
            ["--config", "late_config"],
            metavar="PATH",
            help="Config file (as the global --config).",
            **common,
        ),
        click.Option(
            ["-v", "--verbose", "late_verbose"],
            count=True,
            help="More output (-vv: library debug too).",
            **common,
        ),
        click.Option(
            ["-q", "--quiet", "late_quiet"],
            is_flag=True,
            help="Only warnings and errors (for cron).",
            **common,
        ),
        click.Option(
            ["--log-json", "late_log_json"],
            is_flag=True,
            help="Log as JSON lines on standard error.",
            **common,
        ),
        click.Option(
            ["--storage", "late_storage"],
            metavar="NAME",
            help="Use the [[copies]] storage NAME (as the global --storage).",
            **common,
        ),
    ]


def _add_global_options(group: click.Group) -> None:
    """Accept the global options after the command name too (`vkbackup list prod
    -q --config X`, `vkbackup config check -v`), on every command of *group*."""
    for cmd in group.commands.values():
        if isinstance(cmd, click.Group):
            _add_global_options(cmd)
        else:
            taken = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
            cmd.params.extend(o for o in _global_options() if not taken & set(o.opts))


_add_global_options(cli)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the CLI and map errors to exit codes."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    verbose = any(a in ("-v", "-vv", "-vvv", "--verbose") for a in (argv or sys.argv[1:]))
    app = AppContext()
    try:
        rc = cli.main(args=argv, prog_name="vkbackup", standalone_mode=False, obj=app)
    except VkError as e:
        if verbose or app.verbosity > 0:
            log.debug("traceback", exc_info=True)
        click.echo(f"vkbackup: error: {redact(str(e))}", err=True)
        hint = e.hint
        if isinstance(e, WrongKeyError) and app.identity_origin:
            used = f"the identity file used: {app.identity_origin}"
            hint = f"{used}; {hint}" if hint else f"{used}; give the right one with --identity"
        if hint:
            click.echo(f"  hint: {redact(hint)}", err=True)
        sys.exit(int(e.exit_code))
    except click.exceptions.Abort:
        click.echo("vkbackup: interrupted", err=True)
        sys.exit(int(ExitCode.INTERRUPTED))
    except KeyboardInterrupt:
        click.echo("vkbackup: interrupted", err=True)
        sys.exit(int(Interrupted.exit_code))
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(int(ExitCode.USAGE))
    sys.exit(rc if isinstance(rc, int) else 0)

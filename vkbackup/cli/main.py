"""The `vkbackup` command: global options, command registration, and the ONE
place where vkbackup's exceptions become a message and an exit code.

Each top-level command lives in its own module next to this one, named after
it: `vkbackup X` is `cli/X_cmd.py`. Each is thin: parse, get what the action
needs from the composition root (`cli/context.py`), call an action in
`vkbackup.actions`, print the result.
"""

from __future__ import annotations

import logging
import signal
import sys
import types

import click

from vkbackup import __version__
from vkbackup.cli import (
    config_cmd,
    decrypt_cmd,
    drill_cmd,
    encrypt_cmd,
    init_cmd,
    keys_cmd,
    list_cmd,
    prune_cmd,
    restore_cmd,
    show_cmd,
    snapshot_cmd,
    storage_cmd,
    verify_cmd,
)
from vkbackup.cli.context import AppContext
from vkbackup.errors import ExitCode, Interrupted, VkError
from vkbackup.logs import redact, setup_logging

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
    help="Config file. Else $VKBACKUP_CONFIG, ./vkbackup.toml, ~/.config/vkbackup/config.toml.",
)
@click.option("-v", "--verbose", count=True, help="More output (-vv: library debug too).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors (for cron).")
@click.option("--log-json", is_flag=True, help="Log as JSON lines on standard error.")
@click.pass_context
def cli(
    ctx: click.Context, config_path: str | None, verbose: int, quiet: bool, log_json: bool
) -> None:
    """vkbackup: snapshot a Docker host over SSH into encrypted storage, restore it
    onto a fresh host, and prove it works with drills.

    Exit codes: 0 ok, 1 failed, 2 usage or config error, 3 partly failed,
    130 interrupted.
    """
    verbosity = -1 if quiet else verbose
    setup_logging(verbosity, log_json)
    ctx.obj = AppContext(config_path=config_path, verbosity=verbosity, log_json=log_json)


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
):
    module.register(cli)


def _late_config(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value:
        app = ctx.find_object(AppContext)
        if app is not None:
            app.config_path = value


def _add_late_config_option(group: click.Group) -> None:
    """Accept `--config PATH` after the command name too (`vkbackup config check --config X`)."""
    for cmd in group.commands.values():
        if isinstance(cmd, click.Group):
            _add_late_config_option(cmd)
        else:
            cmd.params.append(
                click.Option(
                    ["--config"],
                    metavar="PATH",
                    expose_value=False,
                    is_eager=True,
                    callback=_late_config,
                    help="Config file (same as the global --config).",
                )
            )


_add_late_config_option(cli)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the CLI and map errors to exit codes."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    verbose = any(a in ("-v", "-vv", "-vvv", "--verbose") for a in (argv or sys.argv[1:]))
    try:
        rc = cli.main(args=argv, prog_name="vkbackup", standalone_mode=False)
    except VkError as e:
        if verbose:
            log.debug("traceback", exc_info=True)
        click.echo(f"vkbackup: error: {redact(str(e))}", err=True)
        if e.hint:
            click.echo(f"  hint: {redact(e.hint)}", err=True)
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

"""What every command receives: global options and a lazily loaded config."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from vkbackup.config import Config, find_config_file, load_config


@dataclass
class AppContext:
    config_path: str | None = None
    verbosity: int = 0
    log_json: bool = False
    _config: Config | None = field(default=None, repr=False)

    def config(self) -> Config:
        """Load the config following the lookup order (embedded defaults if none)."""
        if self._config is None:
            path = find_config_file(self.config_path, os.environ, Path.cwd(), Path.home())
            self._config = load_config(path)
        return self._config

    @property
    def interactive(self) -> bool:
        return sys.stdin.isatty() and sys.stderr.isatty()


pass_app = click.make_pass_decorator(AppContext)


def emit_json(doc: Any) -> None:
    """Print one JSON document on standard output (the --json contract)."""
    click.echo(json.dumps(doc, indent=2, sort_keys=True, default=str))

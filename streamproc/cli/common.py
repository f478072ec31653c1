"""What every command shares: the --config option and settings errors as one clean line."""

from __future__ import annotations

from pathlib import Path

import click

from streamproc.config import Settings, load_settings
from streamproc.errors import ConfigError

__all__ = ["config_option", "load"]

config_option = click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="YAML settings file (environment variables override it).",
)


def load(config_file: Path | None) -> Settings:
    """The settings, or a click error naming what is wrong."""
    try:
        return load_settings(config_file)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc

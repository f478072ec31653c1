"""What every command shares: the --config option, the --bootstrap type and errors as one line.

Exit statuses: 2 for a usage or configuration error (fix the command line or the
settings), 1 for a failure at run time (a broker out of reach, a worker that stopped).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import click

from streamproc.config import Settings, check_bootstrap_servers, load_settings
from streamproc.errors import ConfigError

__all__ = [
    "BadConfiguration",
    "BootstrapServers",
    "OneLineErrors",
    "config_option",
    "load",
    "quiet_kafka_client",
]

config_option = click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="YAML settings file (environment variables override it).",
)


class BadConfiguration(click.ClickException):
    """A usage or configuration error: ``Error: MESSAGE`` on stderr, exit status 2."""

    exit_code = 2


if TYPE_CHECKING:
    _TextType = click.ParamType[str, Any]  # generic in recent click only
else:
    _TextType = click.ParamType
#: click 8.2+ raises it (a UsageError) for a group run without a command, to show its help.
_SHOWS_HELP: Final = getattr(click.exceptions, "NoArgsIsHelpError", None)


class BootstrapServers(_TextType):
    """``--bootstrap``: checked as the settings check STREAMPROC_KAFKA__BOOTSTRAP_SERVERS."""

    name = "HOST:PORT[,HOST:PORT]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            return check_bootstrap_servers(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class OneLineErrors(click.Group):
    """A group whose usage errors (bad option values, missing arguments) are one line that
    says what is wrong and where help is, instead of the usage text and a hint."""

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any
    ) -> click.Context:
        with _one_line():
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: click.Context) -> Any:
        with _one_line():
            return super().invoke(ctx)


@contextlib.contextmanager
def _one_line() -> Iterator[None]:
    try:
        yield
    except click.UsageError as exc:
        if _SHOWS_HELP is not None and isinstance(exc, _SHOWS_HELP):
            raise
        command = exc.ctx.command_path if exc.ctx is not None else "streamproc"
        raise BadConfiguration(f"{exc.format_message()} (see `{command} -h`)") from exc


def load(config_file: Path | None) -> Settings:
    """The settings, or a usage error naming what is wrong."""
    try:
        return load_settings(config_file)
    except ConfigError as exc:
        raise BadConfiguration(str(exc)) from exc


def quiet_kafka_client() -> None:
    """The Kafka client's warnings off stderr before logging is set up: Python would print
    them beside the one line saying what failed. Once a service sets up logging, they still
    reach its handlers."""
    logging.getLogger("aiokafka").addHandler(logging.NullHandler())

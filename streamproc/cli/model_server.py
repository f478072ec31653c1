"""The model-server options `streamproc eval` and `streamproc calibrate` share: a running
server (--vllm-url, --model-name), or one started here for the command (--vllm-python with
--model-dir) and stopped after it."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

__all__ = ["check_server_options", "model_server", "server_options"]

_F = TypeVar("_F", bound=Callable[..., Any])


def server_options(command: _F) -> _F:
    """--vllm-url, --model-name, --vllm-python and --model-dir."""
    options = [
        click.option(
            "--vllm-url",
            default=None,
            help="Model server API root (default: the settings' inference.base_url).",
        ),
        click.option(
            "--model-name", default=None, help="Served model name (default: the settings' inference.model)."
        ),
        click.option(
            "--vllm-python",
            type=click.Path(path_type=Path, dir_okay=False),
            help="Start a vLLM server with this python (with --model-dir) instead of using a running one.",
        ),
        click.option(
            "--model-dir", type=click.Path(path_type=Path, file_okay=False), help="Model directory to serve."
        ),
    ]
    for option in reversed(options):  # click lists options in decoration order, outermost first
        command = option(command)
    return command


def check_server_options(vllm_url: str | None, vllm_python: Path | None, model_dir: Path | None) -> None:
    """A running server, or one to start: not both, and a start needs its python and model."""
    if (vllm_python is None) != (model_dir is None):
        raise click.UsageError("--vllm-python and --model-dir go together (they start a model server)")
    if vllm_python is not None and vllm_url is not None:
        raise click.UsageError("give --vllm-url for a running server, or --vllm-python/--model-dir, not both")


@contextlib.contextmanager
def model_server(
    url: str,
    vllm_python: Path | None,
    model_dir: Path | None,
    model: str,
    out: Path,
    *,
    other_names: Sequence[str] = (),
) -> Iterator[str]:
    """The API root to use: ``url``, or a vLLM server's started here and stopped after."""
    if vllm_python is None or model_dir is None:
        yield url
        return
    from streamproc.dev.devstack import VllmServer  # noqa: PLC0415 - only when starting one

    say = functools.partial(click.echo, err=True)
    say(f"starting vLLM for {model_dir} (a few minutes on CPU; log in {out / 'vllm.log'}) …")
    with VllmServer(vllm_python, model_dir, model, out / "vllm.log", other_names=other_names) as running:
        say(f"model server {running.base_url} serving {' and '.join([model, *other_names])}")
        yield running.base_url

"""`streamproc demo`: the whole stack on this machine over the shipped samples."""

from __future__ import annotations

from pathlib import Path

import click

from streamproc.cli.model_server import ServerOptions, model_servers, server_options
from streamproc.config import Settings
from streamproc.errors import ConfigError

__all__ = ["demo"]


@click.command()
@server_options
@click.option(
    "--duration",
    type=click.FloatRange(min=0),
    default=None,
    help="Stop this many seconds after publishing the samples (default: wait for Ctrl-C).",
)
@click.option(
    "--until-done",
    is_flag=True,
    help="Stop once every sample has its verdict or dead letter (exit status 1 if some never do).",
)
@click.option(
    "--samples",
    "samples_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("samples"),
    show_default=True,
)
@click.option(
    "--topics-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("topics"),
    show_default=True,
)
@click.option(
    "--policies-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("policies"),
    show_default=True,
)
@click.option("--metrics-port", type=int, default=9108, show_default=True)
@click.option(
    "--run-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path(".demo"),
    show_default=True,
    help="Logs of the started processes.",
)
def demo(
    servers: ServerOptions,
    duration: float | None,
    until_done: bool,
    samples_dir: Path,
    topics_dir: Path,
    policies_dir: Path,
    metrics_port: int,
    run_dir: Path,
) -> None:
    """Start a broker, the model servers the packs need and a worker; moderate the shipped samples."""
    from streamproc.dev.demo import DemoOptions, run_demo  # noqa: PLC0415
    from streamproc.policy import load_policy_set  # noqa: PLC0415

    if servers.vllm_python is None and servers.vllm_url is None and servers.embedding_url is None:
        raise click.UsageError(
            "give --vllm-python with --model-dir and --embedding-model-dir to start the model servers "
            "(make demo does), or --vllm-url / --embedding-url for running ones"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        packs = load_policy_set([policies_dir]).policies
        with model_servers(servers, Settings(), run_dir, packs=packs) as running:
            options = DemoOptions(
                generative=running.generative,
                embedding=running.embedding,
                duration=duration,
                samples_dir=samples_dir,
                topics_dir=topics_dir,
                policies_dir=policies_dir,
                metrics_port=metrics_port,
                run_dir=run_dir,
                until_done=until_done,
            )
            run_demo(options)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc

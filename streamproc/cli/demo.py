"""`streamproc demo`: the whole stack on this machine over the shipped samples."""

from __future__ import annotations

from pathlib import Path

import click

from streamproc.config import Settings
from streamproc.errors import ConfigError

__all__ = ["demo"]


@click.command()
@click.option(
    "--vllm-python", type=click.Path(path_type=Path, dir_okay=False), help="python of the vLLM virtualenv."
)
@click.option(
    "--model-dir", type=click.Path(path_type=Path, file_okay=False), help="Model directory to serve."
)
@click.option(
    "--vllm-url", default=None, help="Use this running OpenAI-compatible server instead of starting one."
)
@click.option(
    "--model-name", default=None, help="Served model name (default: the settings' inference.model)."
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0),
    default=None,
    help="Stop after this many seconds (default: wait for Ctrl-C).",
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
    vllm_python: Path | None,
    model_dir: Path | None,
    vllm_url: str | None,
    model_name: str | None,
    duration: float | None,
    samples_dir: Path,
    topics_dir: Path,
    policies_dir: Path,
    metrics_port: int,
    run_dir: Path,
) -> None:
    """Start a broker, a model server and a worker; moderate the shipped samples."""
    from streamproc.dev.demo import DemoOptions, run_demo  # noqa: PLC0415

    if vllm_url is None and (vllm_python is None or model_dir is None):
        raise click.UsageError(
            "give --vllm-python and --model-dir to start a model server (make demo does), "
            "or --vllm-url for a running one"
        )
    options = DemoOptions(
        vllm_python=vllm_python,
        model_dir=model_dir,
        vllm_url=vllm_url,
        model_name=model_name or Settings().inference.model,
        duration=duration,
        samples_dir=samples_dir,
        topics_dir=topics_dir,
        policies_dir=policies_dir,
        metrics_port=metrics_port,
        run_dir=run_dir,
    )
    try:
        run_demo(options)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc

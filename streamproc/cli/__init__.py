"""The ``streamproc`` command line: wiring only; each command imports its service lazily."""

from __future__ import annotations

import click

from streamproc.cli.calibrate import calibrate
from streamproc.cli.common import OneLineErrors
from streamproc.cli.demo import demo
from streamproc.cli.evaluate import eval_
from streamproc.cli.explain import explain
from streamproc.cli.policy import policy
from streamproc.cli.replay import replay, replay_sweep
from streamproc.cli.resources import publish, schemas, smoke, topics
from streamproc.cli.services import check_config, export_labels, quality, worker
from streamproc.cli.train import train

__all__ = ["cli", "main"]


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="streamproc")
def cli() -> None:
    """Streaming content moderation: Kafka in, vLLM-scored verdicts out."""


for _command in (
    worker,
    quality,
    check_config,
    schemas,
    topics,
    publish,
    smoke,
    policy,
    demo,
    eval_,
    replay,
    replay_sweep,
    calibrate,
    train,
    export_labels,
    explain,
):
    cli.add_command(_command)


def main() -> None:
    cli()

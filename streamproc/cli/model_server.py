"""The model-server options `streamproc eval`, `calibrate` and `train` share: running servers
(--vllm-url, --embedding-url) or servers started here for the command (--vllm-python with
--model-dir and/or --embedding-model-dir) and stopped after it. Only the servers the packs
need are started: the embedding server for packs with the embedding_probe scorer, the
generative one for every other scorer and for a cascade's second model."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import click

if TYPE_CHECKING:
    from streamproc.config import InferenceSettings, Settings
    from streamproc.dev.devstack import VllmServer
    from streamproc.policy import Policy

__all__ = [
    "CascadeOptions",
    "ModelServers",
    "ServerOptions",
    "cascade_options",
    "model_servers",
    "server_options",
]

_F = TypeVar("_F", bound=Callable[..., Any])
_FIELDS = (
    "vllm_url",
    "model_name",
    "vllm_python",
    "model_dir",
    "embedding_url",
    "embedding_model_name",
    "embedding_model_dir",
)


@dataclass(frozen=True)
class ServerOptions:
    """What the command line says about the model servers."""

    vllm_url: str | None = None
    model_name: str | None = None
    vllm_python: Path | None = None
    model_dir: Path | None = None
    embedding_url: str | None = None
    embedding_model_name: str | None = None
    embedding_model_dir: Path | None = None

    def check(self) -> None:
        """A running server or one to start, not both; a start needs the vLLM python."""
        starts = self.model_dir is not None or self.embedding_model_dir is not None
        if starts and self.vllm_python is None:
            raise click.UsageError(
                "--model-dir and --embedding-model-dir need --vllm-python (they start a server)"
            )
        if self.vllm_python is not None and not starts:
            raise click.UsageError(
                "--vllm-python needs --model-dir or --embedding-model-dir (a model to serve)"
            )
        if self.model_dir is not None and self.vllm_url is not None:
            raise click.UsageError(
                "give --vllm-url for a running server, or --model-dir to start one, not both"
            )
        if self.embedding_model_dir is not None and self.embedding_url is not None:
            raise click.UsageError(
                "give --embedding-url for a running embedding server, or --embedding-model-dir, not both"
            )


def server_options(command: _F) -> _F:
    """The model-server options, handed to the command as one ``servers: ServerOptions``."""
    path = functools.partial(click.Path, path_type=Path)
    options = [
        click.option("--vllm-url", default=None, help="Generative model server API root (default: the "
                     "settings' inference.base_url)."),
        click.option("--model-name", default=None, help="Served model name (default: the settings' "
                     "inference.model)."),
        click.option("--vllm-python", type=path(dir_okay=False), help="Start the servers the packs need "
                     "with this python (with --model-dir and/or --embedding-model-dir)."),
        click.option("--model-dir", type=path(file_okay=False), help="Generative model directory to serve."),
        click.option("--embedding-url", default=None, help="Embedding server API root (default: the "
                     "settings' embedding.base_url, else the generative server's)."),
        click.option("--embedding-model-name", default=None, help="Served name of the embedding model "
                     "(default: the settings' embedding.model, else the generative model's)."),
        click.option("--embedding-model-dir", type=path(file_okay=False), help="Backbone directory to serve "
                     "for embedding_probe packs (scripts/prepare_model.sh backbone)."),
    ]  # fmt: skip

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        servers = ServerOptions(**{name: kwargs.pop(name) for name in _FIELDS})
        servers.check()
        return command(*args, servers=servers, **kwargs)

    for option in reversed(options):  # click lists options in decoration order, outermost first
        wrapper = option(wrapper)
    return wrapper  # type: ignore[return-value]  # the same command, its options added


@dataclass(frozen=True)
class CascadeOptions:
    """What the command line says about the cascade's second model."""

    model: str | None = None
    url: str | None = None

    def other_names(self, model: str | None) -> list[str]:
        """Served names the generative server started here adds: the second model ``model``,
        unless it is on a server of its own."""
        return [model] if model and not self.url else []

    def settings(
        self, settings: Settings, inference: InferenceSettings, model: str | None
    ) -> InferenceSettings | None:
        """The second model ``model``'s client settings: the cascade section's, with ``--cascade-url``
        in place; None without a model."""
        from pydantic import ValidationError  # noqa: PLC0415

        from streamproc.config import CascadeSettings  # noqa: PLC0415

        if model is None:
            return None
        update = {"model": model, **({"base_url": self.url} if self.url else {})}
        try:
            cascade = CascadeSettings.model_validate({**settings.cascade.model_dump(), **update})
        except ValidationError as exc:
            raise click.BadParameter(str(exc.errors()[0]["msg"]), param_hint="--cascade-url") from exc
        # the main server's token and CA only when the second model is on it, as in the worker
        return cascade.inference(inference)


def cascade_options(model_help: str) -> Callable[[_F], _F]:
    """``--cascade-model`` (its help: ``model_help``) and ``--cascade-url``, handed to the
    command as one ``cascade: CascadeOptions``."""

    def decorate(command: _F) -> _F:
        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            options = CascadeOptions(kwargs.pop("cascade_model"), kwargs.pop("cascade_url"))
            return command(*args, cascade=options, **kwargs)

        url_help = (
            "API root of the second model's server (default: the settings' cascade.base_url, else "
            "the model server's)."
        )
        wrapper = click.option("--cascade-url", default=None, help=url_help)(wrapper)
        return click.option("--cascade-model", default=None, help=model_help)(wrapper)  # type: ignore[return-value]

    return decorate


#: Servers started here run on this machine's CPU: eager mode starts in about a third of the
#: time, and torch.compile's CPU graphs answered the channel scorer's long echoed prompts
#: slower than eager on 2-core machines (no model verdict in 7 minutes of `make demo`).
CPU_ARGS: Final = ("--enforce-eager",)


@dataclass(frozen=True)
class ModelServers:
    """The client settings for each server, once they answer."""

    generative: InferenceSettings
    #: None: the generative server's settings serve embeddings too.
    embedding: InferenceSettings | None


@contextlib.contextmanager
def model_servers(
    options: ServerOptions,
    settings: Settings,
    out: Path,
    *,
    packs: Sequence[Policy],
    other_names: Sequence[str] = (),
    roles: tuple[bool, bool] | None = None,
) -> Iterator[ModelServers]:
    """The servers to use: running ones, or vLLM servers started here and stopped after.
    ``roles`` (generative, embedding) overrides which ones the packs need."""
    from streamproc.dev.devstack import serving, sigterm_unwinds  # noqa: PLC0415 - only when starting one
    from streamproc.policy import model_roles  # noqa: PLC0415
    from streamproc.policy.tokenizer_tokens import register_tokenizers  # noqa: PLC0415

    generative = settings.inference.model_copy(
        update={
            "base_url": options.vllm_url or settings.inference.base_url,
            "model": options.model_name or settings.inference.model,
        }
    )
    given = {"base_url": options.embedding_url, "model": options.embedding_model_name}
    embedding = settings.embedding.model_copy(update={k: v for k, v in given.items() if v})
    # Prompts built here break the served tokenizers' own tokens too, as the worker's do.
    register_tokenizers([*settings.policy.tokenizer_dirs, *filter(None, [options.model_dir])])
    asks_generative, asks_embedding = roles or model_roles(packs)
    roles = (asks_generative or bool(other_names), asks_embedding)  # a cascade asks the generative server
    names = (generative.model, embedding.model or generative.model)
    starting = _to_start(options, roles, out, names, other_names)
    say = functools.partial(click.echo, err=True)
    for role, server in starting:
        say(f"starting the {role} vLLM server (a few minutes on CPU; log in {server.log_path}) …")
    with sigterm_unwinds(), serving([server for _, server in starting]):
        for role, server in starting:
            say(f"{role} model server {server.base_url} serving {server.served_model_name}")
            if role == "generative":
                generative = generative.model_copy(update={"base_url": server.base_url})
            else:
                embedding = embedding.model_copy(update={"base_url": server.base_url, "model": names[1]})
        yield ModelServers(generative, embedding.inference(generative))


def _to_start(
    options: ServerOptions,
    roles: tuple[bool, bool],
    out: Path,
    names: tuple[str, str],
    other_names: Sequence[str],
) -> list[tuple[str, VllmServer]]:
    """(role, server) of each server to start here: asked for, and given a model to serve."""
    from streamproc.dev.devstack import VllmServer  # noqa: PLC0415 - only when starting one

    python, (generative, embedding) = options.vllm_python, roles
    starting: list[tuple[str, VllmServer]] = []
    if python is not None and generative and options.model_dir is not None:
        server = VllmServer(
            python,
            options.model_dir,
            names[0],
            out / "vllm.log",
            other_names=other_names,
            extra_args=CPU_ARGS,
        )
        starting.append(("generative", server))
    if python is not None and embedding and options.embedding_model_dir is not None:
        server = VllmServer(
            python, options.embedding_model_dir, names[1], out / "vllm-embedding.log", pooling=True,
            extra_args=CPU_ARGS,
        )  # fmt: skip
        starting.append(("embedding", server))
    return starting

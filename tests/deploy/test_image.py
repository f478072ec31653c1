"""The Dockerfile, checked without a container engine.

It is parsed with BuildKit's own parser (the `dockerfile` package); its build context is
computed from .dockerignore with Docker's matching rules; the builder stage's wheel is built
from exactly the files that stage copies, with the same pip command; the HEALTHCHECK command
runs against the services' real health server.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
import zipfile
from dataclasses import dataclass, field
from email.parser import Parser
from pathlib import Path, PurePosixPath

import dockerfile
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from prometheus_client import CollectorRegistry

from streamproc.config import MetricsSettings, QualitySettings
from streamproc.policy import load_policy_set
from streamproc.stream.health import HealthServer
from streamproc.topics import load_topic_specs
from tests.deploy.streamproc_env import settings_from

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
#: The image's runtime dependencies with their hashes (scripts/lock_image.sh).
LOCK = ROOT / "requirements" / "image.txt"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
#: What a context must leave out to stay small.
NOT_IN_CONTEXT = [".git", ".venv", "tests", "load", "deploy", "helm", ".demo", ".eval", "samples"]
CONTEXT_LIMIT_BYTES = 5_000_000


@dataclass
class Stage:
    base: str
    name: str
    commands: list[dockerfile.Command] = field(default_factory=list)

    def all(self, cmd: str) -> list[dockerfile.Command]:
        return [c for c in self.commands if c.cmd == cmd]

    def last(self, cmd: str) -> dockerfile.Command:
        found = self.all(cmd)
        assert found, f"stage {self.name!r} has no {cmd}"
        return found[-1]

    def env(self) -> dict[str, str]:
        """ENV key=value pairs, unquoted the way BuildKit's shell lexer does."""
        pairs: dict[str, str] = {}
        for command in self.all("ENV"):
            values = command.value
            for key, raw in zip(values[::2], values[1::2], strict=True):
                (pairs[key],) = shlex.split(raw) or [""]
        return pairs

    def workdir(self) -> PurePosixPath:
        return PurePosixPath(self.last("WORKDIR").value[0])


def parse_stages() -> list[Stage]:
    stages: list[Stage] = []
    for command in dockerfile.parse_file(str(DOCKERFILE)):
        if command.cmd == "FROM":
            assert not command.flags, f"line {command.start_line}: FROM takes no flags here (--platform)"
            base, *rest = command.value
            assert len(rest) == 2 and rest[0].upper() == "AS", f"line {command.start_line}: name every stage"
            stages.append(Stage(base, rest[1]))
        else:
            assert stages, f"line {command.start_line}: {command.cmd} before the first FROM"
            stages[-1].commands.append(command)
    return stages


STAGES = parse_stages()
BUILDER, RUNTIME = STAGES[0], STAGES[-1]


def flag(command: dockerfile.Command, name: str) -> str | None:
    for item in command.flags:
        key, _, value = str(item).partition("=")
        if key == f"--{name}":
            return value
    return None


# -- .dockerignore, with Docker's rules (moby patternmatcher) ---------------------------------


def _pattern(text: str) -> re.Pattern[str]:
    """Go filepath.Match syntax plus `**` (any number of folders), anchored at the context root."""
    out, i = "", 0
    while i < len(text):
        if text.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif text.startswith("**", i):
            out, i = out + ".*", i + 2
        elif text[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif text[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(text[i]), i + 1
    return re.compile(out + r"\Z")


def ignore_rules() -> list[tuple[bool, re.Pattern[str], str]]:  # (negated, regex, pattern)
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        negated = text.startswith("!")
        cleaned = os.path.normpath(text.lstrip("!").strip()).lstrip("/")
        rules.append((negated, _pattern(cleaned), cleaned))
    return rules


RULES = ignore_rules()


Rules = list[tuple[bool, re.Pattern[str], str]]


def in_context(relative: str, rules: Rules | None = None) -> bool:
    """Whether Docker sends this path: the last pattern matching it or a parent folder decides."""
    parts = relative.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    included = True
    for negated, regex, _ in RULES if rules is None else rules:
        if any(regex.match(candidate) for candidate in candidates):
            included = negated
    return included


def context_files() -> list[str]:
    """Every file of the build context (folders that no `!` pattern reopens are not walked)."""
    reopened = [text for negated, _, text in RULES if negated]
    files = []
    for folder, dirs, names in os.walk(ROOT):
        rel_folder = Path(folder).relative_to(ROOT).as_posix()
        prefix = "" if rel_folder == "." else rel_folder + "/"
        dirs[:] = [
            d
            for d in dirs
            if in_context(prefix + d) or any(text.startswith(prefix + d + "/") for text in reopened)
        ]
        files += [prefix + name for name in names if in_context(prefix + name)]
    return sorted(files)


CONTEXT = context_files()


def test_the_matcher_follows_docker_rules() -> None:
    """The matcher itself, on the rules' documented cases (so the checks below mean something)."""
    allow: Rules = [
        (False, _pattern("*"), ""),
        (True, _pattern("src"), ""),
        (False, _pattern("**/*.pyc"), ""),
    ]
    assert not in_context("README.md", allow)
    assert in_context("src/a/b.py", allow)
    assert not in_context("src/a/b.pyc", allow)
    one_level: Rules = [(False, _pattern("docs/*.md"), "")]
    assert not in_context("docs/a.md", one_level)
    assert in_context("docs/sub/a.md", one_level)
    assert not in_context("docs/a.md/x", one_level), "a matching parent folder excludes what is in it"


# -- the stages -----------------------------------------------------------------------------


def test_stages_are_builder_then_runtime() -> None:
    assert [s.name for s in STAGES] == ["builder", "runtime"]
    names = {s.name for s in STAGES}
    for index, stage in enumerate(STAGES):
        assert stage.base not in names, f"stage {stage.name} starts from another stage; start from python"
        for copy in stage.all("COPY"):
            source_stage = flag(copy, "from")
            if source_stage is not None:
                earlier = [s.name for s in STAGES[:index]]
                assert source_stage in earlier, f"COPY --from={source_stage} names no earlier stage"
    used = {flag(c, "from") for c in RUNTIME.all("COPY")}
    assert BUILDER.name in used, "the runtime stage copies nothing from the builder"


def _base(stage: Stage) -> tuple[str, str, str]:
    """(image, tag, digest) of `image:tag@sha256:digest`."""
    reference, _, digest = stage.base.partition("@")
    image, _, tag = reference.partition(":")
    return image, tag, digest


def test_base_images_are_pinned_python_slim_by_tag_and_digest() -> None:
    for stage in STAGES:
        assert "$" not in stage.base, f"stage {stage.name}: a literal base image, not a build argument"
        image, tag, digest = _base(stage)
        assert image == "python"
        assert re.fullmatch(r"3\.11\.\d+-slim-\w+", tag), f"{tag}: a patch-pinned 3.11 slim tag"
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), f"stage {stage.name}: pin {stage.base} by digest"
    # The runtime runs the builder's virtualenv: the same interpreter must be at the same path.
    assert BUILDER.base == RUNTIME.base
    assert PYPROJECT["requires-python"] == ">=3.11"


def test_no_add_from_urls() -> None:
    for stage in STAGES:
        for add in stage.all("ADD"):
            sources = add.value[:-1]
            assert not any(re.match(r"[a-z]+://|git@", s) for s in sources), (
                f"line {add.start_line}: {add.original}"
            )


def test_runs_as_a_fixed_non_root_user() -> None:
    user = RUNTIME.last("USER").value[0]
    match = re.fullmatch(r"(\d+):(\d+)", user)
    assert match, f"USER {user}: numeric uid:gid, so Kubernetes runAsNonRoot can verify it"
    uid, gid = match.groups()
    assert int(uid) >= 10000 and int(gid) >= 10000
    runs = " ".join(c.value[0] for c in RUNTIME.all("RUN"))
    assert f"--uid {uid}" in runs and f"--gid {gid}" in runs, "create the user with that uid and gid"
    # USER comes after the last RUN: nothing the entrypoint runs as root.
    last_run = max(c.start_line for c in RUNTIME.all("RUN"))
    assert RUNTIME.last("USER").start_line > last_run


def test_entrypoint_command_ports_and_healthcheck() -> None:
    assert RUNTIME.last("ENTRYPOINT").json and RUNTIME.last("ENTRYPOINT").value == ("streamproc",)
    assert RUNTIME.last("CMD").json and RUNTIME.last("CMD").value == ("worker",)
    exposed = {port for c in RUNTIME.all("EXPOSE") for port in c.value}
    assert exposed == {str(MetricsSettings().port), str(QualitySettings().metrics_port)}
    healthcheck = RUNTIME.last("HEALTHCHECK")
    assert healthcheck.json and healthcheck.value[0] == "CMD", "HEALTHCHECK CMD in exec form"
    assert "/healthz" in " ".join(healthcheck.value)


def test_only_locked_runtime_dependencies_are_installed() -> None:
    runs = [c.value[0] for stage in STAGES for c in stage.all("RUN")]
    installs = [found.strip() for run in runs for found in re.findall(r"pip install ([^&]+)", run)]
    expected = [f"--require-hashes -r {LOCK.relative_to(ROOT)}", "--no-deps /wheels/streamproc-*.whl"]
    assert installs == expected, f"the lock with its hashes, then the wheel alone: {installs}"
    assert any("pip check" in run for run in runs), "the lock must satisfy what the wheel requires"


def _locked() -> dict[str, tuple[Version, int]]:
    """requirements/image.txt: normalised name -> (pinned version, number of hashes)."""
    locked: dict[str, tuple[Version, int]] = {}
    text = LOCK.read_text().replace("\\\n", " ")
    for raw in text.splitlines():
        line = raw.partition("#")[0].strip()
        if not line:
            continue
        spec, *options = line.split(" --")
        requirement = Requirement(spec)
        (pin,) = requirement.specifier
        assert pin.operator == "==", f"{line[:60]}: pin with =="
        hashes = [o for o in options if re.fullmatch(r"hash=sha256:[0-9a-f]{64}", o.strip())]
        locked[canonicalize_name(requirement.name)] = (Version(pin.version), len(hashes))
    return locked


def test_the_lock_pins_each_runtime_dependency_within_its_range_with_hashes() -> None:
    locked = _locked()
    for name, (_, hashes) in locked.items():
        assert hashes, f"{name}: no --hash in {LOCK.name}"
    for dependency in map(Requirement, PYPROJECT["dependencies"]):
        name = canonicalize_name(dependency.name)
        assert name in locked, f"{name} is not in {LOCK.name}: run `make lock`"
        assert dependency.specifier.contains(locked[name][0]), (
            f"{name}=={locked[name][0]} is outside pyproject's {dependency.specifier}: run `make lock`"
        )
    extras = [d for group in PYPROJECT["optional-dependencies"].values() for d in group]
    runtime = {canonicalize_name(Requirement(d).name) for d in PYPROJECT["dependencies"]}
    extras_only = {canonicalize_name(Requirement(d).name) for d in extras} - runtime
    assert not extras_only & locked.keys(), f"extras in the image's lock: {extras_only & locked.keys()}"


def test_runtime_environment_is_valid_settings() -> None:
    env = RUNTIME.env()
    assert env["PYTHONDONTWRITEBYTECODE"] == "1", "a read-only root filesystem has no room for .pyc files"
    settings = settings_from({k: v for k, v in env.items() if k.startswith("STREAMPROC_")})
    # The packs and the store are at absolute paths: independent of the working directory.
    (packs,) = settings.policy.paths
    assert packs.is_absolute() and settings.quality.data_dir.is_absolute()
    copied = {
        str(RUNTIME.workdir() / c.value[-1]).rstrip("/"): c.value[0].rstrip("/") for c in RUNTIME.all("COPY")
    }
    assert copied.get(str(packs)) == "policies", f"{packs}: where the image copies policies/"
    assert copied.get(str(RUNTIME.workdir() / "topics")) == "topics", "topic specs in WORKDIR/topics"
    runs = " ".join(c.value[0] for c in RUNTIME.all("RUN"))
    user = RUNTIME.last("USER").value[0]
    assert f"chown {user} {settings.quality.data_dir}" in runs, "the store folder must belong to the user"


def test_shipped_packs_and_topic_specs_load() -> None:
    """What the image carries as defaults is usable as it is."""
    assert load_policy_set([ROOT / "policies"]).policies
    assert load_topic_specs(ROOT / "topics")


def test_labels_follow_the_project() -> None:
    labels: dict[str, str] = {}
    for command in RUNTIME.all("LABEL"):
        for key, raw in zip(command.value[::2], command.value[1::2], strict=True):
            (labels[key],) = shlex.split(raw)
    version_arg = {a.value[0].partition("=")[0]: a.value[0].partition("=")[2] for a in RUNTIME.all("ARG")}
    assert labels["org.opencontainers.image.version"] == "${VERSION}"
    assert version_arg["VERSION"] == PYPROJECT["version"]
    assert labels["org.opencontainers.image.licenses"] == PYPROJECT["license"]
    assert labels["org.opencontainers.image.title"] == PYPROJECT["name"]
    image, tag, digest = _base(RUNTIME)
    assert labels["org.opencontainers.image.base.name"] == f"docker.io/library/{image}:{tag}"
    assert labels["org.opencontainers.image.base.digest"] == digest


# -- the build context ----------------------------------------------------------------------


def test_every_copy_source_is_in_the_context() -> None:
    for stage in STAGES:
        for copy in stage.all("COPY"):
            if flag(copy, "from") is not None:
                continue
            for source in copy.value[:-1]:
                path = ROOT / source
                assert path.exists(), f"line {copy.start_line}: COPY {source}: not in the repository"
                rel = source.rstrip("/")
                assert any(f == rel or f.startswith(rel + "/") for f in CONTEXT), (
                    f"line {copy.start_line}: COPY {source}: excluded by .dockerignore"
                )


def test_the_context_is_small() -> None:
    for folder in NOT_IN_CONTEXT:
        assert not in_context(folder + "/x"), f"{folder}/ is in the build context; add it to .dockerignore"
    caches = [f for f in CONTEXT if "__pycache__" in f or f.endswith(".pyc")]
    assert not caches, f"caches in the build context: {caches[:5]}"
    size = sum((ROOT / f).stat().st_size for f in CONTEXT)
    assert size < CONTEXT_LIMIT_BYTES, f"build context of {size} bytes"
    assert "streamproc/cli/__init__.py" in CONTEXT and "LICENSE" in CONTEXT


# -- the wheel the builder builds -----------------------------------------------------------


def _builder_tree(destination: Path) -> Path:
    """The builder's WORKDIR after its COPY instructions, from the files of the context."""
    for copy in BUILDER.all("COPY"):
        *sources, target = copy.value
        for source in sources:
            rel = source.rstrip("/")
            base = destination / target
            for name in CONTEXT:
                if name == rel:
                    out = base / Path(rel).name if target.endswith("/") else base
                elif name.startswith(rel + "/"):
                    out = base / name[len(rel) + 1 :]
                else:
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, out)
    return destination


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    runs = [c.value[0] for c in BUILDER.all("RUN")]
    command = "pip wheel --no-deps --wheel-dir /wheels ."
    assert any(run.startswith(command) for run in runs), f"the builder builds with `{command}`"
    tree = _builder_tree(tmp_path_factory.mktemp("src"))
    out = tmp_path_factory.mktemp("wheels")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--wheel-dir",
            str(out),
            ".",
        ],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, (
        f"the builder's wheel does not build from what it copies:\n{result.stderr[-3000:]}"
    )
    (built,) = out.glob("streamproc-*.whl")
    return built


def test_wheel_holds_the_package(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        dist_info = f"streamproc-{PYPROJECT['version']}.dist-info"
        metadata = Parser().parsestr(archive.read(f"{dist_info}/METADATA").decode())
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
    sources = {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "streamproc").rglob("*.py")
        if "__pycache__" not in p.parts
    }
    missing = sorted(sources - names)
    assert not missing, f"modules missing from the wheel: {missing[:10]}"
    assert "streamproc/py.typed" in names
    assert f"{dist_info}/licenses/LICENSE" in names
    assert not [n for n in names if n.startswith(("tests/", "load/", "policies/"))]
    assert "streamproc = streamproc.cli:main" in entry_points
    assert metadata["License-Expression"] == "Apache-2.0"
    requires = metadata.get_all("Requires-Dist") or []
    unconditional = [r for r in requires if "extra ==" not in r]
    assert not [r for r in unconditional if r.startswith(("matplotlib", "pytest", "calfkit"))], unconditional
    assert len(unconditional) == len(PYPROJECT["dependencies"])


def test_license_is_the_apache_2_text() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License\n                           Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text and len(text.splitlines()) == 202


# -- the HEALTHCHECK against the real health server ------------------------------------------


def _healthcheck(port: int) -> int:
    _, program, *args = RUNTIME.last("HEALTHCHECK").value
    assert program == "python"
    env = {**os.environ, "STREAMPROC_METRICS__PORT": str(port)}
    return subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, timeout=30, check=False
    ).returncode


def test_healthcheck_follows_healthz() -> None:
    live = HealthServer(CollectorRegistry(), "127.0.0.1", 0, liveness_bound_seconds=60.0)
    # No heartbeat within the bound: the loop counts as blocked and /healthz answers 503.
    blocked = HealthServer(CollectorRegistry(), "127.0.0.1", 0, liveness_bound_seconds=0.01)
    time.sleep(0.05)
    try:
        assert _healthcheck(live.port) == 0, "a live service must pass the HEALTHCHECK"
        assert _healthcheck(blocked.port) != 0, "a blocked service must fail the HEALTHCHECK"
    finally:
        live.close()
        blocked.close()
    assert _healthcheck(live.port) != 0, "nothing listening must fail the HEALTHCHECK"

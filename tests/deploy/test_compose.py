"""deploy/docker-compose.yml, checked by Docker Compose v2 itself (`config` needs no engine).

scripts/tools/compose.sh installs the pinned compose binary; the resolved model it prints
(`config --format json`) is what the checks below read, so YAML anchors, merges and variable
defaults are applied exactly as `docker compose up` would apply them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamproc.topics import load_topic_specs
from tests.deploy.streamproc_env import PREFIX, settings_from
from tests.deploy.vllm_cli import parse_serve_args

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
ENV_EXAMPLE = DEPLOY / "compose.env.example"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
ALL_PROFILES = ("gpu", "cpu")
STREAMPROC_SERVICES = ("topics", "worker", "quality")
Model = dict[str, Any]


@pytest.fixture(scope="module")
def compose() -> Path:
    """The docker-compose binary (installed once into the cache by scripts/tools/compose.sh)."""
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "tools" / "compose.sh")],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, (
        f"scripts/tools/compose.sh could not install docker compose:\n{result.stderr}"
    )
    return Path(result.stdout.strip().splitlines()[-1])


def run_compose(
    compose: Path,
    *args: str,
    file: Path = COMPOSE_FILE,
    profiles: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    env_file: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """`docker compose -f FILE [--profile P]... ARGS` with only PATH and HOME from this process
    (no stray variables, no deploy/.env of a developer), plus ``env``."""
    base_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root")}
    options = ["-f", str(file), "--env-file", str(env_file or os.devnull)]
    for profile in profiles:
        options += ["--profile", profile]
    return subprocess.run(
        [str(compose), *options, *args],
        env={**base_env, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def resolved(
    compose: Path, profiles: tuple[str, ...] = ALL_PROFILES, env: dict[str, str] | None = None
) -> Model:
    result = run_compose(compose, "config", "--format", "json", profiles=profiles, env=env)
    assert result.returncode == 0, result.stderr
    model: Model = json.loads(result.stdout)
    return model


@pytest.fixture(scope="module")
def model(compose: Path) -> Model:
    return resolved(compose)


# -- the compose implementation accepts the file, and rejects broken ones --------------------


@pytest.mark.parametrize(
    "profiles", [(), ("gpu",), ("cpu",), ALL_PROFILES], ids=["none", "gpu", "cpu", "all"]
)
def test_compose_config_accepts_the_file(compose: Path, profiles: tuple[str, ...]) -> None:
    result = run_compose(compose, "config", "-q", profiles=profiles)
    assert result.returncode == 0, result.stderr
    assert "level=warning" not in result.stderr and "WARN" not in result.stderr, result.stderr


BREAKAGES = {
    # An unknown key (a typo) in a service.
    "unknown key": ("    command: [worker]\n", "    command: [worker]\n    replica: 3\n"),
    # A dependency on a service that does not exist.
    "undefined dependency": (
        "      topics:\n        condition: service_completed",
        "      topic:\n        condition: service_completed",
    ),
    # A wrong type.
    "wrong type": ("replicas: ${WORKER_REPLICAS:-2}", "replicas: many"),
    # An unknown dependency condition.
    "bad condition": ("condition: service_completed_successfully", "condition: service_done"),
    # A named volume that is not declared.
    "undeclared volume": ("- quality-data:/var/lib/streamproc", "- quality-store:/var/lib/streamproc"),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_compose_config_rejects_a_broken_copy(compose: Path, tmp_path: Path, breakage: str) -> None:
    """The validator is real: the same file with one mistake fails."""
    old, new = BREAKAGES[breakage]
    text = COMPOSE_FILE.read_text()
    assert old in text, f"the {breakage!r} case no longer applies to the file; update it"
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(text.replace(old, new, 1))
    result = run_compose(compose, "config", "-q", file=broken, profiles=ALL_PROFILES)
    assert result.returncode != 0, f"docker compose accepted a file with {breakage}"


def test_compose_spec_schema(tmp_path: Path) -> None:
    check = [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec"]
    result = subprocess.run([*check, str(COMPOSE_FILE)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    broken = tmp_path / "docker-compose.yml"
    text = COMPOSE_FILE.read_text()
    assert "    hostname: kafka\n" in text
    broken.write_text(text.replace("    hostname: kafka\n", "    hostname: kafka\n    hostnme: kafka\n", 1))
    result = subprocess.run([*check, str(broken)], capture_output=True, text=True, check=False)
    assert result.returncode != 0, "the compose-spec schema accepted an unknown service key"


def test_yaml_style() -> None:
    config = "{extends: default, rules: {line-length: {max: 130}, document-start: disable}}"
    lint = [sys.executable, "-m", "yamllint", "--strict", "-d", config, str(COMPOSE_FILE)]
    result = subprocess.run(lint, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_env_example_documents_every_variable(compose: Path) -> None:
    """Every ${VARIABLE} the file reads is in deploy/compose.env.example, which compose accepts."""
    used = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", COMPOSE_FILE.read_text()))
    documented = set(re.findall(r"^#?\s*([A-Z_][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), re.MULTILINE))
    assert used <= documented, f"document these in {ENV_EXAMPLE.name}: {sorted(used - documented)}"
    assert not [name for name in used if name.startswith(PREFIX)], "STREAMPROC_* names are settings only"
    result = run_compose(compose, "config", "-q", env_file=ENV_EXAMPLE)
    assert result.returncode == 0, result.stderr


# -- what the file says ---------------------------------------------------------------------


def test_images_are_pinned(model: Model) -> None:
    for name, service in model["services"].items():
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{name}: {image} has no tag"
        assert tag != "latest" and re.search(r"\d", tag), f"{name}: pin {image} to a version"
    for name in STREAMPROC_SERVICES:
        assert model["services"][name]["image"] == f"streamproc:{VERSION}", (
            "the image tag is the project version"
        )


def test_bind_mounts_and_build_context_exist(model: Model) -> None:
    for name, service in model["services"].items():
        for volume in service.get("volumes", []):
            if volume["type"] != "bind":
                assert volume["source"] in model["volumes"], f"{name}: undeclared volume {volume['source']}"
                continue
            source = Path(volume["source"])
            assert source.is_relative_to(ROOT), f"{name}: {source} is outside the repository"
            assert source.exists(), f"{name}: bind mount {source.relative_to(ROOT)} does not exist"
            assert volume.get("read_only"), f"{name}: mount {source.relative_to(ROOT)} read-only"
        if "build" in service:
            context = Path(service["build"]["context"])
            assert (context / service["build"]["dockerfile"]).is_file(), f"{name}: no Dockerfile at {context}"
    mounts = {
        (name, Path(v["source"]).relative_to(ROOT).as_posix()): v["target"]
        for name, service in model["services"].items()
        for v in service.get("volumes", [])
        if v["type"] == "bind"
    }
    assert (ROOT / "deploy/prometheus/prometheus.yml").is_file()
    assert list((ROOT / "deploy/prometheus/rules").glob("*.y*ml")), (
        "no alert rules in deploy/prometheus/rules"
    )
    assert list((ROOT / "deploy/grafana/dashboards").glob("*.json")), (
        "no dashboards in deploy/grafana/dashboards"
    )
    assert ("prometheus", "deploy/prometheus/prometheus.yml") in mounts
    assert ("grafana", "deploy/grafana/provisioning") in mounts


def test_streamproc_environment_is_valid_settings(model: Model) -> None:
    for name in STREAMPROC_SERVICES:
        env = model["services"][name]["environment"]
        settings = settings_from(env)
        assert settings.kafka.bootstrap_servers == "kafka:9092"
    quality = model["services"]["quality"]
    data_dir = str(settings_from(quality["environment"]).quality.data_dir)
    assert [v["source"] for v in quality["volumes"] if v["target"] == data_dir] == ["quality-data"]


def test_streamproc_containers_are_locked_down(model: Model) -> None:
    for name in STREAMPROC_SERVICES:
        service = model["services"][name]
        assert service["read_only"] is True and service["tmpfs"] == ["/tmp"]  # noqa: S108 - a tmpfs
        assert service["cap_drop"] == ["ALL"] and "no-new-privileges:true" in service["security_opt"]


def test_topics_run_once_before_the_services(model: Model) -> None:
    services = model["services"]
    assert services["topics"]["command"] == [
        "topics",
        "apply",
        "--bootstrap",
        "kafka:9092",
        "--replication-factor",
        "1",
    ]
    assert services["topics"]["restart"] == "no"
    assert services["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert "test" in services["kafka"]["healthcheck"]
    for name in ("worker", "quality"):
        assert services[name]["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller", "KRaft, one node"


def test_workers_scale_with_a_variable(compose: Path, model: Model) -> None:
    assert model["services"]["worker"]["deploy"]["replicas"] == 2
    assert resolved(compose, env={"WORKER_REPLICAS": "6"})["services"]["worker"]["deploy"]["replicas"] == 6
    partitions = min(
        spec.partitions for spec in load_topic_specs(ROOT / "topics") if spec.name.startswith("content.")
    )
    assert model["services"]["worker"]["deploy"]["replicas"] <= partitions
    assert "replicas" not in model["services"]["quality"].get("deploy", {}) or (
        model["services"]["quality"]["deploy"]["replicas"] == 1
    )


def test_model_servers(compose: Path, model: Model) -> None:
    services = model["services"]
    gpu, cpu = services["vllm"], services["vllm-cpu"]
    assert gpu["image"].startswith("vllm/vllm-openai:") and cpu["image"].startswith("vllm/vllm-openai-cpu:")
    assert gpu["image"].split(":")[1] == cpu["image"].split(":")[1].removesuffix("-x86_64"), (
        "one vLLM version"
    )
    assert gpu["profiles"] == ["gpu"] and cpu["profiles"] == ["cpu"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"]
    worker_env = services["worker"]["environment"]
    for server in (gpu, cpu):
        args = server["command"]
        assert {"--enable-prefix-caching", "--enable-prompt-tokens-details"} <= set(args)
        assert args[args.index("--served-model-name") + 1] == worker_env["STREAMPROC_INFERENCE__MODEL"]
        assert "/health" in " ".join(server["healthcheck"]["test"])
        assert "HF_TOKEN" in server["environment"]
        assert [v["target"] for v in server["volumes"]] == ["/root/.cache/huggingface"]
    # Both answer at the host name the workers use: the CPU server through a network alias.
    host = re.match(r"http://([^:/]+):8000/v1$", worker_env["STREAMPROC_INFERENCE__BASE_URL"])
    assert host and host.group(1) == "vllm" and "vllm" in cpu["networks"]["default"]["aliases"]
    assert "vllm" not in resolved(compose, profiles=())["services"], (
        "the GPU server starts only with its profile"
    )


def test_generative_servers_fetch_media_only_from_the_allowed_domains(compose: Path, model: Model) -> None:
    """VLLM_ALLOWED_MEDIA_DOMAINS becomes --allowed-media-domains of both profiles' server as
    vLLM's own parser reads the command; unset, the flag is left out. Redirects are off."""
    hosts = ["images.cdn.example.com", "frames.cdn.example.com"]
    chosen = resolved(compose, env={"VLLM_ALLOWED_MEDIA_DOMAINS": " ".join(hosts)})
    servers = ("vllm", "vllm-cpu")
    commands = [m["services"][name]["command"] for m in (chosen, model) for name in servers]
    parsed = parse_serve_args(*commands)
    assert [p["allowed_media_domains"] for p in parsed] == [hosts, hosts, None, None]
    for options in parsed:  # the rest of the command as before
        assert options["served_model_name"] == ["moderation"] and options["max_logprobs"] == 20
        assert options["enable_prefix_caching"] is True and options["enable_prompt_tokens_details"] is True
    assert [p["max_model_len"] for p in parsed] == [8192, 4096, 8192, 4096]
    for name in servers:
        assert model["services"][name]["environment"]["VLLM_MEDIA_URL_ALLOW_REDIRECTS"] == "0", name


def test_health_checks_follow_the_ports(model: Model) -> None:
    quality = model["services"]["quality"]
    probe = " ".join(quality["healthcheck"]["test"])
    port = settings_from(quality["environment"]).quality.metrics_port
    assert f"http://127.0.0.1:{port}/healthz" in probe or "STREAMPROC_QUALITY__METRICS_PORT" in probe
    assert quality["expose"] == [str(port)]
    assert model["services"]["worker"]["expose"] == [str(settings_from({}).metrics.port)]


def test_prometheus_scrapes_the_services(model: Model) -> None:
    """deploy/prometheus/prometheus.yml names the compose services at the ports they serve on."""
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    services = model["services"]
    names = set(services) | {
        a
        for s in services.values()
        for n in s.get("networks", {}).values()
        for a in (n or {}).get("aliases", [])
    }
    targets: set[str] = set()
    for job in config["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            targets |= {f"{host}:{sd['port']}" for host in sd["names"]}
        for static in job.get("static_configs", []):
            targets |= set(static["targets"])
    assert {"worker:9108", "quality:9109", "vllm:8000", "vllm-embedding:8000"} <= targets, targets
    for target in targets:
        assert target.split(":")[0] in names, f"prometheus scrapes {target}: no such compose service"
    rules_mount = next(
        v["target"] for v in services["prometheus"]["volumes"] if v["source"].endswith("rules")
    )
    for pattern in config.get("rule_files", []):
        assert pattern.startswith(rules_mount + "/"), (
            f"rule_files {pattern}: the rules are mounted at {rules_mount}"
        )


def test_grafana_provisioning_matches_the_mounts(model: Model) -> None:
    grafana = model["services"]["grafana"]
    mounts = {Path(v["source"]).name: v["target"] for v in grafana["volumes"] if v["type"] == "bind"}
    providers = [
        provider
        for path in (DEPLOY / "grafana" / "provisioning" / "dashboards").glob("*.y*ml")
        for provider in yaml.safe_load(path.read_text()).get("providers", [])
    ]
    assert providers, "no dashboard provider in deploy/grafana/provisioning/dashboards"
    assert {p["options"]["path"] for p in providers} == {mounts["dashboards"]}
    datasources = [
        source
        for path in (DEPLOY / "grafana" / "provisioning" / "datasources").glob("*.y*ml")
        for source in yaml.safe_load(path.read_text()).get("datasources", [])
    ]
    assert any(
        s["type"] == "prometheus" and s["url"].rstrip("/") == "http://prometheus:9090" for s in datasources
    )

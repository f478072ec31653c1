"""The chart's `helm test` pod: `streamproc smoke` with the services' settings, nothing more.

What `streamproc smoke` itself does against a real broker and worker is in
tests/integration/test_pipeline.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import pytest

from streamproc.cli import cli
from tests.deploy.test_helm import find, render, rendered, rendered_with, settings

pytestmark = pytest.mark.deploy
SUFFIX = "-smoke-test"


def smoke_pod(docs: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    return find(docs, "Pod", SUFFIX)


def test_the_smoke_test_is_a_helm_test_hook_running_streamproc_smoke() -> None:
    pod = smoke_pod(render("default"))
    annotations = pod["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "test"
    assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation"  # logs kept until the next run
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Never" and spec["automountServiceAccountToken"] is False
    [container] = spec["containers"]
    timeout = int(container["args"][container["args"].index("--timeout") + 1])
    assert spec["activeDeadlineSeconds"] > timeout  # the command reports before Kubernetes kills it
    # The arguments are ones the image's command line takes (parsed, not run).
    command, *options = container["args"]
    smoke = cli.get_command(click.Context(cli), command)
    assert smoke is not None, f"streamproc has no {command} command"
    assert smoke.make_context(command, options).params["within"] == timeout
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert spec["securityContext"]["runAsNonRoot"] is True


def test_it_reads_the_services_settings_but_not_the_model_servers_api_key() -> None:
    docs = rendered(*settings("inference.apiKey.value=secret", "embedding.enabled=true"))
    [container] = smoke_pod(docs)["spec"]["containers"]
    assert container["envFrom"] == [{"configMapRef": {"name": "mod-streamproc-config"}}]
    assert not [e for e in container.get("env", []) if "API_KEY" in e["name"]]
    # The same ConfigMap gives the workers their topics and Kafka settings.
    worker = find(docs, "Deployment", "-worker")["spec"]["template"]["spec"]["containers"][0]
    assert {"configMapRef": {"name": "mod-streamproc-config"}} in worker["envFrom"]
    assert [e["name"] for e in worker["env"] if "API_KEY" in e["name"]]


def test_certificates_and_extras_reach_it_as_they_reach_the_workers(tmp_path: Path) -> None:
    chosen = {
        "kafka": {"extraEnv": [{"name": "FROM", "value": "kafka"}]},
        "extraVolumes": [{"name": "kafka-ca", "secret": {"secretName": "kafka-ca"}}],
        "extraVolumeMounts": [{"name": "kafka-ca", "mountPath": "/etc/kafka-ca", "readOnly": True}],
        "smokeTest": {"extraEnv": [{"name": "FROM", "value": "smoke"}], "podAnnotations": {"a": "b"}},
        "config": {"file": {"kafka": {"security_protocol": "SSL"}}},
    }
    pod = smoke_pod(rendered_with(tmp_path, chosen))
    [container] = pod["spec"]["containers"]
    assert [e["value"] for e in container["env"] if e["name"] == "FROM"] == ["kafka", "smoke"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["kafka-ca"] == "/etc/kafka-ca"
    assert mounts["config-file"] == "/etc/streamproc/config"  # STREAMPROC_CONFIG_FILE points there
    assert {v["name"] for v in pod["spec"]["volumes"]} == {"tmp", "kafka-ca", "config-file"}
    assert pod["metadata"]["annotations"]["a"] == "b"


def test_its_network_policy_allows_dns_and_kafka_only() -> None:
    docs = render("default")
    smoke = find(docs, "NetworkPolicy", SUFFIX)["spec"]
    topics = find(docs, "NetworkPolicy", "-topics")["spec"]
    assert smoke["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "smoke-test"
    assert smoke["egress"] == topics["egress"] and "ingress" not in smoke


def test_it_can_be_turned_off() -> None:
    docs = rendered(*settings("smokeTest.enabled=false"))
    assert not [d for d in docs if d["metadata"]["name"].endswith(SUFFIX)]

"""Every bad setting, flag or argument a new user tries is one line on stderr naming what to fix.

Exit status 2 for a usage or configuration error, 1 for a failure at run time. Most cases
run the real command line in-process (CliRunner); a few run it as a process, to show that
no traceback or warning reaches stderr.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner

from streamproc.cli import cli
from streamproc.config import CONFIG_FILE_ENV
from streamproc.dev.devstack import free_port

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples" / "listings.jsonl"
BAD_RULE = "owner_lists ++ )"


@dataclass(frozen=True)
class Case:
    """One command line as a user would type it; ``{tmp}`` is a scratch folder, ``{port}`` a closed port."""

    id: str
    args: list[str]
    says: list[str]
    exit_code: int = 2
    env: dict[str, str] = field(default_factory=dict)
    never_says: list[str] = field(default_factory=list)


CASES = [
    Case(
        "list-setting-given-a-plain-value",
        ["check-config"],
        ["STREAMPROC_POLICY__PATHS must be JSON, e.g. '[\"policies/listings.yaml\"]'"],
        env={"STREAMPROC_POLICY__PATHS": "policies/listings.yaml"},
    ),
    Case(
        "dict-setting-given-a-plain-value",
        ["check-config"],
        ["STREAMPROC_AUDIT__DECISION_RATES must be JSON, e.g. '{\"review\": 0.1}'"],
        env={"STREAMPROC_AUDIT__DECISION_RATES": "review=0.1"},
    ),
    Case(
        "section-given-a-plain-value",
        ["check-config"],
        ["STREAMPROC_KAFKA must be a JSON object", "STREAMPROC_KAFKA__<FIELD>"],
        env={"STREAMPROC_KAFKA": "kafka:9092"},
    ),
    Case(
        "config-file-missing",
        ["check-config"],
        [f"{CONFIG_FILE_ENV} names {{tmp}}/nope.yaml", "does not exist"],
        env={CONFIG_FILE_ENV: "{tmp}/nope.yaml"},
    ),
    Case(
        "config-option-missing-file",
        ["check-config", "--config", "{tmp}/nope.yaml"],
        ["config file {tmp}/nope.yaml", "does not exist"],
    ),
    Case(
        "config-file-not-yaml",
        ["check-config"],
        ["{tmp}/broken.yaml:2: not valid YAML"],
        env={CONFIG_FILE_ENV: "{tmp}/broken.yaml"},
    ),
    Case(
        "config-file-not-a-mapping",
        ["check-config"],
        ["{tmp}/list.yaml must be a YAML mapping"],
        env={CONFIG_FILE_ENV: "{tmp}/list.yaml"},
    ),
    Case(
        "config-file-bad-value-names-key-and-file",
        ["check-config"],
        ["kafka.bootstrap_servers in {tmp}/bad-value.yaml", "'kafka' is not HOST:PORT"],
        env={CONFIG_FILE_ENV: "{tmp}/bad-value.yaml"},
    ),
    Case(
        "bootstrap-empty",
        ["check-config"],
        ["STREAMPROC_KAFKA__BOOTSTRAP_SERVERS", "HOST:PORT"],
        env={"STREAMPROC_KAFKA__BOOTSTRAP_SERVERS": ""},
    ),
    Case(
        "bootstrap-port-not-a-number",
        ["check-config"],
        ["STREAMPROC_KAFKA__BOOTSTRAP_SERVERS", "'host:abc' is not HOST:PORT"],
        env={"STREAMPROC_KAFKA__BOOTSTRAP_SERVERS": "host:abc"},
    ),
    Case(
        "bootstrap-without-port",
        ["check-config"],
        ["STREAMPROC_KAFKA__BOOTSTRAP_SERVERS", "'host' is not HOST:PORT"],
        env={"STREAMPROC_KAFKA__BOOTSTRAP_SERVERS": "host"},
    ),
    Case(
        "bootstrap-port-out-of-range",
        ["check-config"],
        ["STREAMPROC_KAFKA__BOOTSTRAP_SERVERS", "'b:70000' is not", "port from 1 to 65535"],
        env={"STREAMPROC_KAFKA__BOOTSTRAP_SERVERS": "a:1,b:70000"},
        never_says=["'a:1' is not"],
    ),
    Case(
        "model-url-without-scheme",
        ["check-config"],
        ["STREAMPROC_INFERENCE__BASE_URL", "is not an http(s) URL"],
        env={"STREAMPROC_INFERENCE__BASE_URL": "vllm:8000/v1"},
    ),
    Case(
        "model-url-bad-port",
        ["check-config"],
        ["STREAMPROC_INFERENCE__BASE_URL", "invalid port"],
        env={"STREAMPROC_INFERENCE__BASE_URL": "http://vllm:99999/v1"},
    ),
    Case(
        "sasl-plain-password-over-plaintext",
        ["check-config"],
        [
            "STREAMPROC_KAFKA__SECURITY_PROTOCOL=SASL_PLAINTEXT with STREAMPROC_KAFKA__SASL_MECHANISM=PLAIN "
            "sends the password unencrypted",
            "use SASL_SSL",
            "STREAMPROC_KAFKA__ALLOW_PLAINTEXT_PASSWORD=true",
        ],
        env={
            "STREAMPROC_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "STREAMPROC_KAFKA__SASL_MECHANISM": "PLAIN",
            "STREAMPROC_KAFKA__SASL_USERNAME": "alice",
            "STREAMPROC_KAFKA__SASL_PASSWORD": "kafka-pass-123",
        },
        never_says=["kafka-pass-123"],
    ),
    Case(
        "setting-error-names-the-variable-not-the-field",
        ["check-config"],
        ["STREAMPROC_KAFKA__AUTO_OFFSET_RESET: Input should be 'earliest' or 'latest'"],
        env={"STREAMPROC_KAFKA__AUTO_OFFSET_RESET": "middle"},
        never_says=["kafka.auto_offset_reset"],
    ),
    Case(
        "dict-setting-bad-key",
        ["check-config"],
        ["STREAMPROC_AUDIT__DECISION_RATES['maybe'] (the key)"],
        env={"STREAMPROC_AUDIT__DECISION_RATES": '{"maybe": 0.5}'},
    ),
    Case(
        "unknown-setting",
        ["check-config"],
        ["STREAMPROC_KAFKA__BOOTSTRAP: not a setting", "check-config --reference"],
        env={"STREAMPROC_KAFKA__BOOTSTRAP": "kafka:9092"},
    ),
    Case(
        "unknown-audit-category-in-check-config",
        ["check-config"],
        ["STREAMPROC_AUDIT__CATEGORY_RATES", "unknown category ids weapons", "counterfeit"],
        env={"STREAMPROC_AUDIT__CATEGORY_RATES": '{"weapons": 0.2}'},
    ),
    Case(
        "unknown-audit-category-before-the-worker-starts",
        ["worker"],
        ["STREAMPROC_AUDIT__CATEGORY_RATES", "unknown category ids weapons"],
        env={
            "STREAMPROC_AUDIT__CATEGORY_RATES": '{"weapons": 0.2}',
            "STREAMPROC_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:{port}",
        },
    ),
    Case(
        "bad-setting-stops-the-worker-before-kafka",
        ["worker"],
        ["STREAMPROC_KAFKA__BOOTSTRAP_SERVERS", "'host' is not HOST:PORT"],
        env={"STREAMPROC_KAFKA__BOOTSTRAP_SERVERS": "host"},
    ),
    Case(
        "topics-apply-bootstrap-flag",
        ["topics", "apply", "--bootstrap", "host:abc"],
        ["Invalid value for '--bootstrap'", "'host:abc' is not HOST:PORT", "streamproc topics apply -h"],
    ),
    Case(
        "publish-bootstrap-flag-empty",
        ["publish", "--bootstrap", "", "--topic", "t", str(SAMPLES)],
        ["Invalid value for '--bootstrap'", "HOST:PORT"],
    ),
    Case(
        "publish-without-a-broker",
        ["publish", "--bootstrap", "127.0.0.1:{port}", "--topic", "t", str(SAMPLES)],
        ["cannot reach Kafka at 127.0.0.1:{port}", "--bootstrap"],
        exit_code=1,
        never_says=["Unclosed"],
    ),
    Case(
        "missing-option",
        ["publish", "--topic", "t", str(SAMPLES)],
        ["Missing option '--bootstrap'", "streamproc publish -h"],
    ),
    Case(
        "policy-check-missing-path",
        ["policy", "check", "{tmp}/missing.yaml"],
        ["{tmp}/missing.yaml does not exist"],
        never_says=["STREAMPROC_POLICY__PATHS"],
    ),
    Case(
        "policy-check-empty-folder",
        ["policy", "check", "{tmp}/empty"],
        ["{tmp}/empty has no *.yaml policy packs"],
    ),
]


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv(CONFIG_FILE_ENV, raising=False)
    (tmp_path / "broken.yaml").write_text("kafka: [a\n  b: c\n")
    (tmp_path / "list.yaml").write_text("- kafka\n- inference\n")
    (tmp_path / "bad-value.yaml").write_text("kafka:\n  bootstrap_servers: kafka\n")
    (tmp_path / "empty").mkdir()
    return tmp_path


def _fill(text: str, tmp: Path, port: int) -> str:
    return text.replace("{tmp}", str(tmp)).replace("{port}", str(port))


def _assert_one_clean_line(stderr: str, exit_code: int, case: Case, tmp: Path, port: int) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), stderr
    assert "Traceback" not in stderr
    for text in case.says:
        assert _fill(text, tmp, port) in lines[0]
    for text in case.never_says:
        assert _fill(text, tmp, port) not in lines[0]
    assert exit_code == case.exit_code, stderr


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_one_line_naming_what_to_fix(case: Case, scratch: Path) -> None:
    port = free_port()
    args = [_fill(a, scratch, port) for a in case.args]
    env = {k: _fill(v, scratch, port) for k, v in case.env.items()}
    result = CliRunner().invoke(cli, args, env=env, prog_name="streamproc")
    assert isinstance(result.exception, SystemExit), result.exception  # not an uncaught error
    _assert_one_clean_line(result.stderr, result.exit_code, case, scratch, port)


#: Run as a process: nothing but the one line reaches stderr (no traceback, no warnings).
IN_A_PROCESS = [
    "list-setting-given-a-plain-value",
    "config-file-not-yaml",
    "bootstrap-port-not-a-number",
    "sasl-plain-password-over-plaintext",
    "publish-without-a-broker",
    "policy-check-missing-path",
]


@pytest.mark.parametrize("case", [c for c in CASES if c.id in IN_A_PROCESS], ids=lambda c: c.id)
def test_as_a_process_stderr_is_the_one_line(case: Case, scratch: Path) -> None:
    port = free_port()
    env = {"PATH": "/usr/bin:/bin", **{k: _fill(v, scratch, port) for k, v in case.env.items()}}
    done = subprocess.run(
        [sys.executable, "-m", "streamproc", *[_fill(a, scratch, port) for a in case.args]],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    _assert_one_clean_line(done.stderr, done.returncode, case, scratch, port)


def test_log_level_in_any_case() -> None:
    result = CliRunner().invoke(cli, ["check-config"], env={"STREAMPROC_WORKER__LOG_LEVEL": "DEBUG"})
    assert result.exit_code == 0, result.output
    assert '"log_level": "debug"' in result.stdout


def test_spaces_in_the_bootstrap_list_are_dropped() -> None:
    env = {"STREAMPROC_KAFKA__BOOTSTRAP_SERVERS": "kafka-1:9092, kafka-2:9092"}
    result = CliRunner().invoke(cli, ["check-config"], env=env)
    assert result.exit_code == 0, result.output
    assert '"bootstrap_servers": "kafka-1:9092,kafka-2:9092"' in result.stdout


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield held.getsockname()[1]


def test_metrics_port_in_use_is_one_line(taken_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker gets as far as serving /metrics (its topics taken as present, logging left alone)."""

    async def topics_present(*args: object, **kwargs: object) -> None:
        return None

    monkeypatch.setattr("streamproc.topics.require_topics", topics_present)
    monkeypatch.setattr("streamproc.stream.host.configure_logging", lambda *args: None)
    env = {"STREAMPROC_METRICS__HOST": "127.0.0.1", "STREAMPROC_METRICS__PORT": str(taken_port)}
    result = CliRunner().invoke(cli, ["worker"], env=env)
    assert isinstance(result.exception, SystemExit), result.exception
    case = Case("metrics-port", ["worker"], [f"127.0.0.1:{taken_port}", "set STREAMPROC_METRICS__PORT"])
    _assert_one_clean_line(result.stderr, result.exit_code, case, Path(), 0)


def test_policy_check_rule_errors_carry_file_and_line(tmp_path: Path) -> None:
    lines = (ROOT / "policies" / "listings.yaml").read_text().splitlines()
    (when,) = [n for n, line in enumerate(lines) if "'banned_sellers' in owner_lists" in line]
    lines[when] = f'    when: "{BAD_RULE}"'
    pack = tmp_path / "listings.yaml"
    pack.write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(cli, ["policy", "check", str(pack)])
    assert result.exit_code == 1  # the check ran and found the pack invalid
    assert f"{pack}:{when + 1}: rule 'banned-seller': syntax error" in result.stderr

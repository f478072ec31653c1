"""`streamproc replay` and `replay-sweep` on the command line: bad arguments are one line."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from streamproc.cli import cli
from streamproc.dev.devstack import free_port
from streamproc.evaluation.replay import load_packs
from tests.factories import POLICIES, label_pack
from tests.unit.replay_scenario import LIVE_YAML, replay_all, scenario, write_labels

BAD_ARGUMENTS = [
    ("to-before-from", ["--to", "2024-04-30"], "Invalid value for --to: must be after --from", 2),
    (
        "from-not-a-time",
        ["--from", "yesterday"],
        "Invalid value for '--from': 'yesterday' is not an ISO 8601",
        2,
    ),
    ("margin-not-a-duration", ["--verdict-margin", "6 hours"], "Invalid value for '--verdict-margin'", 2),
    ("no-concurrency", ["--concurrency", "0"], "Invalid value for '--concurrency'", 2),
    ("sweep-not-a-spec", ["--sweep", "spam=0.5"], "Invalid value for '--sweep'", 2),
    ("sweep-of-no-category", ["--sweep", "nope.reject=0.5"], "--sweep: no pack has a category 'nope'", 1),
    ("pack-missing", ["--policy", "missing.yaml"], "Invalid value for '--policy'", 2),
    ("labels-missing", ["--labels", "missing.jsonl"], "Invalid value for '--labels'", 2),
    ("labels-not-jsonl", ["--labels", "{labels}"], "Error: --labels: 1 bad line(s) in dataset", 1),
    ("no-broker", ["--bootstrap", "127.0.0.1:{port}"], "cannot reach Kafka at 127.0.0.1:{port}", 1),
]


@pytest.mark.parametrize(
    ("args", "says", "status"), [c[1:] for c in BAD_ARGUMENTS], ids=[c[0] for c in BAD_ARGUMENTS]
)
def test_a_bad_argument_is_one_line_naming_it(
    args: list[str], says: str, status: int, tmp_path: Path
) -> None:
    port = str(free_port())
    pack = label_pack(POLICIES / "listings.yaml", tmp_path)
    base = [
        "--policy",
        str(pack),
        "--from",
        "2024-05-01",
        "--to",
        "2024-05-02",
        "--out",
        str(tmp_path / "out"),
    ]
    labels = tmp_path / "labels.jsonl"
    labels.write_bytes(b"not json\n")
    given = [a.replace("{port}", port).replace("{labels}", str(labels)) for a in args]
    result = CliRunner().invoke(cli, ["replay", *base, *given])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert says.replace("{port}", port) in lines[0]
    assert "Traceback" not in result.stderr and result.exit_code == status
    assert not (tmp_path / "out" / "results.jsonl").exists()


def test_a_sweep_of_a_folder_without_a_finished_replay_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["replay-sweep", "--from-dir", str(tmp_path), "--sweep", "spam.reject=0.9"]
    )
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"Error: --from-dir {tmp_path} holds no finished replay; "
        f"run `streamproc replay --out {tmp_path}` first"
    )


async def test_replay_sweep_writes_the_tables_of_each_threshold_set(tmp_path: Path) -> None:
    pack = tmp_path / "pack.yaml"
    pack.write_text(LIVE_YAML)
    out = tmp_path / "replay"
    await replay_all(await scenario(), out, policy=load_packs([pack])[0], pack_file=pack)
    result = CliRunner().invoke(
        cli, ["replay-sweep", "--from-dir", str(out), "--sweep", "spam.review=0.4,0.5"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "spam.review=0.4: replay-test changed 1 of 6, automation 66.7% -> 50.0%",
        "spam.review=0.5: replay-test changed 0 of 6, automation 66.7% -> 66.7%",
        f"sweep: {out / 'sweep.md'}",
    ]


async def test_replay_sweep_with_labels_shows_the_f1_of_both_sides(tmp_path: Path) -> None:
    pack = tmp_path / "pack.yaml"
    pack.write_text(LIVE_YAML)
    out = tmp_path / "replay"
    await replay_all(await scenario(), out, policy=load_packs([pack])[0], pack_file=pack)
    labels = write_labels(tmp_path / "labels.jsonl")
    sweep = ["replay-sweep", "--from-dir", str(out), "--sweep", "spam.review=0.4"]
    result = CliRunner().invoke(cli, [*sweep, "--labels", str(labels)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == (
        "spam.review=0.4: replay-test changed 1 of 6, automation 66.7% -> 50.0%; "
        "violation F1 over 5 labeled items 0.750 live -> 0.889 candidate"
    )
    labels.write_bytes(b'{"content_type": "listing"}\n')
    result = CliRunner().invoke(cli, [*sweep, "--labels", str(labels)])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1, result.stderr
    assert lines[0].startswith(f"Error: --labels: 1 bad line(s) in dataset {labels}; the first: {labels}:1:")


def test_the_commands_are_listed_in_the_help() -> None:
    listing = CliRunner().invoke(cli, ["--help"]).output
    assert "replay " in listing and "replay-sweep " in listing
    usage = CliRunner().invoke(cli, ["replay", "--help"]).output
    for flag in (
        "--from",
        "--to",
        "--policy",
        "--out",
        "--concurrency",
        "--sweep",
        "--vllm-url",
        "--verdict-margin",
        "--labels",
    ):
        assert flag in usage

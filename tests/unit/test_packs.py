from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from streamproc.cli import cli
from streamproc.errors import ConfigError
from streamproc.policy import PolicySet, load_pack, load_policy_set
from streamproc.schemas import ListingEvent, decode_event
from tests.factories import POLICIES, listing, shipped_policies, video


@pytest.fixture
def packs(tmp_path: Path) -> Path:
    """A writable copy of the shipped packs."""
    for pack in POLICIES.glob("*.yaml"):
        shutil.copy(pack, tmp_path / pack.name)
    return tmp_path


def test_shipped_packs_load_with_a_default_per_content_type() -> None:
    policies = shipped_policies()
    assert {p.content_type for p in policies.policies} == {"listing", "video"}
    assert policies.select(listing()).name == "marketplace-listings"
    assert policies.select(video()).name == "short-videos"
    for policy in policies.policies:
        assert policy.version.startswith(f"{policy.name}@")
        assert all(c.seller_message and c.reason_code for c in policy.categories)


def test_version_changes_with_any_edit(packs: Path) -> None:
    before = load_pack(packs / "listings.yaml").version
    text = (packs / "listings.yaml").read_text()
    (packs / "listings.yaml").write_text(
        text.replace("{reject: 0.95, review: 0.7}", "{reject: 0.95, review: 0.6}", 1)
    )
    after = load_pack(packs / "listings.yaml")
    assert after.version != before
    assert after.categories[4].thresholds.review == 0.6


def test_errors_name_file_line_and_field(packs: Path) -> None:
    path = packs / "listings.yaml"
    lines = path.read_text().splitlines()
    line = next(i for i, text in enumerate(lines) if "thresholds: {reject: 0.85, review: 0.5}" in text)
    lines[line] = lines[line].replace("review: 0.5", "review: 0.9")
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as caught:
        load_pack(path)
    message = str(caught.value)
    assert f"{path}:{line + 1}: categories.0.thresholds" in message
    assert "must not exceed reject" in message


def test_unknown_keys_and_bad_yaml_are_reported_with_lines(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "name: x\ncontent_type: listing\npreamble: p\ncategories:\n  - id: a\n    colour: red\n"
    )
    with pytest.raises(ConfigError, match=r"broken\.yaml:6: categories\.0\.colour: Extra inputs"):
        load_pack(broken)
    broken.write_text("name: x\n  bad: [\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml:\d+: not valid YAML"):
        load_pack(broken)


def test_labels_are_assigned_when_omitted(tmp_path: Path) -> None:
    pack = tmp_path / "p.yaml"
    category = (
        "  - id: {id}\n    title: t\n    description: d\n    reason_code: R\n"
        "    seller_message: m\n    thresholds: {{reject: 0.9, review: 0.5}}\n"
    )
    pack.write_text(
        "name: p\ncontent_type: listing\npreamble: p\ncategories:\n"
        + category.format(id="a")
        + category.format(id="b").replace("title: t", "title: t\n    label: A")
    )
    assert [c.label for c in load_pack(pack).categories] == ["B", "A"]


def test_vertical_packs_take_their_listings(packs: Path) -> None:
    text = (packs / "listings.yaml").read_text()
    health = text.replace("name: marketplace-listings", "name: health-listings").replace(
        "content_type: listing", "content_type: listing\nverticals: [Health]"
    )
    (packs / "health.yaml").write_text(health)
    policies = load_policy_set([packs])
    assert policies.select(listing(category_path=["health", "Supplements"])).name == "health-listings"
    assert policies.select(listing(category_path=["Home"])).name == "marketplace-listings"
    assert policies.select(listing(category_path=[])).name == "marketplace-listings"


def test_a_set_needs_exactly_one_default_per_content_type(packs: Path) -> None:
    (packs / "videos.yaml").unlink()
    with pytest.raises(ConfigError, match="exactly one video pack without verticals"):
        load_policy_set([packs])
    with pytest.raises(ConfigError, match="exactly one listing pack"):
        PolicySet([])


def test_missing_policy_path_says_which_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="STREAMPROC_POLICY__PATHS"):
        load_policy_set([tmp_path / "nope"])


def test_cli_policy_check(packs: Path) -> None:
    ok = CliRunner().invoke(cli, ["policy", "check", str(packs)])
    assert ok.exit_code == 0, ok.output
    assert "marketplace-listings@" in ok.output and "short-videos@" in ok.output
    (packs / "videos.yaml").write_text(
        (packs / "videos.yaml").read_text().replace("scorer: label_logprob", "scorer: magic")
    )
    bad = CliRunner().invoke(cli, ["policy", "check", str(packs / "videos.yaml")])
    assert bad.exit_code == 1
    assert "videos.yaml:" in bad.output and "scorer" in bad.output


def test_cli_policy_show_prints_the_exact_request() -> None:
    result = CliRunner().invoke(
        cli,
        [
            "policy",
            "show",
            str(POLICIES / "listings.yaml"),
            "--example",
            str(POLICIES.parent / "samples" / "listings.jsonl"),
            "--line",
            "6",
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.output.startswith("POST /v1/chat/completions\n")
    assert "Rolex Submariner AAA replica" in result.output and '"top_logprobs": 20' in result.output


def test_shipped_rules_catch_the_clear_sample_violations() -> None:
    policies = shipped_policies()
    decided = {}
    for name, content_type in (("listings.jsonl", "listing"), ("videos.jsonl", "video")):
        for line in (POLICIES.parent / "samples" / name).read_bytes().splitlines():
            event = decode_event(content_type, line)  # type: ignore[arg-type]
            policy = policies.select(event)
            hit = policies.rules(policy).pre(event)
            post = policies.rules(policy).post(event, {}, "approve")
            decided[event.listing_id if isinstance(event, ListingEvent) else event.video_id] = (
                hit.rule_id if hit else post.rule_id if post else None
            )
    assert decided == {
        "L-1001": None,
        "L-1002": None,
        "L-1003": None,
        "L-1004": None,
        "L-1005": None,
        "L-1006": "blocked-terms",
        "L-1007": "blocked-terms",
        "L-1008": "first-listing-in-regulated-category",
        "L-1009": "blocked-terms",
        "L-1010": "off-platform-contact",
        "V-2001": None,
        "V-2002": None,
        "V-2003": None,
        "V-2004": "known-dangerous-challenge",
        "V-2005": "gift-card-payment",
    }

"""Versioned, incremental releases (issue 16): v1.0.0, more seeds imported, v1.1.0 into the same folder.
changes.json lists exactly the added ids, families of v1.0.0 keep their split (even under another split
seed), a removed item says why, and versions must increase."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from dataset_builder.build import BuildError, build_release
from dataset_builder.synthetic import SyntheticSpec, make_store
from dataset_builder.versions import CHANGELOG, CHANGES, INDEX
from medcot.cli import main
from medcot.config import BuildConfig
from medcot.records import Generation, Item


def _index(release: Path) -> dict:
    return json.loads((release / INDEX).read_text(encoding="utf-8"))


def _add_seeds(store, n: int, start: int = 0) -> list[str]:
    """New seed questions with a first-pass CoT (unreviewed): they enter the `unvalidated` config only."""
    ids = [f"new-seed-{start + i}" for i in range(n)]
    store.add_items([Item(id=i, family_id=i, language="en", question=f"Question number {i}: which nerve is it?",
                          options={"A": "Median", "B": "Ulnar", "C": "Radial", "D": "Axillary"}, answer="B",
                          source="test") for i in ids])
    for i in ids:
        store.save_generation(Generation(item_id=i, call_id=None, prompt_version="cot@1", cot="Reasoning.\nAnswer: B",
                                         reasoning=None, answer="B", matched_by="answer_line",
                                         option_explanations={}, agrees_with_key=True))
    return ids


@pytest.fixture()
def store(tmp_path):
    s = make_store(str(tmp_path / "store.db"), SyntheticSpec(items=80, seed=8))
    yield s
    s.close()


def test_v1_1_0_lists_exactly_the_added_ids_and_keeps_every_family_split(tmp_path, store):
    out = tmp_path / "release"
    build_release(store, BuildConfig(version="1.0.0"), out)
    v1 = _index(out)
    first = json.loads((out / CHANGES).read_text(encoding="utf-8"))
    assert first["previous_version"] is None and v1["version"] == "1.0.0"
    added = _add_seeds(store, 12)
    # another split seed and fractions: old families must keep their split anyway
    build_release(store, BuildConfig(version="1.1.0", seed=99, splits={"train": 0.5, "validation": 0.25,
                                                                         "test": 0.25}), out)
    v2 = _index(out)
    diff = json.loads((out / CHANGES).read_text(encoding="utf-8"))
    assert diff["version"] == "1.1.0" and diff["previous_version"] == "1.0.0"
    assert [e["id"] for e in diff["configs"]["unvalidated"]["added"]] == sorted(added)
    assert all(e["reason"] == "new seed family" for e in diff["configs"]["unvalidated"]["added"])
    for config in ("validated", "panel"):
        assert diff["configs"][config] == {"added": [], "removed": [], "changed": []}
    assert diff["configs"]["unvalidated"]["removed"] == diff["configs"]["unvalidated"]["changed"] == []
    old_split = {e["family_id"]: e["split"] for rows in v1["configs"].values() for e in rows.values()}
    new_split = {e["family_id"]: e["split"] for rows in v2["configs"].values() for e in rows.values()}
    assert old_split and all(new_split[f] == s for f, s in old_split.items())
    assert "**Version 1.1.0.**" in (out / "README.md").read_text(encoding="utf-8")
    log = (out / CHANGELOG).read_text(encoding="utf-8")
    assert log.index("## 1.1.0 (since 1.0.0)") < log.index("## 1.0.0")
    assert "`unvalidated`: 12 added, 0 removed, 0 changed" in log


def test_versions_must_be_semver_and_increase_and_the_cli_passes_them(tmp_path, store):
    out = tmp_path / "release"
    with pytest.raises(BuildError, match="semantic"):
        build_release(store, BuildConfig(version="v1"), out)
    assert not out.exists()
    build_release(store, BuildConfig(version="1.2.0"), out)
    before = (out / INDEX).read_bytes()
    with pytest.raises(BuildError, match="greater than the previous"):
        build_release(store, BuildConfig(version="1.1.9"), out)
    assert (out / INDEX).read_bytes() == before  # a refused build leaves the release as it was
    _add_seeds(store, 2)
    result = CliRunner().invoke(main, ["build", "--store", store.url, "--out", str(out), "--version", "1.3.0",
                                       "--json"])
    assert result.exit_code == 0, result.output
    diff = json.loads((out / CHANGES).read_text(encoding="utf-8"))
    assert diff["previous_version"] == "1.2.0" and len(diff["configs"]["unvalidated"]["added"]) == 2
    elsewhere = tmp_path / "fresh"
    result = CliRunner().invoke(main, ["build", "--store", store.url, "--out", str(elsewhere), "--version", "1.4.0",
                                       "--previous", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads((elsewhere / CHANGES).read_text(encoding="utf-8"))["configs"]["unvalidated"]["added"] == []


def test_an_item_removed_by_consensus_leaves_validated_with_its_reason(tmp_path, store):
    from sqlalchemy import insert

    from medcot.review_tables import DecisionRow
    out = tmp_path / "release"
    build_release(store, BuildConfig(version="1.0.0"), out)
    validated = sorted(_index(out)["configs"]["validated"])
    gone = validated[0]
    with store.transaction() as conn:
        conn.execute(insert(DecisionRow).values(item_id=gone, user_id=None, kind="removed", human_approvals=0,
                                                automated_approvals=0, expert_validated=False,
                                                details={"reason": "adjudicated: wrong key"}))
    build_release(store, BuildConfig(version="1.0.1"), out)
    diff = json.loads((out / CHANGES).read_text(encoding="utf-8"))["configs"]["validated"]
    assert diff["removed"] == [{"id": gone, "reason": "removed by consensus"}] and diff["added"] == []
    assert gone not in _index(out)["configs"]["validated"]


def test_answer_letter_matches_cot_answer_where_the_cot_agrees(tmp_path, store):
    import datasets
    out = build_release(store, BuildConfig(), tmp_path / "release").release_dir
    ds = datasets.load_dataset(str(out), "unvalidated", split="train", cache_dir=str(tmp_path / "hf"))
    names = ds.features["answer"].names
    assert all(names[r["answer"]] == r["answer_letter"] for r in ds)
    agree = [r for r in ds if r["cot_answer"] == r["answer_letter"]]
    assert agree  # comparable without code: letters on both sides


def test_row_hash_changes_with_any_released_field_only():
    from dataclasses import replace

    from dataset_builder.features import ReleaseRow, empty_five_strike
    from dataset_builder.versions import row_hash
    base = ReleaseRow(id="q", family_id="q", parent_id=None, origin="seed", language="en", question="Q?",
                      options={"A": "a", "B": "b", "C": None}, answer="A", cot="because\nAnswer: A", cot_answer="A",
                      specialty=None, subject=None, aspect=None, source="s", licence=None,
                      five_strike=empty_five_strike(), reviews=[], rubric=[], consensus={}, validation="none",
                      validation_note="", revision_status="unchanged", provenance={})
    h = row_hash(base)
    assert row_hash(replace(base, reviews=[{"x": 1}], validation="expert")) == h  # not released text
    for change in ({"question": "Q!"}, {"answer": "B"}, {"cot": "because.\nAnswer: A"},
                   {"options": {"A": "a", "B": "b2", "C": None}}, {"options": {"A": "a", "B": "b", "C": "c"}}):
        assert row_hash(replace(base, **change)) != h, change

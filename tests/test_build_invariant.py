"""Attacks on the release's promise (issue 12): a row labelled expert-validated must rest on fresh, blind, human
approvals of exactly the released text, recomputed by the builder from the raw votes. Each test forges or
corrupts one thing in an otherwise valid synthetic store and expects the build to fail naming the item.
Also: the rubric summary columns, the HMAC pseudonyms, the card's statement of the invariant."""
from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import datasets
import pytest
from sqlalchemy import insert, select, update

from curation.review.invariant import INVARIANT
from dataset_builder.build import build_release
from dataset_builder.features import SPLITS
from dataset_builder.integrity import ReleaseIntegrityError
from dataset_builder.rows import majority
from dataset_builder.synthetic import SyntheticSpec, make_store
from medcot.config import BuildConfig
from medcot.db import GenerationRow
from medcot.review_tables import (
    COGNITIVE_LEVELS,
    DIFFICULTIES,
    RUBRIC_DIMENSIONS,
    DecisionRow,
    ReviewRow,
    RubricScoreRow,
    UserRow,
)
from medcot.store import RATER_KEY


@pytest.fixture(autouse=True)
def hf_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


@pytest.fixture
def store(tmp_path: Path):
    s = make_store(str(tmp_path / "store.db"), SyntheticSpec(items=120, seed=5))
    yield s
    s.close()


def rows_of(release: Path, config: str, tmp_path: Path) -> list[dict]:
    ds = datasets.load_dataset(str(release), config, cache_dir=str(tmp_path / "hf" / "datasets"))
    return [r for s in SPLITS if s in ds for r in ds[s]]


def approved_at_review(store) -> str:
    """An approved item that never went to the panel: its two initial reviews are its only approvals."""
    with store.engine.connect() as conn:
        panel = select(DecisionRow.item_id).where(DecisionRow.user_id.is_not(None))
        return conn.scalars(select(DecisionRow.item_id).where(DecisionRow.kind == "approved",
                                                              DecisionRow.item_id.not_in(panel))
                            .order_by(DecisionRow.item_id)).first()


def one_reviewer(store, item_id: str) -> int:
    with store.engine.connect() as conn:
        return conn.scalars(select(ReviewRow.user_id).where(ReviewRow.item_id == item_id)
                            .order_by(ReviewRow.id)).first()


def build_fails(store, tmp_path: Path, item_id: str, reason: str) -> None:
    out = tmp_path / "release"
    with pytest.raises(ReleaseIntegrityError) as err:
        build_release(store, BuildConfig(), out)
    text = str(err.value)
    assert f"[validated] {item_id}: invariant" in text and reason in text, text
    assert not out.exists()


def test_the_synthetic_store_satisfies_the_invariant_and_fills_the_rubric_columns(store, tmp_path: Path) -> None:
    release = build_release(store, BuildConfig(), tmp_path / "release").release_dir
    validated = rows_of(release, "validated", tmp_path)
    assert len(validated) > 50
    for row in validated:
        assert row["validation"] == "expert" and row["rubric_raters_kind"] == "human"
        assert row["rubric_raters"] >= 2 and row["consensus"]["expert_validated"]
        assert set(row["rubric_median"]) == set(RUBRIC_DIMENSIONS)
        assert all(v is not None and 0 <= v <= 2 for v in row["rubric_median"].values())
        assert row["rubric_median"]["medical_correctness"] == 2.0  # every approval scored it 2 (the policy)
        assert row["difficulty"] in DIFFICULTIES and row["cognitive_level"] in COGNITIVE_LEVELS
        assert row["annotation_standard"] == "annotation@1"
        assert {s["phase"] for s in row["rubric"]} <= {"review", "panel"}
        assert len(row["rubric"]) >= 5 * row["rubric_raters"]
    for row in rows_of(release, "unvalidated", tmp_path):
        assert row["rubric"] == [] and row["rubric_raters"] == 0 and row["rubric_raters_kind"] is None
        assert row["difficulty"] is None and all(v is None for v in row["rubric_median"].values())


def test_released_rubric_holds_only_scores_of_the_released_text(store, tmp_path: Path) -> None:
    """A regenerated item: its first panel round scored the old CoT, which is not what was released."""
    with store.engine.connect() as conn:
        item_id = conn.scalars(select(GenerationRow.item_id).where(GenerationRow.purpose == "regenerated")
                               .join(DecisionRow, (DecisionRow.item_id == GenerationRow.item_id)
                                     & (DecisionRow.kind == "approved")).order_by(GenerationRow.item_id)).first()
        stored = conn.execute(select(RubricScoreRow.phase, RubricScoreRow.round)
                              .where(RubricScoreRow.item_id == item_id)).all()
    release = build_release(store, BuildConfig(), tmp_path / "release").release_dir
    row = next(r for r in rows_of(release, "validated", tmp_path) if r["id"] == item_id)
    assert ("review", 0) in stored and ("panel", 0) in stored
    assert {(s["phase"], s["round"]) for s in row["rubric"]} == {("panel", max(r for _, r in stored))}
    assert row["rubric_raters"] == 2


def test_a_forged_decision_on_rejected_reviews_fails_the_build(store, tmp_path: Path) -> None:
    item_id = approved_at_review(store)
    with store.transaction() as conn:
        conn.execute(update(ReviewRow).where(ReviewRow.item_id == item_id).values(approve=False))
        conn.execute(insert(DecisionRow).values(item_id=item_id, user_id=None, kind="approved", human_approvals=2,
                                                automated_approvals=0, expert_validated=True, details={}))
    build_fails(store, tmp_path, item_id, "raw votes hold 0 human approval(s)")


def test_a_stale_approval_does_not_validate_a_changed_cot(store, tmp_path: Path) -> None:
    item_id = approved_at_review(store)
    with store.transaction() as conn:  # the CoT is changed after both approvals; nobody approved the new text
        conn.execute(insert(GenerationRow).values(item_id=item_id, call_id=None, purpose="edited", revision=1,
                                                  prompt_version="human-edit", cot="A different chain.\nAnswer: A",
                                                  answer="A", matched_by="final_line", option_explanations={}))
    build_fails(store, tmp_path, item_id, "cast on another revision")


def test_a_proposal_is_not_an_approval_of_the_base_text(store, tmp_path: Path) -> None:
    item_id = approved_at_review(store)
    with store.transaction() as conn:
        conn.execute(update(ReviewRow).where(ReviewRow.item_id == item_id,
                                             ReviewRow.user_id == one_reviewer(store, item_id))
                     .values(proposal={"cot": "my better chain"}))
    build_fails(store, tmp_path, item_id, "proposes a change")


def test_a_vote_cast_with_others_visible_is_not_blind(store, tmp_path: Path) -> None:
    item_id = approved_at_review(store)
    with store.transaction() as conn:
        conn.execute(update(ReviewRow).where(ReviewRow.item_id == item_id,
                                             ReviewRow.user_id == one_reviewer(store, item_id)).values(blind=False))
    build_fails(store, tmp_path, item_id, "not blind")


def test_an_approval_scoring_medical_correctness_0_does_not_count(store, tmp_path: Path) -> None:
    item_id = approved_at_review(store)
    with store.transaction() as conn:
        conn.execute(update(RubricScoreRow).where(RubricScoreRow.item_id == item_id,
                                                  RubricScoreRow.user_id == one_reviewer(store, item_id),
                                                  RubricScoreRow.dimension == "medical_correctness").values(score=0))
    build_fails(store, tmp_path, item_id, "medical_correctness")


def test_an_automated_rater_never_counts_as_an_expert(store, tmp_path: Path) -> None:
    item_id = approved_at_review(store)
    with store.transaction() as conn:
        conn.execute(update(UserRow).where(UserRow.id == one_reviewer(store, item_id)).values(kind="llm"))
    out = tmp_path / "release"
    with pytest.raises(ReleaseIntegrityError, match=f"{item_id}: invariant: .*raw votes hold 1 human approval"):
        build_release(store, BuildConfig(), out)


def test_a_vote_with_another_answer_than_the_key_does_not_count(store, tmp_path: Path) -> None:
    item_id = approved_at_review(store)
    with store.transaction() as conn:
        conn.execute(update(ReviewRow).where(ReviewRow.item_id == item_id,
                                             ReviewRow.user_id == one_reviewer(store, item_id)).values(answer="Z"))
    build_fails(store, tmp_path, item_id, "answer differs from key")


def test_rater_pseudonyms_are_hmac_under_the_store_secret(store, tmp_path: Path) -> None:
    first = build_release(store, BuildConfig(), tmp_path / "a").release_dir
    again = build_release(store, BuildConfig(), tmp_path / "b").release_dir
    hashes = {x["rater_id_hash"] for r in rows_of(first, "validated", tmp_path) for x in r["rubric"]}
    assert hashes == {x["rater_id_hash"] for r in rows_of(again, "validated", tmp_path) for x in r["rubric"]}
    with store.engine.connect() as conn:
        uids = list(conn.scalars(select(UserRow.id)))
    guessable = {hashlib.sha256(f"{salt}:{u}".encode()).hexdigest()[:16] for u in uids for salt in ("medcot", "")}
    assert hashes and not hashes & guessable
    secret = store.secret(RATER_KEY)
    assert len(secret) == 64
    for path in first.rglob("*"):  # the key never leaves the store
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    other = make_store(str(tmp_path / "other.db"), SyntheticSpec(items=120, seed=5))  # same user ids, own secret
    elsewhere = build_release(other, BuildConfig(), tmp_path / "c").release_dir
    assert not hashes & {x["rater_id_hash"] for r in rows_of(elsewhere, "validated", tmp_path) for x in r["rubric"]}
    other.close()
    with sqlite3.connect(tmp_path / "store.db") as db:  # the secret is stored, once, in the store itself
        assert db.execute("SELECT count(*) FROM store_secrets WHERE name = ?", (RATER_KEY,)).fetchone() == (1,)


def test_majority_labels_break_ties_toward_the_harder_label() -> None:
    assert majority(["easy", "hard"], DIFFICULTIES) == "hard"
    assert majority(["moderate", "easy"], DIFFICULTIES) == "moderate"
    assert majority(["easy", "easy", "hard"], DIFFICULTIES) == "easy"
    assert majority(["recall", "problem-solving", "interpretation"], COGNITIVE_LEVELS) == "problem-solving"
    assert majority([None, "nonsense"], DIFFICULTIES) is None


def test_the_card_states_the_invariant_and_covers_every_rated_item(store, tmp_path: Path) -> None:
    release = build_release(store, BuildConfig(), tmp_path / "release").release_dir
    card = (release / "README.md").read_text(encoding="utf-8")
    assert INVARIANT in card and "refuses to build" in card
    with store.engine.connect() as conn:
        rated = len(set(conn.scalars(select(RubricScoreRow.item_id))))
    assert f"every rated item in the store ({rated} items)" in card
    assert "| rubric: medical_correctness (ordinal) |" in card and "Gwet's AC1" in card
    assert "HMAC-SHA256" in card and (release / "figures" / "rubric_scores.png").is_file()

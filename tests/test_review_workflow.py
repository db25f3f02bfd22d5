"""The review workflow on a real SQLite store: assignment, submissions, private proposals, consensus rules, panel
rounds and repair, reconciliation, and the invariant: an approval counts only if a human cast it, blind, on the
exact revision in force, agreeing with the key and with a coherent rubric."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from curation.review import assign as assigning
from curation.review import sample
from curation.review.consensus import ConsensusError, decide, record_outcome, review_votes, run_consensus
from curation.review.items import current_cot, get_item, item_revision
from curation.review.panel import panel_state, submit_panel
from curation.review.records import Edits, PanelInput, ReviewError, ReviewInput
from curation.review.submit import submit_adjudication, submit_review
from medcot.config import ConfigError, ReviewConfig, load_config
from medcot.db import EventRow
from medcot.review_tables import AssignmentRow, DecisionRow, ReviewRow, RevisionRow
from medcot.store import Store

PW = "correct horse battery"
ALL2 = {d: 2 for d in ("medical_correctness", "reasoning_structure", "information_sufficiency",
                       "terminology_clarity", "clinical_utility")}
LABELS = dict(scores=ALL2, difficulty="moderate", cognitive_level="interpretation")
GOOD = dict(relevance=1, correctness=1, sufficiency=1, answer="C", approve=True, **LABELS)
BAD = dict(relevance=1, correctness=0, sufficiency=1, answer="C", approve=False, **LABELS)


@pytest.fixture
def store(sqlite_url: str) -> Store:
    return Store(sqlite_url)


@pytest.fixture
def users(store: Store) -> dict:
    return sample.add_users(store, PW, reviewers=4, panelists=3, admins=1)


def _assign(store: Store, ids: list[str], cfg: ReviewConfig, phase: str = "review", n: int | None = None) -> dict:
    with store.transaction() as conn:
        return assigning.assign(conn, ids, phase, n or cfg.reviewers_per_item, assigning.pool(conn, cfg, phase))


def _assignees(store: Store, item_id: str, phase: str = "review") -> list[int]:
    with store.engine.connect() as conn:
        return assigning.assigned(conn, item_id, phase)


def _rev(store: Store, item_id: str) -> str:
    with store.engine.connect() as conn:
        return item_revision(conn, get_item(conn, item_id))


def _vote(store: Store, item_id: str, **kw) -> ReviewInput:
    """A review form judged on the item's current revision."""
    return ReviewInput(**{**GOOD, "revision": _rev(store, item_id), **kw})


def _panel(store: Store, item_id: str, action: str = "accept", scores=None, answer: str = "C", **kw) -> PanelInput:
    with store.engine.connect() as conn:
        rnd = panel_state(conn, item_id, ReviewConfig()).round
    return PanelInput(kw.pop("round", rnd), scores or ALL2, action, answer, revision=_rev(store, item_id), **kw)


def _review_all(store, users, item_id, cfg, **kw):
    by_id = {u.id: u for u in users.values()}
    for uid in _assignees(store, item_id):
        submit_review(store, item_id, by_id[uid], _vote(store, item_id, **kw), cfg)


def test_config_rules():
    with pytest.raises(ConfigError, match="reviewers_per_item must be >= 2"):
        load_config(None, ["review.reviewers_per_item=1"])
    with pytest.raises(ConfigError, match="min_agree must be >= 2"):
        load_config(None, ["review.consensus.min_agree=1"])
    with pytest.raises(ConfigError, match="automated must be none or llm"):
        load_config(None, ["review.automated=yes"])
    with pytest.raises(ConfigError, match="unknown key 'review.colour'"):
        load_config(None, ["review.colour=red"])
    cfg = load_config(None)
    assert cfg.review.host == "127.0.0.1" and cfg.review.reviewers_per_item == 2 and cfg.review.automated == "none"


def test_assignment_is_balanced_blind_and_idempotent(store, users):
    cfg = ReviewConfig()
    ids = sample.add_items(store, 10)
    made = _assign(store, ids, cfg)
    assert all(len(v) == 2 for v in made.values()) and len(made) == 10
    with store.engine.connect() as conn:
        loads = dict(conn.execute(select(AssignmentRow.user_id, func.count()).group_by(AssignmentRow.user_id)).all())
        events = conn.scalar(select(func.count()).select_from(EventRow).where(EventRow.kind == "assigned"))
    assert sorted(loads.values()) == [5, 5, 5, 5]  # 20 assignments over 4 reviewers
    assert events == 20
    pairs = {tuple(sorted(_assignees(store, i))) for i in ids}
    assert len(pairs) >= 3  # reviewer pairs mix across items (agreement needs overlap)
    assert _assign(store, ids, cfg) == {}  # rerun: nothing new


def _users_of(store, users, item_id, phase="review"):
    by_id = {u.id: u for u in users.values()}
    return [by_id[u] for u in _assignees(store, item_id, phase) if u in by_id]


def _through_strikes(store, ids):
    for i in ids:
        sample.set_stage(store, i, "strikes_passed")


def test_review_submission_rules(store, users):
    cfg = ReviewConfig()
    [item] = sample.add_items(store, 1)
    _assign(store, [item], cfg)
    a, b = _users_of(store, users, item)
    outsider = next(u for u in users.values() if u.role == "reviewer" and u.id not in (a.id, b.id))
    with pytest.raises(ReviewError) as exc:
        submit_review(store, item, outsider, _vote(store, item), cfg)
    assert exc.value.status == 404
    with pytest.raises(ReviewError, match="which revision") as exc:  # every path must name the revision judged
        submit_review(store, item, a, ReviewInput(**GOOD), cfg)
    assert exc.value.status == 409
    with pytest.raises(ReviewError, match="changed since you opened it") as exc:
        submit_review(store, item, a, ReviewInput(**GOOD, revision="0" * 64), cfg)
    assert exc.value.status == 409
    assert submit_review(store, item, a, _vote(store, item), cfg).status == "stored"
    assert submit_review(store, item, a, _vote(store, item), cfg).status == "already"  # double submit
    with pytest.raises(ReviewError, match="already reviewed"):
        submit_review(store, item, a, _vote(store, item, **BAD), cfg)
    with pytest.raises(ReviewError, match="not one of the options"):
        submit_review(store, item, b, _vote(store, item, answer="E"), cfg)
    res = submit_review(store, item, b, _vote(store, item), cfg)
    assert res.item_stage == "reviewed"
    with store.engine.connect() as conn:
        rows = conn.execute(select(ReviewRow)).mappings().all()
        ev = conn.execute(select(EventRow.payload).where(EventRow.kind == "reviewed")).scalar_one()
    assert len(rows) == 2 and {r["revision_hash"] for r in rows} == {_rev(store, item)}
    assert all(r["blind"] and r["difficulty"] == "moderate" and r["standard_version"] == "annotation@1" for r in rows)
    assert ev["verdict"] == "approve"


def test_rubric_is_required_and_an_incoherent_approval_is_refused(store, users):
    cfg = ReviewConfig()
    [item] = sample.add_items(store, 1)
    _assign(store, [item], cfg)
    a, _ = _users_of(store, users, item)
    with pytest.raises(ReviewError, match="missing rubric scores, difficulty, cognitive level"):
        submit_review(store, item, a, _vote(store, item, scores=None, difficulty=None, cognitive_level=None), cfg)
    with pytest.raises(ReviewError, match="incompatible with these rubric scores: medical_correctness is 0"):
        submit_review(store, item, a, _vote(store, item, scores={**ALL2, "medical_correctness": 0}), cfg)
    with pytest.raises(ReviewError, match="medical_correctness = 2"):
        submit_review(store, item, a, _vote(store, item, scores={**ALL2, "medical_correctness": 1}), cfg)
    # a rejection may carry any scores; the paper's lighter first pass (rubric: panel) needs none
    assert submit_review(store, item, a, _vote(store, item, **{**BAD, "scores": {**ALL2, "clinical_utility": 0}}),
                         cfg).status == "stored"
    light = load_config(None, ["review.rubric=panel"]).review
    [other] = sample.add_items(store, 1, prefix="light")
    _assign(store, [other], light)
    x, _ = _users_of(store, users, other)
    assert submit_review(store, other, x, _vote(store, other, scores=None, difficulty=None, cognitive_level=None),
                         light).status == "stored"
    with pytest.raises(ConfigError, match="rubric must be all or panel"):
        load_config(None, ["review.rubric=some"])


def test_initial_edits_are_private_proposals(store, users):
    cfg = ReviewConfig()
    [item] = sample.add_items(store, 1)
    _assign(store, [item], cfg)
    a, b = _users_of(store, users, item)
    base = _rev(store, item)
    edits = Edits(options={"A": "Adrenaline", "B": "Vasopressin\n(IV)", "C": "Atropine", "D": "Amiodarone"},
                  answer="B", cot="Vasopressin was removed.\nAnswer: B")
    res = submit_review(store, item, a, _vote(store, item, answer="B", edits=edits), cfg)
    assert res.changed == ["answer", "cot", "options"]
    with store.engine.connect() as conn:
        it, cot = get_item(conn, item), current_cot(conn, item)
        revs = conn.scalar(select(func.count()).select_from(RevisionRow))
        mine = conn.execute(select(ReviewRow.proposal).where(ReviewRow.user_id == a.id)).scalar_one()
    assert (it.answer, revs, cot["revision"], _rev(store, item)) == ("C", 0, 0, base)  # nothing applied
    assert mine["options"]["B"] == "Vasopressin\n(IV)" and mine["answer"] == "B"  # multi-line option kept
    # B judges the same base revision; B's approval is of the base text, never of A's proposal
    assert submit_review(store, item, b, _vote(store, item), cfg).status == "stored"
    _through_strikes(store, [item])
    with store.engine.connect() as conn:
        out = decide(conn, get_item(conn, item), cfg)
    assert out.kind == "adjudication" and "proposed changes to reconcile" in out.reason
    assert out.human_approvals == 1


def test_untouched_proposal_fields_are_no_change(store, users):
    cfg = ReviewConfig()
    [item] = sample.add_items(store, 1)
    _assign(store, [item], cfg)
    a, _ = _users_of(store, users, item)
    with store.engine.connect() as conn:
        it, cot = get_item(conn, item), current_cot(conn, item)
    same = Edits(question=it.question + "  ", options={k: v.replace("", "") for k, v in it.options.items()},
                 answer=it.answer, cot=cot["cot"].replace("\n", "\r\n"))
    res = submit_review(store, item, a, _vote(store, item, edits=same), cfg)
    assert res.changed == []
    with store.engine.connect() as conn:
        assert conn.execute(select(ReviewRow.proposal)).scalar_one() is None


def test_consensus_approves_escalates_and_adjudicates(store, users):
    cfg = ReviewConfig()
    ids = sample.add_items(store, 3)
    _assign(store, ids, cfg)
    _review_all(store, users, ids[0], cfg)  # both approve
    _review_all(store, users, ids[1], cfg, **BAD)  # both reject -> panel
    x, y = _users_of(store, users, ids[2])  # split -> adjudication
    submit_review(store, ids[2], x, _vote(store, ids[2]), cfg)
    submit_review(store, ids[2], y, _vote(store, ids[2], answer="A"), cfg)
    _through_strikes(store, ids)
    with store.engine.connect() as conn:
        kinds = [decide(conn, get_item(conn, i), cfg).kind for i in ids]
    assert kinds == ["approved", "escalate", "adjudication"]
    summary = run_consensus(store, cfg)
    assert summary.outcomes == {"approved": 1, "adjudication": 1} and summary.expert_validated == 1
    with store.engine.connect() as conn:
        d = conn.execute(select(DecisionRow).where(DecisionRow.item_id == ids[0])).mappings().one()
        adjudicators = assigning.assigned(conn, ids[2], "adjudication")
    assert d["kind"] == "approved" and d["expert_validated"] and d["human_approvals"] == 2
    assert len(adjudicators) == 1 and adjudicators[0] not in (x.id, y.id)
    assert run_consensus(store, cfg).outcomes == {}  # rerun: nothing new


def _to_adjudication(store, users, cfg, second=None):
    [item] = sample.add_items(store, 1, prefix=f"adj{len(store.items())}")
    _assign(store, [item], cfg)
    x, y = _users_of(store, users, item)
    submit_review(store, item, x, _vote(store, item), cfg)
    submit_review(store, item, y, second or _vote(store, item, **BAD), cfg)
    _through_strikes(store, [item])
    run_consensus(store, cfg)
    assert get_stage(store, item) == "adjudication"
    return item


def test_adjudication_reconciles_but_never_counts_as_a_blind_approval(store, users):
    cfg = ReviewConfig()
    admin = users["admin1"]
    item = _to_adjudication(store, users, cfg)
    voter = _users_of(store, users, item)[0]
    with pytest.raises(ReviewError) as exc:  # a voter cannot adjudicate their own disagreement
        submit_adjudication(store, item, voter, _vote(store, item), cfg)
    assert exc.value.status == 404
    res = submit_adjudication(store, item, admin, _vote(store, item), cfg)
    assert res.outcome == "escalated" and "panel judges it" in res.reason  # one blind approval + the adjudicator
    with store.engine.connect() as conn:
        assert not conn.scalar(select(func.count()).select_from(DecisionRow).where(DecisionRow.kind == "approved"))
        assert assigning.assigned(conn, item, "panel")
    rejected = _to_adjudication(store, users, cfg)
    res = submit_adjudication(store, rejected, admin, _vote(store, rejected, **BAD), cfg)
    assert res.outcome == "removed" and "adjudicator rejected" in res.reason


def test_adjudicator_adopting_a_proposal_makes_a_new_revision_judged_afresh(store, users):
    cfg = ReviewConfig()
    admin = users["admin1"]
    cot_only = _to_adjudication(store, users, cfg)
    res = submit_adjudication(store, cot_only, admin, _vote(store, cot_only, edits=Edits(cot="Better.\nAnswer: C")), cfg)
    assert res.item_stage == "escalated" and res.changed == ["cot"]
    key = _to_adjudication(store, users, cfg)
    res = submit_adjudication(store, key, admin, _vote(store, key, edits=Edits(answer="B")), cfg)
    assert res.item_stage == "restrike"  # a changed key is re-checked by five-strike before the panel
    sample.set_stage(store, key, "strikes_passed")
    with store.engine.connect() as conn:
        out = decide(conn, get_item(conn, key), cfg)
    assert out.kind == "escalate" and "afresh" in out.reason
    with store.engine.connect() as conn:  # the old approvals were cast on another revision: none counts
        assert all(not v.fresh for v in review_votes(conn, get_item(conn, key), cfg))


def test_approval_without_two_human_approvals_fails_through_any_route(store, users):
    cfg = ReviewConfig()
    ids = sample.add_items(store, 3)
    _assign(store, ids, cfg)
    x, _ = _users_of(store, users, ids[0])
    submit_review(store, ids[0], x, _vote(store, ids[0]), cfg)  # ONE approval, review still open
    with store.transaction() as conn, pytest.raises(ConsensusError):
        record_outcome(conn, ids[0], "approved", cfg, actor=users["admin1"])
    # an automated reviewer's approval never counts in a production config (automated: none)
    with store.transaction() as conn:
        [bot] = assigning.judge_users(conn, ReviewConfig(automated="llm", judge=cfg.judge))[:1]
        conn.execute(AssignmentRow.__table__.insert().values(item_id=ids[1], user_id=bot.id, phase="review"))
    x, y = [u for u in _users_of(store, users, ids[1]) if u.id != bot.id][:2]
    submit_review(store, ids[1], x, _vote(store, ids[1]), cfg)
    submit_review(store, ids[1], y, _vote(store, ids[1], **BAD), cfg)
    submit_review(store, ids[1], bot, _vote(store, ids[1]), cfg)
    _through_strikes(store, [ids[1]])
    with store.engine.connect() as conn:
        out = decide(conn, get_item(conn, ids[1]), cfg)
    assert out.kind == "adjudication" and out.human_approvals == 1 and out.automated_approvals == 1
    with store.transaction() as conn, pytest.raises(ConsensusError, match="cannot approve"):
        record_outcome(conn, ids[1], "approved", cfg)
    # the stage gate: an item in review can never be approved, whatever its votes
    with store.transaction() as conn, pytest.raises(ConsensusError):
        record_outcome(conn, ids[2], "approved", cfg)
    assert {i.stage for i in store.items(ids=ids)} <= {"generated", "strikes_passed", "reviewed"}


def test_automated_mode_approves_but_never_expert_validates(store):
    cfg = ReviewConfig(automated="llm")
    [item] = sample.add_items(store, 1)
    with store.transaction() as conn:
        judges = assigning.pool(conn, cfg, "review")
        assigning.assign(conn, [item], "review", 2, judges)
    assert [j.kind for j in judges] == ["llm", "llm"] and judges[0].name == "llm:judge-a"
    for j in judges:
        submit_review(store, item, j, _vote(store, item), cfg)
    _through_strikes(store, [item])
    assert run_consensus(store, cfg).outcomes == {"approved": 1}
    with store.engine.connect() as conn:
        d = conn.execute(select(DecisionRow).where(DecisionRow.kind == "approved")).mappings().one()
    assert d["automated_approvals"] == 2 and d["human_approvals"] == 0 and d["expert_validated"] is False
    assert d["details"]["basis"] == "automated"


def _panel_ready(store, users, cfg):
    [item] = sample.add_items(store, 1)
    _assign(store, [item], cfg)
    _review_all(store, users, item, cfg)
    sample.fail_five_strikes(store, item)
    with store.transaction() as conn:
        assigning.assign(conn, [item], "panel", 2, assigning.pool(conn, cfg, "panel"))
    return item, _users_of(store, users, item, "panel")


def test_panel_round_accept_goes_to_consensus(store, users):
    cfg = ReviewConfig()
    item, (p1, p2) = _panel_ready(store, users, cfg)
    assert submit_panel(store, item, p1, _panel(store, item), cfg) == "waiting"
    assert submit_panel(store, item, p1, _panel(store, item), cfg) == "already"
    with pytest.raises(ReviewError, match="item changed"):
        submit_panel(store, item, p2, _panel(store, item, round=5), cfg)
    with pytest.raises(ReviewError, match="which revision"):
        submit_panel(store, item, p2, PanelInput(0, ALL2, "accept", "C"), cfg)
    assert submit_panel(store, item, p2, _panel(store, item), cfg) == "panel_done"
    assert run_consensus(store, cfg).outcomes == {"approved": 1}
    with store.engine.connect() as conn:
        d = conn.execute(select(DecisionRow).where(DecisionRow.kind == "accept")).mappings().first()
    assert d["details"]["revision_hash"] == _rev(store, item) and d["details"]["blind"] is True


def test_panel_accept_with_a_zero_score_is_refused(store, users):
    cfg = ReviewConfig()
    item, (p1, _) = _panel_ready(store, users, cfg)
    zeros = {d: 0 for d in ALL2}
    with pytest.raises(ReviewError, match="'accept' is incompatible with these rubric scores"):
        submit_panel(store, item, p1, _panel(store, item, scores=zeros), cfg)
    with store.engine.connect() as conn:
        assert not conn.scalar(select(func.count()).select_from(DecisionRow))


def test_panel_revise_excludes_the_editor_and_assigns_a_replacement(store, users):
    cfg = ReviewConfig()
    item, (p1, p2) = _panel_ready(store, users, cfg)
    low = {**ALL2, "medical_correctness": 0}
    assert submit_panel(store, item, p1, _panel(store, item, "revise", low, revised_cot="Fixed.\nAnswer: C"), cfg) \
        == "revised"
    with store.engine.connect() as conn:
        st = panel_state(conn, item, cfg)
    assert st.round == 1 and p1.id not in st.eligible and len(st.eligible) == 2
    with pytest.raises(ReviewError) as exc:
        submit_panel(store, item, p1, _panel(store, item), cfg)
    assert exc.value.status == 403
    p3 = next(u for u in users.values() if u.id in st.eligible and u.id != p2.id)
    assert submit_panel(store, item, p2, _panel(store, item), cfg) == "waiting"
    assert submit_panel(store, item, p3, _panel(store, item, "discard"), cfg) == "panel_done"
    out = run_consensus(store, cfg)  # accept + discard: experts disagree
    assert out.outcomes == {"adjudication": 1}


def test_panel_repairs_the_key_and_the_item_goes_through_five_strike_again(store, users):
    cfg = ReviewConfig()
    item, (p1, p2) = _panel_ready(store, users, cfg)
    before = _rev(store, item)
    status = submit_panel(store, item, p1, _panel(store, item, "revise", {**ALL2, "medical_correctness": 0},
                                                  edits=Edits(answer="B")), cfg)
    assert status == "restrike" and get_stage(store, item) == "restrike" and _rev(store, item) != before
    assert store.items(ids=[item])[0].answer == "B"
    sample.set_stage(store, item, "escalated")  # five-strike failed again: back to the panel, a new round
    with store.engine.connect() as conn:
        st = panel_state(conn, item, cfg)
    assert st.round == 1 and not st.submitted and p1.id not in st.eligible


def test_panel_regeneration_limit_goes_to_adjudication(store, users):
    cfg = load_config(None, ["review.panel.max_regenerations=0"]).review
    item, (p1, p2) = _panel_ready(store, users, cfg)
    submit_panel(store, item, p1, _panel(store, item, "regenerate", feedback="explain option D"), cfg)
    assert submit_panel(store, item, p2, _panel(store, item), cfg) == "adjudication"
    assert get_stage(store, item) == "adjudication"


def get_stage(store: Store, item_id: str) -> str:
    return store.items(ids=[item_id])[0].stage

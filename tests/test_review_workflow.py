"""The review workflow on a real SQLite store: assignment, submissions, edits, consensus rules, panel rounds,
adjudication, and the rule that nothing is approved without two human approvals."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from curation.review import assign as assigning
from curation.review import sample
from curation.review.consensus import ConsensusError, decide, record_outcome, run_consensus
from curation.review.items import current_cot, get_item
from curation.review.panel import panel_state, submit_panel
from curation.review.records import Edits, PanelInput, ReviewError, ReviewInput
from curation.review.submit import submit_adjudication, submit_review
from medcot.config import ConfigError, ReviewConfig, load_config
from medcot.db import EventRow, GenerationRow
from medcot.review_tables import AssignmentRow, DecisionRow, ReviewRow, RevisionRow
from medcot.store import Store

PW = "correct horse battery"
GOOD = dict(relevance=1, correctness=1, sufficiency=1, answer="C", approve=True)
BAD = dict(relevance=1, correctness=0, sufficiency=1, answer="C", approve=False)
ALL2 = {d: 2 for d in ("medical_correctness", "reasoning_structure", "information_sufficiency",
                       "terminology_clarity", "clinical_utility")}


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


def _review_all(store, users, item_id, cfg, **kw):
    by_id = {u.id: u for u in users.values()}
    for uid in _assignees(store, item_id):
        submit_review(store, item_id, by_id[uid], ReviewInput(**{**GOOD, **kw}), cfg)


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


def test_editor_is_never_assigned_again(store, users):
    cfg = ReviewConfig()
    [item] = sample.add_items(store, 1)
    _assign(store, [item], cfg)
    first, second = _assignees(store, item)
    by_id = {u.id: u for u in users.values()}
    submit_review(store, item, by_id[first], ReviewInput(**GOOD, edits=Edits(question="Edited question?")), cfg)
    with store.transaction() as conn:  # a third reviewer is asked: the editor must not be picked again
        made = assigning.assign(conn, [item], "review", 3, assigning.pool(conn, cfg, "review"))
    assert by_id[first].name not in made[item]
    with store.transaction() as conn:
        assert assigning.assign(conn, [item], "adjudication", 1, assigning.pool(conn, cfg, "adjudication"))
        adj = assigning.assigned(conn, item, "adjudication")
    assert first not in adj and second not in adj  # an adjudicator neither voted on nor edited it


def test_review_submission_rules(store, users):
    cfg = ReviewConfig()
    [item] = sample.add_items(store, 1)
    _assign(store, [item], cfg)
    a, b = (next(u for u in users.values() if u.id == uid) for uid in _assignees(store, item))
    outsider = next(u for u in users.values() if u.role == "reviewer" and u.id not in (a.id, b.id))
    with pytest.raises(ReviewError) as exc:
        submit_review(store, item, outsider, ReviewInput(**GOOD), cfg)
    assert exc.value.status == 404
    assert submit_review(store, item, a, ReviewInput(**GOOD, base_revision=0), cfg).status == "stored"
    assert submit_review(store, item, a, ReviewInput(**GOOD), cfg).status == "already"  # double submit
    with pytest.raises(ReviewError, match="already reviewed"):
        submit_review(store, item, a, ReviewInput(**BAD), cfg)
    with pytest.raises(ReviewError, match="not one of the options"):
        submit_review(store, item, b, ReviewInput(**{**GOOD, "answer": "E"}), cfg)
    res = submit_review(store, item, b, ReviewInput(**GOOD, base_revision=0), cfg)
    assert res.item_stage == "reviewed"
    with store.engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(ReviewRow)) == 2
        ev = conn.execute(select(EventRow.payload).where(EventRow.kind == "reviewed")).scalar_one()
    assert ev["verdict"] == "approve"


def test_edits_are_revisions_with_diff_and_stale_forms_are_refused(store, users):
    cfg = ReviewConfig()
    [item] = sample.add_items(store, 1)
    _assign(store, [item], cfg)
    a, b = (next(u for u in users.values() if u.id == uid) for uid in _assignees(store, item))
    edits = Edits(question="Which drug was removed from the pulseless arrest algorithm?",
                  options={"A": "Adrenaline", "B": "Vasopressin", "C": "Atropine (IV)", "D": "Amiodarone"},
                  cot="Atropine was removed in 2010.\nAnswer: C")
    res = submit_review(store, item, a, ReviewInput(**GOOD, base_revision=0, edits=edits), cfg)
    assert res.changed == ["question", "options", "cot"]
    with store.engine.connect() as conn:
        revs = conn.execute(select(RevisionRow).order_by(RevisionRow.id)).mappings().all()
        cot = current_cot(conn, item)
        gens = conn.scalar(select(func.count()).select_from(GenerationRow).where(GenerationRow.item_id == item))
        it = get_item(conn, item)
    assert [r["field"] for r in revs] == ["question", "options", "cot"]
    assert all(r["user_id"] == a.id and r["diff"].startswith("---") for r in revs)
    assert "+Atropine was removed in 2010." in revs[2]["diff"]
    assert cot["revision"] == 1 and cot["purpose"] == "edited" and cot["answer"] == "C" and gens == 2
    assert it.options["C"] == "Atropine (IV)" and it.question.startswith("Which drug was removed")
    with pytest.raises(ReviewError, match="edited since you opened it") as exc:  # b loaded the form before the edit
        submit_review(store, item, b, ReviewInput(**GOOD, base_revision=0), cfg)
    assert exc.value.status == 409
    with pytest.raises(ReviewError, match="option letters"):
        submit_review(store, item, b, ReviewInput(**GOOD, base_revision=3, edits=Edits(options={"A": "x"})), cfg)


def _through_strikes(store, ids):
    for i in ids:
        sample.set_stage(store, i, "strikes_passed")


def test_consensus_approves_escalates_and_adjudicates(store, users):
    cfg = ReviewConfig()
    ids = sample.add_items(store, 4)
    _assign(store, ids, cfg)
    by_id = {u.id: u for u in users.values()}
    _review_all(store, users, ids[0], cfg)  # both approve
    _review_all(store, users, ids[1], cfg, **BAD)  # both reject -> panel
    x, y = _assignees(store, ids[2])  # split -> adjudication
    submit_review(store, ids[2], by_id[x], ReviewInput(**GOOD), cfg)
    submit_review(store, ids[2], by_id[y], ReviewInput(**{**GOOD, "answer": "A"}), cfg)
    p, r = _assignees(store, ids[3])  # approval made stale by a later edit -> adjudication
    submit_review(store, ids[3], by_id[p], ReviewInput(**GOOD), cfg)
    submit_review(store, ids[3], by_id[r], ReviewInput(**GOOD, edits=Edits(cot="Better.\nAnswer: C")), cfg)
    _through_strikes(store, ids)
    with store.engine.connect() as conn:
        kinds = [decide(conn, get_item(conn, i), cfg).kind for i in ids]
    assert kinds == ["approved", "escalate", "adjudication", "adjudication"]
    summary = run_consensus(store, cfg)
    assert summary.outcomes == {"approved": 1, "adjudication": 2} and summary.expert_validated == 1
    assert {i.id: i.stage for i in store.items()} == {ids[0]: "approved", ids[1]: "strikes_passed",
                                                      ids[2]: "adjudication", ids[3]: "adjudication"}
    with store.engine.connect() as conn:
        d = conn.execute(select(DecisionRow).where(DecisionRow.item_id == ids[0])).mappings().one()
        adjudicators = assigning.assigned(conn, ids[2], "adjudication")
    assert d["kind"] == "approved" and d["expert_validated"] and d["human_approvals"] == 2
    assert len(adjudicators) == 1 and adjudicators[0] not in (x, y)
    assert run_consensus(store, cfg).outcomes == {}  # rerun: nothing new


def test_adjudication_decides_and_needs_two_humans(store, users):
    cfg = ReviewConfig()
    ids = sample.add_items(store, 2)
    _assign(store, ids, cfg)
    by_id = {u.id: u for u in users.values()}
    for i in ids:
        x, y = _assignees(store, i)
        submit_review(store, i, by_id[x], ReviewInput(**GOOD), cfg)
        submit_review(store, i, by_id[y], ReviewInput(**BAD), cfg)
    _through_strikes(store, ids)
    run_consensus(store, cfg)
    admin = users["admin1"]
    voter = by_id[_assignees(store, ids[0])[0]]
    with pytest.raises(ReviewError) as exc:  # a voter cannot adjudicate their own disagreement
        submit_adjudication(store, ids[0], voter, ReviewInput(**GOOD), cfg)
    assert exc.value.status == 404
    res = submit_adjudication(store, ids[0], admin, ReviewInput(**GOOD), cfg)
    assert res.outcome == "approved"  # the first reviewer + the adjudicator: two humans agree
    res = submit_adjudication(store, ids[1], admin, ReviewInput(**BAD), cfg)
    assert res.outcome == "removed" and "adjudicator rejected" in res.reason
    with store.engine.connect() as conn:
        d = conn.execute(select(DecisionRow).where(DecisionRow.item_id == ids[0], DecisionRow.kind == "approved")
                         ).mappings().one()
    assert d["human_approvals"] == 2 and d["expert_validated"] and d["user_id"] == admin.id


def test_approval_without_two_human_approvals_fails_through_any_route(store, users):
    cfg = ReviewConfig()
    ids = sample.add_items(store, 3)
    _assign(store, ids, cfg)
    by_id = {u.id: u for u in users.values()}
    x, _ = _assignees(store, ids[0])
    submit_review(store, ids[0], by_id[x], ReviewInput(**GOOD), cfg)  # ONE approval, review still open
    with store.transaction() as conn, pytest.raises(ConsensusError):
        record_outcome(conn, ids[0], "approved", cfg, actor=users["admin1"])
    # an automated reviewer's approval never counts in a production config (automated: none)
    with store.transaction() as conn:
        [bot] = assigning.judge_users(conn, ReviewConfig(automated="llm", judge=cfg.judge))[:1]
        conn.execute(AssignmentRow.__table__.insert().values(item_id=ids[1], user_id=bot.id, phase="review"))
    x, y = _assignees(store, ids[1])[:2]
    submit_review(store, ids[1], by_id[x], ReviewInput(**GOOD), cfg)
    submit_review(store, ids[1], by_id[y], ReviewInput(**BAD), cfg)
    submit_review(store, ids[1], bot, ReviewInput(**GOOD), cfg)
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
        submit_review(store, item, j, ReviewInput(**GOOD), cfg)
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
    by_id = {u.id: u for u in users.values()}
    return item, [by_id[u] for u in _assignees(store, item, "panel")]


def test_panel_round_accept_goes_to_consensus(store, users):
    cfg = ReviewConfig()
    item, (p1, p2) = _panel_ready(store, users, cfg)
    assert submit_panel(store, item, p1, PanelInput(0, ALL2, "accept", "C"), cfg) == "waiting"
    assert submit_panel(store, item, p1, PanelInput(0, ALL2, "accept", "C"), cfg) == "already"
    with pytest.raises(ReviewError, match="CoT changed"):
        submit_panel(store, item, p2, PanelInput(5, ALL2, "accept", "C"), cfg)
    assert submit_panel(store, item, p2, PanelInput(0, ALL2, "accept", "C"), cfg) == "panel_done"
    assert run_consensus(store, cfg).outcomes == {"approved": 1}


def test_panel_revise_excludes_the_editor_and_assigns_a_replacement(store, users):
    cfg = ReviewConfig()
    item, (p1, p2) = _panel_ready(store, users, cfg)
    low = {**ALL2, "medical_correctness": 0}
    assert submit_panel(store, item, p1, PanelInput(0, low, "revise", "C", revised_cot="Fixed.\nAnswer: C"), cfg) \
        == "revised"
    with store.engine.connect() as conn:
        st = panel_state(conn, item, cfg)
    assert st.round == 1 and p1.id not in st.eligible and len(st.eligible) == 2
    with pytest.raises(ReviewError) as exc:
        submit_panel(store, item, p1, PanelInput(1, ALL2, "accept", "C"), cfg)
    assert exc.value.status == 403
    p3 = next(u for u in users.values() if u.id in st.eligible and u.id != p2.id)
    assert submit_panel(store, item, p2, PanelInput(1, ALL2, "accept", "C"), cfg) == "waiting"
    assert submit_panel(store, item, p3, PanelInput(1, ALL2, "discard", "C"), cfg) == "panel_done"
    out = run_consensus(store, cfg)  # accept + discard: experts disagree
    assert out.outcomes == {"adjudication": 1}


def test_panel_regeneration_limit_goes_to_adjudication(store, users):
    cfg = load_config(None, ["review.panel.max_regenerations=0"]).review
    item, (p1, p2) = _panel_ready(store, users, cfg)
    submit_panel(store, item, p1, PanelInput(0, ALL2, "regenerate", "C", feedback="explain option D"), cfg)
    assert submit_panel(store, item, p2, PanelInput(0, ALL2, "accept", "C"), cfg) == "adjudication"
    assert get_stage(store, item) == "adjudication"


def get_stage(store: Store, item_id: str) -> str:
    return store.items(ids=[item_id])[0].stage

"""Optional triage: an LLM judge (a scripted OpenAI server, real client, real store) orders the experts' queues by
its doubts, most doubtful first, and is never a reviewer: no review rows, no votes, no approvals, nothing shown."""
from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select

from curation.review import assign as assigning
from curation.review import sample
from curation.review.records import ReviewInput
from curation.review.triage import doubt
from curation.review.views import my_assignments
from medcot.config import load_config
from medcot.db import EventRow
from medcot.pipeline import RunContext, _run_stages, check_stages
from medcot.review_tables import DecisionRow, ReviewRow, UserRow
from medcot.scripted_server import ScriptedServer
from medcot.store import Store

PW = "correct horse battery"


class Doubtful(sample.ScriptedJudge):
    """q0 looks fine to the judge, q1 has the wrong key, q2 is wrong and insufficient; q3's judgement is junk."""

    def review(self, persona: str, user_text: str) -> dict:
        out = super().review(persona, user_text)
        if "(q1)" in user_text:
            out |= {"answer": "A", "approve": False}
        if "(q2)" in user_text:
            out |= {"correctness": 0, "sufficiency": 0, "approve": False, "medical_correctness": 0}
        return out

    def __call__(self, body: dict) -> str:
        text = (body.get("messages") or [{}])[-1].get("content", "")
        return "no idea" if "(q3)" in text else super().__call__(body)


def test_doubt_counts_every_misgiving():
    scores = dict.fromkeys(("medical_correctness", "reasoning_structure", "information_sufficiency",
                            "terminology_clarity", "clinical_utility"), 2)
    fine = ReviewInput(1, 1, 1, "C", True, scores=scores, difficulty="easy", cognitive_level="recall")
    assert doubt(fine, "C") == 0.0
    wrong_key = ReviewInput(1, 1, 1, "A", False, scores=scores, difficulty="easy", cognitive_level="recall")
    assert doubt(wrong_key, "C") == round(2 / 6, 4)
    worst = ReviewInput(0, 0, 0, "A", False, scores=dict.fromkeys(scores, 0), difficulty="hard",
                        cognitive_level="recall")
    assert doubt(worst, "C") == 1.0


async def test_triage_orders_queues_and_never_reviews(tmp_path: Path, sqlite_url: str):
    judge = Doubtful()
    async with ScriptedServer(responder=judge) as srv:
        cfg = load_config(None, [f"store.url={sqlite_url}", "llm.model=scripted", "llm.max_retries=0",
                                 f"run.out_dir={tmp_path}", f"llm.endpoints=[{srv.base_url}]", "review.triage=true"])
        check_stages(["review"])
        ctx = RunContext(cfg=cfg, store=Store(sqlite_url), out_dir=tmp_path, progress=False)
        ids = sample.add_items(ctx.store, 4)
        users = sample.add_users(ctx.store, PW, reviewers=2, panelists=0, admins=0)
        await _run_stages(ctx, ["review"], None)
        first = srv.count
        summary = ctx.sections["review"]
        assert summary["triaged"] == 3 and summary["triage_failures"] == 1
        assert "triage (LLM judge; orders the queues, never a review or an approval): 3" in summary["markdown"]
        await _run_stages(ctx, ["review"], None)  # a rerun asks nothing again (same revisions)
        assert srv.count == first
    with ctx.store.engine.connect() as conn:
        events = {e.item_id: e.payload for e in conn.execute(select(EventRow.item_id, EventRow.payload).where(
            EventRow.kind.in_(("triage", "triage_failed"))))}
        assert events[ids[0]]["doubt"] == 0.0 and "doubt" not in events[ids[3]]
        assert events[ids[2]]["doubt"] > events[ids[1]]["doubt"] > 0
        # never a reviewer: no review rows, no decisions, no account for the judge
        assert conn.scalar(select(func.count()).select_from(ReviewRow)) == 0
        assert conn.scalar(select(func.count()).select_from(DecisionRow)) == 0
        assert conn.scalar(select(func.count()).select_from(UserRow).where(UserRow.kind != "human")) == 0
        for name in ("rev1", "rev2"):
            queue = [r["item_id"] for r in my_assignments(conn, users[name]) if r["open"]]
            assert queue == [ids[2], ids[1], ids[0], ids[3]]  # most doubtful first; unknown doubt last
            assert all(set(r) == {"item_id", "phase", "question", "language", "done", "open"}
                       for r in my_assignments(conn, users[name]))  # the doubt itself is never shown
        assert all(len(assigning.assigned(conn, i, "review")) == 2 for i in ids)

"""The review, panel and consensus stages: the demo's automated LLM judges against a scripted OpenAI server
(real HTTP, real client, real store), guided regeneration with the experts' feedback, resumable reruns, and the
production flow that stops at what awaits humans."""
from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient
from review_helpers import panel_vote
from sqlalchemy import select

from curation.review import assign as assigning
from curation.review import sample
from curation.review.app import create_app
from curation.review.panel import submit_panel
from curation.review.routes import _regenerate
from medcot.config import load_config
from medcot.db import GenerationRow
from medcot.pipeline import RunContext, _run_stages, check_stages
from medcot.report import render_markdown
from medcot.review_tables import DecisionRow, RevisionRow
from medcot.scripted_server import ScriptedServer
from medcot.store import Store

STAGES = ["review", "panel", "consensus"]


class Policy(sample.ScriptedJudge):
    """Judge personas that disagree on one item and ask for a regeneration on another."""

    def review(self, persona: str, user_text: str) -> dict:
        out = super().review(persona, user_text)
        if "(q1)" in user_text and persona == "judge-b":
            out["approve"] = False  # split -> adjudication
        if "(q2)" in user_text:
            out["correctness"], out["approve"] = 0, False  # both reject -> panel
        return out

    def panel(self, persona: str, user_text: str) -> dict:
        out = super().panel(persona, user_text)
        if "(q2)" in user_text and "Revised following" not in user_text and persona == "judge-a":
            out |= {"action": "regenerate", "medical_correctness": 0, "feedback": "Explain why vasopressin is used."}
        return out


def _ctx(tmp_path: Path, url: str, overrides: list[str]) -> RunContext:
    cfg = load_config(None, [f"store.url={url}", "llm.model=scripted", "llm.max_retries=0",
                             f"run.out_dir={tmp_path}", *overrides])
    check_stages(STAGES)
    return RunContext(cfg=cfg, store=Store(url), out_dir=tmp_path, progress=False)


async def test_automated_demo_flow_is_labelled_and_resumable(tmp_path, sqlite_url):
    policy = Policy()
    async with ScriptedServer(responder=policy) as srv:
        ctx = _ctx(tmp_path, sqlite_url, [f"llm.endpoints=[{srv.base_url}]", "review.automated=llm"])
        ids = sample.add_items(ctx.store, 4)
        await _run_stages(ctx, ["review"], None)
        assert {it.stage for it in ctx.store.items()} == {"reviewed"}
        for i in ids[:3]:  # what the five-strike stage would do
            sample.set_stage(ctx.store, i, "strikes_passed")
        sample.fail_five_strikes(ctx.store, ids[3])
        ctx.client = None  # _run_stages closes its client when it returns
        await _run_stages(ctx, ["panel", "consensus"], None)
    stages = {it.id: it.stage for it in ctx.store.items()}
    assert stages == {ids[0]: "approved", ids[1]: "adjudication", ids[2]: "approved", ids[3]: "approved"}
    assert ctx.sections["review"]["automated_reviews"] == 8
    assert ctx.sections["panel"]["escalated_after_failed_review"] == 1
    assert ctx.sections["panel"]["regenerations"] == 1
    cons = ctx.sections["consensus"]
    assert cons["expert_validated"] == 0 and cons["automated_only"] == 3 and cons["awaiting_adjudication"] == 1
    with ctx.store.engine.connect() as conn:
        regen = conn.execute(select(GenerationRow).where(GenerationRow.purpose == "regenerated")).mappings().one()
        rev = conn.execute(select(RevisionRow).where(RevisionRow.kind == "regenerated")).mappings().one()
        decisions = conn.execute(select(DecisionRow.expert_validated).where(DecisionRow.kind == "approved")).all()
    assert regen["item_id"] == ids[2] and regen["revision"] == 1 and regen["call_id"] is not None
    assert "regenerate@1" in regen["prompt_version"] and rev["user_id"] is None
    regen_prompt = next(b for b in srv.bodies if not b.get("response_format"))
    assert "Explain why vasopressin is used." in regen_prompt["messages"][-1]["content"]
    assert not any(v for (v,) in decisions)
    md = render_markdown({"sections": ctx.sections, "stages": ctx.store.stage_counts()})
    assert "These items are NOT expert-validated" in md and "expert-validated (>= 2 human approvals): 0" in md
    # rerun: everything from the store, no new request, nothing changes
    n = srv.count
    async with ScriptedServer(responder=policy) as srv2:
        ctx2 = _ctx(tmp_path, sqlite_url, [f"llm.endpoints=[{srv2.base_url}]", "review.automated=llm"])
        await _run_stages(ctx2, STAGES, None)
        assert srv2.count == 0 and n > 0
    assert {it.id: it.stage for it in ctx2.store.items()} == stages


async def test_production_flow_reports_what_awaits_humans(tmp_path, sqlite_url):
    async with ScriptedServer() as srv:
        ctx = _ctx(tmp_path, sqlite_url, [f"llm.endpoints=[{srv.base_url}]"])
        ids = sample.add_items(ctx.store, 3)
        await _run_stages(ctx, STAGES, None)
        assert "no reviewers registered" in ctx.sections["review"]["markdown"]
        sample.add_users(ctx.store, "correct horse battery", reviewers=3, panelists=2, admins=1)
        ctx.client = None
        await _run_stages(ctx, STAGES, None)
        assert srv.count == 0  # humans review: no LLM call
    review = ctx.sections["review"]
    assert review["newly_assigned"] == 6 and sum(review["awaiting_reviewer"].values()) == 6
    assert "awaiting human review" in review["markdown"] and "NOT expert-validated" not in review["markdown"]
    assert {it.stage for it in ctx.store.items(ids=ids)} == {"generated"}


async def test_failed_app_regeneration_is_shown_and_the_panel_stage_retries_it(tmp_path, sqlite_url):
    all2 = {d: 2 for d in ("medical_correctness", "reasoning_structure", "information_sufficiency",
                           "terminology_clarity", "clinical_utility")}
    dead = ScriptedServer()
    await dead.start()
    dead_url = dead.base_url
    await dead.stop()  # nothing listens there any more
    ctx = _ctx(tmp_path, sqlite_url, [f"llm.endpoints=[{dead_url}]", "llm.connect_timeout_s=2"])
    [item] = sample.add_items(ctx.store, 1)
    users = sample.add_users(ctx.store, "correct horse battery", reviewers=0, panelists=2, admins=0)
    sample.fail_five_strikes(ctx.store, item)
    with ctx.store.transaction() as conn:
        assigning.assign(conn, [item], "panel", 2, assigning.pool(conn, ctx.cfg.review, "panel"))
    p1, p2 = users["pan1"], users["pan2"]
    submit_panel(ctx.store, item, p1, panel_vote(ctx.store, item, "regenerate", all2, feedback="Cite the 2010 guideline."),
                 ctx.cfg.review)
    assert submit_panel(ctx.store, item, p2, panel_vote(ctx.store, item, "accept", all2), ctx.cfg.review) == "regenerate"
    app = create_app(ctx.cfg, secret_key="r" * 40, store=ctx.store)
    await _regenerate(app.state.review, item)  # what the app runs in the background: the LLM is down
    client = TestClient(app, base_url="http://127.0.0.1")
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
    client.post("/login", data={"name": "pan1", "password": "correct horse battery", "csrf_token": token})
    page = client.get(f"/items/{item}/panel").text
    assert 'id="regenerating"' in page and 'id="regen-error"' in page
    async with ScriptedServer(responder=sample.ScriptedJudge()) as srv:
        ctx2 = _ctx(tmp_path, sqlite_url, [f"llm.endpoints=[{srv.base_url}]"])
        await _run_stages(ctx2, ["panel"], None)
    assert ctx2.sections["panel"]["regenerations"] == 1
    assert "Cite the 2010 guideline." in srv.bodies[0]["messages"][-1]["content"]
    page = client.get(f"/items/{item}/panel").text
    assert 'id="panel-form"' in page and "Revised following the experts&#39; feedback." in page

"""Pipeline stages of the expert review: `review` (assign; the demo's LLM judges review), `panel` (escalate
failed reviews, assign panelists, judges score, guided regenerations), `consensus` (approve / adjudicate /
remove). Each advances every item as far as it can, reports what awaits humans, and a rerun continues.
"""
from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import select

from curation.review import assign as assigning
from curation.review.auth import list_users
from curation.review.consensus import decide, escalate, run_consensus
from curation.review.items import attempts, current_cot, get_item, item_revision, revision_count
from curation.review.judge import Judge, JudgeResult
from curation.review.panel import panel_state, pending_regenerations, regenerate, submit_panel
from curation.review.records import PanelInput, ReviewError, ReviewInput, User
from curation.review.stats import validation_counts
from curation.review.submit import submit_review
from curation.review.triage import triage
from medcot.config import ReviewConfig
from medcot.llm import gather_all
from medcot.pipeline import RunContext, stage
from medcot.records import Event, Item
from medcot.review_tables import AssignmentRow, ReviewRow
from medcot.store import Store

NOT_VALIDATED = ("**These items are NOT expert-validated.** `review.automated: llm` is set: the reviews and panel "
                 "scores below come from an automated LLM judge (recorded as kind \"llm\"), which never counts as "
                 "an expert. Only items with at least two HUMAN approvals are expert-validated.")


def _judge(ctx: RunContext) -> Judge:
    assert ctx.client is not None
    return Judge(ctx.client, ctx.cfg.review, ctx.cfg.llm.model)


def _failed(store: Store, item_id: str, user: User, phase: str, res: JudgeResult) -> None:
    store.log_event(Event(kind="judge_failed", item_id=item_id, stage=phase, actor=user.name, actor_kind=user.kind,
                          payload={"reason": res.reason, "raw": res.raw[:2000], "call_ids": res.call_ids}))


def _pending_reviews(store: Store, judges: list[User]) -> list[tuple[Item, User, int]]:
    index = {u.id: i for i, u in enumerate(judges)}
    with store.engine.connect() as conn:
        rows = conn.execute(select(AssignmentRow.item_id, AssignmentRow.user_id)
                            .where(AssignmentRow.phase == "review", AssignmentRow.user_id.in_(list(index)))
                            .order_by(AssignmentRow.id)).all()
        done = set(conn.execute(select(ReviewRow.item_id, ReviewRow.user_id).where(ReviewRow.phase == "review")).all())
    items = {it.id: it for it in store.items(stage="generated")}
    users = {u.id: u for u in judges}
    return [(items[i], users[u], index[u]) for i, u in rows if (i, u) not in done and i in items]


async def _automated_reviews(ctx: RunContext, judges: list[User]) -> Counter[str]:
    counts: Counter[str] = Counter()
    judge = _judge(ctx)

    async def one(item: Item, user: User, index: int) -> None:
        with ctx.store.engine.connect() as conn:
            cot, revision = current_cot(conn, item.id), item_revision(conn, item)
        res = await judge.review(item, cot["cot"] if cot else "", index, revision)
        if not res.ok:
            _failed(ctx.store, item.id, user, "review", res)
            counts["judge_failed"] += 1
            return
        assert isinstance(res.form, ReviewInput)
        res.form.comment = f"[automated: {user.name}] {res.form.comment}"
        try:
            submit_review(ctx.store, item.id, user, res.form, ctx.cfg.review, actor_note="llm-judge")
        except ReviewError as exc:  # e.g. the item changed meanwhile: logged, judged again on the next run
            counts["refused"] += 1
            log_conflict(ctx.store, item.id, user, str(exc))
            return
        counts["judged"] += 1

    await gather_all([one(*p) for p in _pending_reviews(ctx.store, judges)], desc="automated review",
                     progress=ctx.progress, unit="review")
    return counts


def _awaiting(store: Store, cfg: ReviewConfig, phase: str, stage_name: str) -> dict[str, int]:
    """Who still owes a submission for items at `stage_name`: user name -> items."""
    out: Counter[str] = Counter()
    ids = [it.id for it in store.items(stage=stage_name)]
    with store.engine.connect() as conn:
        names = {u.id: u.name for u in list_users(conn)}
        for item_id in ids:
            if phase == "panel":
                pending = panel_state(conn, item_id, cfg).pending
            else:
                done = set(conn.scalars(select(ReviewRow.user_id).where(ReviewRow.item_id == item_id,
                                                                        ReviewRow.phase == phase)))
                pending = [u for u in assigning.assigned(conn, item_id, phase) if u not in done]
            out.update(names[u] for u in pending)
    return dict(out)


@stage("review", needs_llm=True)
async def review_stage(ctx: RunContext) -> dict[str, Any]:
    cfg = ctx.cfg.review
    todo = [it.id for it in ctx.store.items(stage="generated")]
    with ctx.store.transaction() as conn:
        people = assigning.pool(conn, cfg, "review")
        fallbacks: set[str] = set()
        made = assigning.assign(conn, todo, "review", cfg.reviewers_per_item, people, routing=cfg.routing,
                                fallbacks=fallbacks)
        short = assigning.shortfall(conn, todo, "review", cfg.reviewers_per_item)
    counts: Counter[str] = Counter()
    if cfg.automated == "llm" and todo:
        counts = await _automated_reviews(ctx, people)
    elif cfg.triage and todo:
        counts = await triage(ctx.store, _judge(ctx), ctx.progress)
    waiting = _awaiting(ctx.store, cfg, "review", "generated")
    summary = {"automated": cfg.automated, "items_in_review": len(ctx.store.items(stage="generated")),
               "newly_assigned": sum(len(v) for v in made.values()), "reviewers": [u.name for u in people],
               "items_short_of_reviewers": len(short), "routed_by_fallback": len(fallbacks),
               "automated_reviews": counts["judged"],
               "judge_failures": counts["judge_failed"], "triaged": counts["triage"],
               "triage_failures": counts["triage_failed"], "reviewed_total": ctx.store.stage_counts().get("reviewed", 0),
               "awaiting_reviewer": waiting}
    summary["markdown"] = _review_markdown(summary, cfg.reviewers_per_item)
    return summary


def _review_markdown(s: dict[str, Any], n: int) -> str:
    lines = [NOT_VALIDATED, ""] if s["automated"] == "llm" else []
    lines += [f"- items in initial review: {s['items_in_review']} (each needs {n} blind reviews)",
              f"- assignments made this run: {s['newly_assigned']}; reviewers: {', '.join(s['reviewers']) or 'none'}"]
    if s["automated"] == "llm":
        lines.append(f"- automated (LLM judge) reviews this run: {s['automated_reviews']}; "
                     f"unusable judgements: {s['judge_failures']}")
    if s["triaged"] or s["triage_failures"]:
        lines.append(f"- triage (LLM judge; orders the queues, never a review or an approval): {s['triaged']} "
                     f"item(s) this run, {s['triage_failures']} unusable judgement(s)")
    if not s["reviewers"]:
        lines.append("- **no reviewers registered**: add them with `medcot review add-user NAME --role reviewer`")
    if s["items_short_of_reviewers"]:
        lines.append(f"- {s['items_short_of_reviewers']} item(s) have fewer than {n} eligible reviewers")
    lines += _fallback_lines(s)
    if s["awaiting_reviewer"]:
        lines.append("- **awaiting human review** (reviewer: items): " +
                     ", ".join(f"{k}: {v}" for k, v in sorted(s["awaiting_reviewer"].items())))
    return "\n".join(lines)


def escalate_failed_reviews(store: Store, cfg: ReviewConfig) -> int:
    """Items whose initial review failed (no approving vote) go to the panel after the five strikes."""
    n = 0
    for item in store.items(stage="strikes_passed"):
        with store.transaction() as conn:
            out = decide(conn, get_item(conn, item.id), cfg)
            if out.kind == "escalate":
                escalate(conn, item.id, out.reason)
                n += 1
    return n


async def _automated_panel(ctx: RunContext, judges: list[User]) -> Counter[str]:
    cfg, judge, counts = ctx.cfg.review, _judge(ctx), Counter()
    index = {u.id: i for i, u in enumerate(judges)}

    async def one(item_id: str, user: User) -> None:
        with ctx.store.engine.connect() as conn:
            item, cot, hist = get_item(conn, item_id), current_cot(conn, item_id), attempts(conn, item_id)
            rnd, revision = revision_count(conn, item_id), item_revision(conn, item)
        res = await judge.panel(item, cot["cot"] if cot else "", hist, rnd, index[user.id], revision)
        if not res.ok:
            _failed(ctx.store, item_id, user, "panel", res)
            counts["judge_failed"] += 1
            return
        assert isinstance(res.form, PanelInput)
        try:
            counts[submit_panel(ctx.store, item_id, user, res.form, cfg)] += 1
            counts["scored"] += 1
        except ReviewError as exc:  # the round moved on meanwhile: scored again on the next pass
            counts["stale"] += 1
            log_conflict(ctx.store, item_id, user, str(exc))

    for _ in range(cfg.panel.max_regenerations + 2):
        work = []
        with ctx.store.engine.connect() as conn:
            for it in ctx.store.items(stage="escalated"):
                st = panel_state(conn, it.id, cfg)
                work += [(it.id, u) for u in judges if u.id in st.pending and st.status == "waiting"]
        before = counts["scored"]
        await gather_all([one(i, u) for i, u in work], desc="automated panel", progress=ctx.progress, unit="score")
        regens = await _regenerate_pending(ctx)
        counts["regenerated"] += regens
        if counts["scored"] == before and not regens:
            break
    return counts


def log_conflict(store: Store, item_id: str, user: User, message: str) -> None:
    store.log_event(Event(kind="submission_conflict", item_id=item_id, stage="panel", actor=user.name,
                          actor_kind=user.kind, payload={"message": message}))


async def _regenerate_pending(ctx: RunContext) -> int:
    ids = pending_regenerations(ctx.store, ctx.cfg.review)
    done = [0]

    async def one(item_id: str) -> None:
        if await regenerate(ctx.store, ctx.client, ctx.cfg.generate, ctx.cfg.llm.model, item_id, ctx.cfg.review):
            done[0] += 1

    await gather_all([one(i) for i in ids], desc="guided regeneration", progress=ctx.progress)
    return done[0]


@stage("panel", needs_llm=True)
async def panel_stage(ctx: RunContext) -> dict[str, Any]:
    cfg = ctx.cfg.review
    escalated_now = escalate_failed_reviews(ctx.store, cfg)
    todo = [it.id for it in ctx.store.items(stage="escalated")]
    with ctx.store.transaction() as conn:
        people = assigning.pool(conn, cfg, "panel")
        fallbacks = set()
        made = assigning.assign(conn, todo, "panel", cfg.panel.panelists_per_item, people, routing=cfg.routing,
                                fallbacks=fallbacks)
        short = assigning.shortfall(conn, todo, "panel", cfg.panel.panelists_per_item)
    counts: Counter[str] = Counter()
    if cfg.automated == "llm" and todo:
        counts = await _automated_panel(ctx, people)
    else:
        counts["regenerated"] = await _regenerate_pending(ctx)
    stages = ctx.store.stage_counts()
    summary = {"automated": cfg.automated, "escalated_after_failed_review": escalated_now,
               "in_panel": stages.get("escalated", 0), "newly_assigned": sum(len(v) for v in made.values()),
               "panelists": [u.name for u in people], "items_short_of_panelists": len(short),
               "routed_by_fallback": len(fallbacks),
               "automated_scores": counts["scored"], "judge_failures": counts["judge_failed"],
               "regenerations": counts["regenerated"], "panel_done_total": stages.get("panel_done", 0),
               "awaiting_panelist": _awaiting(ctx.store, cfg, "panel", "escalated")}
    summary["markdown"] = _panel_markdown(summary)
    return summary


def _fallback_lines(s: dict[str, Any]) -> list[str]:
    if not s["routed_by_fallback"]:
        return []
    return [f"- **routing fallback**: {s['routed_by_fallback']} item(s) went to people outside their language/"
            "specialty because too few fit (set profiles with `medcot review user set-profile`, or "
            "review.routing.fallback=wait to hold them)"]


def _panel_markdown(s: dict[str, Any]) -> str:
    lines = [NOT_VALIDATED, ""] if s["automated"] == "llm" else []
    lines += [f"- sent to the panel after a failed initial review (this run): {s['escalated_after_failed_review']}",
              f"- items in the panel: {s['in_panel']}; panel done: {s['panel_done_total']}",
              f"- guided regenerations this run: {s['regenerations']}"]
    if s["automated"] == "llm":
        lines.append(f"- automated (LLM judge) rubric scores this run: {s['automated_scores']}; "
                     f"unusable judgements: {s['judge_failures']}")
    if not s["panelists"] and s["in_panel"]:
        lines.append("- **no panelists registered**: add them with `medcot review add-user NAME --role panelist`")
    if s["items_short_of_panelists"]:
        lines.append(f"- {s['items_short_of_panelists']} item(s) have too few eligible panelists")
    lines += _fallback_lines(s)
    if s["awaiting_panelist"]:
        lines.append("- **awaiting panelists** (panelist: items): " +
                     ", ".join(f"{k}: {v}" for k, v in sorted(s["awaiting_panelist"].items())))
    return "\n".join(lines)


@stage("consensus")
async def consensus_stage(ctx: RunContext) -> dict[str, Any]:
    cfg = ctx.cfg.review
    s = run_consensus(ctx.store, cfg)
    stages = ctx.store.stage_counts()
    with ctx.store.engine.connect() as conn:
        totals = validation_counts(conn)
    summary = {"automated": cfg.automated, "decided_this_run": dict(s.outcomes), "reasons": dict(s.reasons),
               "approved_total": stages.get("approved", 0), "removed_total": stages.get("removed", 0),
               "awaiting_adjudication": stages.get("adjudication", 0), **totals}
    summary["markdown"] = _consensus_markdown(summary)
    return summary


def _consensus_markdown(s: dict[str, Any]) -> str:
    lines = [NOT_VALIDATED, ""] if s["automated"] == "llm" else []
    lines += [f"- decided this run: {s['decided_this_run'] or 'nothing'}",
              f"- approved: {s['approved_total']} in total, of which **expert-validated (>= 2 human approvals): "
              f"{s['expert_validated']}**; approved by automated reviewers only (NOT expert-validated): "
              f"{s['automated_only']}",
              f"- removed (no consensus or discarded): {s['removed_total']}",
              f"- **awaiting adjudication by a human** (an admin or a third expert): {s['awaiting_adjudication']}"]
    if s["reasons"]:
        lines.append("- reasons: " + ", ".join(f"{k}: {v}" for k, v in sorted(s["reasons"].items())))
    return "\n".join(lines)


"""The expert panel (paper 2.3.4): rubric scoring rounds, hand revision, guided regeneration.

A round is the CoT revision being scored. Each assigned panelist who has not edited the CoT scores the five
dimensions 0-2 and picks an action:
- revise: their hand-edited CoT becomes the next revision at once; they no longer score this item, and a
  replacement panelist is assigned;
- regenerate / accept / discard: recorded; when every eligible panelist has scored the round it resolves:
  any "regenerate" -> the LLM rewrites the CoT guided by ALL panelists' feedback (new revision, same
  panelists score again; after `max_regenerations` -> adjudication); otherwise -> stage panel_done and
  consensus weighs the accept/discard votes.
Scores of a round are never shown to the other panelists of that round (blind until adjudication).
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.engine import Connection

from curation.generate import cot_request
from curation.review import assign as assigning
from curation.review.consensus import panel_decisions, reconcile, record_outcome
from curation.review.items import (
    apply_edits,
    current_cot,
    editors,
    effective_edits,
    get_item,
    item_revision,
    lock_item,
    log,
    revision_count,
    save_cot,
    set_stage,
)
from curation.review.prompts import load as load_prompt
from curation.review.records import Edits, PanelInput, ReviewError, User
from curation.review.standard import load_standard, policy_problems
from curation.review.submit import check_length, check_revision
from medcot.config import GenerateConfig, ReviewConfig
from medcot.db import ItemRow
from medcot.llm import LLMClient
from medcot.records import Event, Item
from medcot.review_tables import RUBRIC_DIMENSIONS, DecisionRow, RevisionRow, RubricScoreRow
from medcot.store import Store


@dataclass
class PanelState:
    round: int
    eligible: list[int]  # assigned panelists who may score this round (never an editor)
    submitted: dict[int, dict[str, Any]]  # user id -> their decision for this round
    regenerations: int
    status: str  # "waiting" | "regenerate" | "resolved"
    actions: Counter[str] = field(default_factory=Counter)

    @property
    def pending(self) -> list[int]:
        return [u for u in self.eligible if u not in self.submitted]


def panel_state(conn: Connection, item_id: str, cfg: ReviewConfig) -> PanelState:
    rnd = revision_count(conn, item_id)  # every change of question, options, key or CoT opens a new round
    banned = editors(conn, item_id)
    eligible = [u for u in assigning.assigned(conn, item_id, "panel") if u not in banned]
    submitted = {d["user_id"]: d for d in panel_decisions(conn, item_id, rnd) if d["user_id"] in eligible}
    regens = conn.scalar(select(func.count()).select_from(RevisionRow).where(
        RevisionRow.item_id == item_id, RevisionRow.kind == "regenerated")) or 0
    actions = Counter(d["kind"] for d in submitted.values())
    complete = len(submitted) >= cfg.panel.panelists_per_item and not [u for u in eligible if u not in submitted]
    status = "waiting" if not complete else ("regenerate" if actions["regenerate"] else "resolved")
    return PanelState(rnd, eligible, submitted, regens, status, actions)


def submit_panel(store: Store, item_id: str, user: User, form: PanelInput, cfg: ReviewConfig) -> str:
    """Store one panelist's scores and action for a round; returns what happens next:
    "waiting" | "regenerate" | "panel_done" | "adjudication" | "revised" | "already"."""
    with store.transaction() as conn:
        stage = lock_item(conn, item_id)
        if not assigning.is_assigned(conn, item_id, user.id, "panel"):
            raise ReviewError("not found", 404)  # the same answer as for a missing item
        if user.id in editors(conn, item_id):
            raise ReviewError("you revised this item: other panelists score it now", 403)
        state = panel_state(conn, item_id, cfg)
        mine = state.submitted.get(user.id)
        if mine is not None:
            return _resubmitted(mine, form, state)
        if stage != "escalated":
            raise ReviewError(f"the panel of this item is closed (stage {stage})", 409)
        item = get_item(conn, item_id)
        current = item_revision(conn, item)
        if form.round != state.round or (form.revision is not None and form.revision != current):
            raise ReviewError(f"the item changed (now round {state.round}): reload and score the new text", 409)
        check_revision(form.revision, current)
        if state.status == "regenerate":
            raise ReviewError("a regeneration is pending for this item", 409)
        if form.answer is None or form.answer not in item.options:
            raise ReviewError(f"answer {form.answer!r} is not one of the options {sorted(item.options)}")
        if form.action == "accept":
            bad = policy_problems(form.scores, cfg.rubric_policy.min_score, cfg.rubric_policy.required)
            if bad:
                raise ReviewError("'accept' is incompatible with these rubric scores: " + "; ".join(bad) +
                                  ". Choose another action, or correct the scores.")
        _store_scores(conn, item_id, user, form, current)
        if form.action == "revise":
            return _revise(conn, item_id, user, form, cfg)
        return resolve(conn, item_id, cfg)


def _resubmitted(mine: dict[str, Any], form: PanelInput, state: PanelState) -> str:
    same = mine["kind"] == form.action and (mine["details"] or {}).get("scores") == form.scores \
        and form.round == state.round
    if same:
        return "already"
    raise ReviewError("you already scored this revision", 409)


def _store_scores(conn: Connection, item_id: str, user: User, form: PanelInput, revision: str) -> None:
    check_length("feedback", form.feedback)
    check_length("comment", form.comment)
    version = load_standard().version
    conn.execute(insert(RubricScoreRow), [{"item_id": item_id, "user_id": user.id, "round": form.round, "phase": "panel",
                                           "dimension": d, "score": form.scores[d], "revision_hash": revision,
                                           "standard_version": version} for d in RUBRIC_DIMENSIONS])
    conn.execute(insert(DecisionRow).values(item_id=item_id, user_id=user.id, kind=form.action, details={
        "round": form.round, "answer": form.answer, "feedback": form.feedback, "comment": form.comment,
        "scores": form.scores, "revision_hash": revision, "blind": True, "difficulty": form.difficulty,
        "cognitive_level": form.cognitive_level, "standard_version": version,
        "proposal": form.action == "revise"}))
    log(conn, Event(kind="panel_submitted", item_id=item_id, stage="panel", actor=user.name, actor_kind=user.kind,
                    payload={"round": form.round, "action": form.action}))


def _revise(conn: Connection, item_id: str, user: User, form: PanelInput, cfg: ReviewConfig) -> str:
    """A panelist's repair: question, options and key as well as the CoT. The editor stops scoring this item;
    a changed question, option or key sends it through five-strike again before the panel judges it afresh."""
    item = get_item(conn, item_id)
    edits = effective_edits(conn, item, Edits(question=form.edits.question, options=form.edits.options,
                                              answer=form.edits.answer, cot=form.revised_cot))
    if not edits.any():
        raise ReviewError("the revision is identical to the current text")
    changed = apply_edits(conn, item, edits, user)
    people = assigning.pool(conn, cfg, "panel")
    assigning.assign(conn, [item_id], "panel", cfg.panel.panelists_per_item, people, routing=cfg.routing)
    if set(changed) & {"question", "options", "answer"}:
        reconcile(conn, item_id, changed, cfg, f"repaired by panelist {user.name}: {', '.join(changed)} changed")
        return "restrike"
    return "revised"


def resolve(conn: Connection, item_id: str, cfg: ReviewConfig) -> str:
    """Close the current round if complete. Call under lock_item."""
    state = panel_state(conn, item_id, cfg)
    if state.status == "waiting":
        return "waiting"
    if state.status == "regenerate":
        if state.regenerations < cfg.panel.max_regenerations:
            return "regenerate"
        record_outcome(conn, item_id, "adjudication", cfg,
                       reason=f"regeneration limit: the panel still asks for changes after {state.regenerations} "
                              "regenerations")
        return "adjudication"
    set_stage(conn, item_id, "panel_done", Event(kind="panel_done", item_id=item_id, stage="panel", payload={
        "round": state.round, "actions": dict(state.actions)}))
    return "panel_done"


def guidance(item: Item, cot: dict[str, Any], decisions: list[dict[str, Any]]) -> tuple[str, str]:
    """(extra user text for the CoT prompt, its prompt tag): every panelist's feedback and low scores."""
    lines = []
    for d in decisions:
        details = d["details"] or {}
        low = [k for k, v in (details.get("scores") or {}).items() if v < 2]
        text = (details.get("feedback") or "").strip()
        if text or low:
            lines.append(f"- {text}" + (f" (low: {', '.join(low)})" if low else ""))
    prompt = load_prompt("regenerate", item.language)
    user = prompt.user.format(round=cot["revision"], feedback="\n".join(lines) or "-", cot=cot["cot"])
    return user, prompt.tag


async def regenerate(store: Store, client: LLMClient, gen_cfg: GenerateConfig, model: str, item_id: str,
                     cfg: ReviewConfig) -> bool:
    """Run a pending guided regeneration; False if none is pending (done elsewhere, or not asked for)."""
    with store.transaction() as conn:
        state = panel_state(conn, item_id, cfg)
        if state.status != "regenerate" or state.regenerations >= cfg.panel.max_regenerations:
            return False
        item, cot = get_item(conn, item_id), current_cot(conn, item_id)
    if cot is None:
        raise ReviewError(f"item {item_id} has no CoT to regenerate")
    extra, tag = guidance(item, cot, list(state.submitted.values()))
    req = cot_request(item, gen_cfg, model, stage="regenerate", extra_user=extra)
    req.prompt_version = f"{req.prompt_version}+{tag}"
    result = await client.chat(req)
    if result.finish_reason == "length" and gen_cfg.truncated_retry_factor > 1:  # as in generation
        req = dataclasses.replace(req, params={
            **req.params, "max_tokens": int(gen_cfg.sampling.max_tokens * gen_cfg.truncated_retry_factor)})
        result = await client.chat(req)
    cut = not result.content.strip() or (result.finish_reason == "length" and not gen_cfg.keep_truncated)
    with store.transaction() as conn:
        lock_item(conn, item_id)
        now = panel_state(conn, item_id, cfg)
        if now.round != state.round or now.status != "regenerate":
            return False
        if cut:  # an empty or half-written CoT never replaces the one the panel judged
            record_outcome(conn, item_id, "adjudication", cfg,
                           reason="regeneration cut at max_tokens: the model returned no complete CoT")
            return False
        if not save_cot(conn, get_item(conn, item_id), result.content, None, kind="regenerated",
                        call_id=result.call_id, reasoning=result.reasoning, prompt_version=req.prompt_version,
                        finish_reason=result.finish_reason):
            record_outcome(conn, item_id, "adjudication", cfg, reason="regeneration unchanged: the model returned the same CoT")
            return False
        log(conn, Event(kind="regenerated", item_id=item_id, stage="panel", actor="llm", actor_kind="llm", payload={
            "from_round": state.round, "call_id": result.call_id, "finish_reason": result.finish_reason}))
    return True


def pending_regenerations(store: Store, cfg: ReviewConfig) -> list[str]:
    out = []
    with store.engine.connect() as conn:
        for item_id in conn.scalars(select(ItemRow.id).where(ItemRow.stage == "escalated")):
            if panel_state(conn, item_id, cfg).status == "regenerate":
                out.append(item_id)
    return out


"""Optional triage (review.triage): before the experts, an LLM judge reads each item in initial review, and its
doubts order every expert's queue, most doubtful first, so that scarce expert time goes where the model is least
sure. The judge here is NOT a reviewer: its judgement is an audit event (`triage`, actor `llm:triage`, kind llm)
with a doubt score, never a review, a vote or an approval, and the experts never see it (no anchoring).

Doubt, 0..1: the share of the judge's misgivings among everything it could object to: each binary judgement it
fails (relevance, correctness, sufficiency), an answer that differs from the key, withholding its approval, and
the points short of 2 on each rubric dimension (weighted so that the rubric counts as much as one judgement). A
judgement that does not parse is recorded as a triage failure, and the item keeps its place (doubt unknown).
"""
from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from curation.review.items import current_cot, item_revision, log
from curation.review.judge import Judge
from curation.review.records import ReviewInput
from medcot.db import EventRow
from medcot.llm import gather_all
from medcot.records import Event, Item
from medcot.review_tables import BINARY_DIMENSIONS
from medcot.store import Store

ACTOR = "llm:triage"


def doubt(form: ReviewInput, key: str) -> float:
    """How doubtful the judge is about the item as written (0 = no misgiving, 1 = objects to everything)."""
    misgivings = sum(1 - int(getattr(form, d)) for d in BINARY_DIMENSIONS)
    misgivings += int((form.answer or "") != key) + int(not form.approve)
    rubric = (sum(2 - v for v in form.scores.values()) / (2 * len(form.scores))) if form.scores else 0.0
    return round((misgivings + rubric) / (len(BINARY_DIMENSIONS) + 3), 4)


def doubts(conn: Connection, item_ids: list[str]) -> dict[str, float]:
    """item -> the doubt of its latest triage (items never triaged, or whose triage failed, are absent)."""
    out: dict[str, float] = {}
    if not item_ids:
        return out
    rows = conn.execute(select(EventRow.item_id, EventRow.payload).where(
        EventRow.kind == "triage", EventRow.item_id.in_(item_ids)).order_by(EventRow.id))
    for item_id, payload in rows:
        if (payload or {}).get("doubt") is not None:
            out[item_id] = float(payload["doubt"])
    return out


def _triaged(store: Store) -> set[tuple[str, str]]:
    """(item, revision) pairs already triaged, with success or not (a rerun does not ask again)."""
    with store.engine.connect() as conn:
        return {(i, (p or {}).get("revision", "")) for i, p in conn.execute(
            select(EventRow.item_id, EventRow.payload).where(EventRow.kind.in_(("triage", "triage_failed"))))}


async def triage(store: Store, judge: Judge, progress: bool | None = None) -> Counter[str]:
    """Triage every item in initial review whose current revision has not been triaged yet."""
    counts: Counter[str] = Counter()
    done = _triaged(store)
    todo: list[tuple[Item, str, str]] = []
    with store.engine.connect() as conn:
        for item in store.items(stage="generated"):
            revision = item_revision(conn, item)
            if (item.id, revision) not in done:
                todo.append((item, revision, (current_cot(conn, item.id) or {}).get("cot") or ""))

    async def one(item: Item, revision: str, cot: str) -> None:
        res = await judge.review(item, cot, 0, revision)
        payload: dict[str, Any] = {"revision": revision, "call_ids": res.call_ids}
        if res.ok and isinstance(res.form, ReviewInput):
            payload["doubt"], kind = doubt(res.form, item.answer), "triage"
        else:
            payload["reason"], kind = res.reason, "triage_failed"
        with store.transaction() as conn:
            log(conn, Event(kind=kind, item_id=item.id, stage="review", actor=ACTOR, actor_kind="llm", payload=payload))
        counts[kind] += 1

    await gather_all([one(*t) for t in todo], desc="triage", progress=progress, unit="item")
    return counts

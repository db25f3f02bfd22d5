"""Expert time, measured (the paper's third limitation: expert validation is resource-intensive).

- Active time of a submission: from the latest time its page was served to that person (the `item_viewed`
  audit event of that phase) to the submit, capped at review.max_active_minutes (a page left open is idle, not
  work). One `review_times` row per fresh submission made in the web app; imports (Label Studio) and automated
  reviewers have none, so every figure here is human time in the app.
- Pace: per reviewer, submissions and the median minutes per submission; throughput = submissions per day over
  the last 7 days.
- Backlog per phase: submissions still owed (open assignments plus empty places of items not fully staffed), and
  an ETA = backlog / the team's throughput (None while nobody has submitted in the last 7 days).
- Per validated item: the human minutes spent on it over every phase; the release card reports their median.
"""
from __future__ import annotations

import statistics
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.engine import Connection

from curation.review import assign as assigning
from curation.review.accounts import OPEN_STAGE, needed, open_assignments
from curation.review.records import User
from medcot.config import ReviewConfig
from medcot.db import EventRow, ItemRow
from medcot.review_tables import PHASES, DecisionRow, ReviewTimeRow, UserRow

WINDOW_DAYS = 7


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def record_active_time(conn: Connection, item_id: str, user: User, phase: str, cap_minutes: float,
                       now: datetime | None = None) -> float | None:
    """Store the active seconds of a submission just made (None when the page was never served: no row)."""
    views = conn.execute(select(EventRow.created_at, EventRow.payload).where(
        EventRow.item_id == item_id, EventRow.kind == "item_viewed", EventRow.actor == user.name)
        .order_by(EventRow.id.desc()).limit(100))
    opened = next((_aware(at) for at, payload in views if (payload or {}).get("phase") == phase), None)
    if opened is None:
        return None
    elapsed = max(0.0, ((now or datetime.now(UTC)) - opened).total_seconds())
    seconds = min(elapsed, cap_minutes * 60)
    conn.execute(insert(ReviewTimeRow).values(item_id=item_id, user_id=user.id, phase=phase, seconds=seconds,
                                              capped=elapsed > cap_minutes * 60))
    return seconds


def _minutes(values: list[float]) -> float | None:
    return round(statistics.median(values) / 60, 2) if values else None


def pace(conn: Connection, user_id: int) -> dict[str, Any]:
    """One reviewer's own figures: submissions timed and their median minutes."""
    secs = list(conn.scalars(select(ReviewTimeRow.seconds).where(ReviewTimeRow.user_id == user_id)))
    return {"timed": len(secs), "median_minutes": _minutes(secs)}


def backlog(conn: Connection, cfg: ReviewConfig) -> dict[str, int]:
    """phase -> submissions still owed: open assignments of active accounts plus places not yet assigned."""
    owed: dict[str, int] = dict.fromkeys(PHASES, 0)
    for uid in conn.scalars(select(UserRow.id).where(UserRow.active.is_(True))):
        for phase, items in open_assignments(conn, uid, cfg).items():
            owed[phase] += len(items)
    for phase in PHASES:
        ids = list(conn.scalars(select(ItemRow.id).where(ItemRow.stage == OPEN_STAGE[phase])))
        for item_id in assigning.shortfall(conn, ids, phase, needed(cfg, phase)):
            owed[phase] += needed(cfg, phase) - len(assigning.assigned(conn, item_id, phase))
    return owed


def validated_item_minutes(conn: Connection) -> dict[str, float]:
    """item -> human active minutes spent on it (over every phase), for expert-validated items with any timing."""
    latest = select(DecisionRow.item_id, func.max(DecisionRow.id).label("id")).group_by(DecisionRow.item_id).subquery()
    validated = set(conn.scalars(select(DecisionRow.item_id).join(latest, latest.c.id == DecisionRow.id).where(
        DecisionRow.kind == "approved", DecisionRow.expert_validated.is_(True))))
    per_item: dict[str, float] = defaultdict(float)
    for item_id, seconds in conn.execute(select(ReviewTimeRow.item_id, ReviewTimeRow.seconds)
                                         .join(UserRow, UserRow.id == ReviewTimeRow.user_id)
                                         .where(UserRow.kind == "human")):
        if item_id in validated:
            per_item[item_id] += seconds / 60
    return dict(per_item)


def expert_time(conn: Connection, cfg: ReviewConfig, now: datetime | None = None) -> dict[str, Any]:
    """Throughput per reviewer, backlog per phase, ETA and minutes per validated item (`review stats --json`)."""
    since = (now or datetime.now(UTC)) - timedelta(days=WINDOW_DAYS)
    by_user: dict[str, list[tuple[float, datetime]]] = defaultdict(list)
    for name, seconds, at in conn.execute(select(UserRow.name, ReviewTimeRow.seconds, ReviewTimeRow.created_at)
                                          .join(UserRow, UserRow.id == ReviewTimeRow.user_id)
                                          .where(UserRow.kind == "human")):
        by_user[name].append((seconds, _aware(at)))
    reviewers = {name: {"submissions": len(rows), "median_minutes": _minutes([s for s, _ in rows]),
                        "per_day": round(sum(1 for _, at in rows if at >= since) / WINDOW_DAYS, 2)}
                 for name, rows in sorted(by_user.items())}
    owed = backlog(conn, cfg)
    team_per_day = sum(r["per_day"] for r in reviewers.values())
    per_item = list(validated_item_minutes(conn).values())
    return {"reviewers": reviewers, "backlog": owed, "team_per_day": round(team_per_day, 2),
            "eta_days": round(sum(owed.values()) / team_per_day, 1) if team_per_day else None,
            "window_days": WINDOW_DAYS, "validated_items_timed": len(per_item),
            "median_minutes_per_validated_item": round(statistics.median(per_item), 2) if per_item else None}

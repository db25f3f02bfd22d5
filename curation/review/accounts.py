"""Accounts over months: deactivate (open work handed over), activate, reset a password, routing profiles,
and the staffing check (items that nobody eligible can take) shown by `medcot review stats` and the dashboard.

An open assignment is one whose item is still in that phase and that the person has not done yet:
- review: the item is in initial review (stage generated) and they have no review of it;
- panel: the item is in the panel (stage escalated) and they still owe a score for the current round;
- adjudication: the item awaits adjudication and they have not given a verdict.
Deactivating removes exactly those rows (event `unassigned`, reason "deactivated") and fills the items up again
with `assign.assign`, under the same rules as a first assignment (blind, balanced, editors and voters excluded,
routing). Finished work stays: a review given while the account was active still counts.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Connection

from curation.review import assign as assigning
from curation.review.auth import get_user_by_name, hash_password, revoke_user_sessions
from curation.review.i18n import LANGUAGES as UI_LANGUAGES
from curation.review.items import log
from curation.review.panel import panel_state
from curation.review.records import ReviewError, User
from medcot.config import ReviewConfig
from medcot.db import ItemRow
from medcot.records import Event
from medcot.review_tables import PHASES, AssignmentRow, ReviewerProfileRow, ReviewRow, UserRow

OPEN_STAGE = {"review": "generated", "panel": "escalated", "adjudication": "adjudication"}
_LANGUAGE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")


def needed(cfg: ReviewConfig, phase: str) -> int:
    """People an item needs in a phase."""
    return {"review": cfg.reviewers_per_item, "panel": cfg.panel.panelists_per_item, "adjudication": 1}[phase]


@dataclass
class Handover:
    """What deactivating one account did."""

    user: str
    sessions_revoked: int
    unassigned: dict[str, list[str]] = field(default_factory=dict)  # phase -> item ids taken from the user
    reassigned: dict[str, list[str]] = field(default_factory=dict)  # item id -> names newly assigned
    short: dict[str, list[str]] = field(default_factory=dict)  # phase -> item ids still short of people

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _named(conn: Connection, name: str) -> User:
    user = get_user_by_name(conn, name)
    if user is None:
        raise ReviewError(f"no user named {name!r} (see `medcot review user list`)", 404)
    return user


def open_assignments(conn: Connection, user_id: int, cfg: ReviewConfig) -> dict[str, list[str]]:
    """phase -> item ids the user still owes work on (see the module docstring)."""
    rows = conn.execute(select(AssignmentRow.item_id, AssignmentRow.phase, ItemRow.stage)
                        .join(ItemRow, ItemRow.id == AssignmentRow.item_id)
                        .where(AssignmentRow.user_id == user_id).order_by(AssignmentRow.id)).all()
    done = set(conn.execute(select(ReviewRow.item_id, ReviewRow.phase).where(ReviewRow.user_id == user_id)).all())
    out: dict[str, list[str]] = {}
    for item_id, phase, stage in rows:
        if stage != OPEN_STAGE[phase]:
            continue
        owes = user_id in panel_state(conn, item_id, cfg).pending if phase == "panel" else (item_id, phase) not in done
        if owes:
            out.setdefault(phase, []).append(item_id)
    return out


def deactivate(conn: Connection, name: str, cfg: ReviewConfig, actor: str = "admin-cli") -> Handover:
    """Deactivate an account: it cannot log in (sessions revoked at once) and its open work goes to others."""
    user = _named(conn, name)
    conn.execute(update(UserRow).where(UserRow.id == user.id).values(active=False))
    result = Handover(user=name, sessions_revoked=revoke_user_sessions(conn, user.id))
    result.unassigned = open_assignments(conn, user.id, cfg)
    for phase, item_ids in result.unassigned.items():
        conn.execute(delete(AssignmentRow).where(AssignmentRow.user_id == user.id, AssignmentRow.phase == phase,
                                                 AssignmentRow.item_id.in_(item_ids)))
        for item_id in item_ids:
            log(conn, Event(kind="unassigned", item_id=item_id, stage=phase, actor=actor,
                            payload={"user": name, "phase": phase, "reason": "deactivated"}))
        people = assigning.pool(conn, cfg, phase)
        result.reassigned |= assigning.assign(conn, item_ids, phase, needed(cfg, phase), people, actor=actor,
                                              routing=cfg.routing)
        short = assigning.shortfall(conn, item_ids, phase, needed(cfg, phase))
        if short:
            result.short[phase] = short
    log(conn, Event(kind="user_deactivated", stage="auth", actor=actor, payload={
        "user": name, "unassigned": sum(len(v) for v in result.unassigned.values()),
        "reassigned": sum(len(v) for v in result.reassigned.values()),
        "short": sum(len(v) for v in result.short.values())}))
    return result


def activate(conn: Connection, name: str, actor: str = "admin-cli") -> User:
    """Let an account log in again (it gets new work at the next assignment; old sessions stay revoked)."""
    user = _named(conn, name)
    conn.execute(update(UserRow).where(UserRow.id == user.id).values(active=True))
    log(conn, Event(kind="user_activated", stage="auth", actor=actor, payload={"user": name}))
    return user


def reset_password(conn: Connection, name: str, password: str, actor: str = "admin-cli") -> int:
    """Set a new password and end every live session of the account; returns the sessions revoked."""
    user = _named(conn, name)
    if user.kind != "human":
        raise ReviewError(f"{name!r} is an automated reviewer ({user.kind}): it has no password")
    conn.execute(update(UserRow).where(UserRow.id == user.id).values(password_hash=hash_password(password)))
    revoked = revoke_user_sessions(conn, user.id)
    log(conn, Event(kind="password_reset", stage="auth", actor=actor, payload={"user": name, "sessions_revoked": revoked}))
    return revoked


def set_profile(conn: Connection, name: str, languages: list[str] | None, specialties: list[str] | None,
                known_specialties: list[str], ui_language: str | None = None,
                actor: str = "admin-cli") -> dict[str, Any]:
    """Set what a reviewer can review (None leaves a field as it is; [] means any). Languages are item language
    codes (zh, en ...), specialties taxonomy keys (a discipline covers its subspecialties); ui_language is the
    interface language of their pages (one of i18n.LANGUAGES, "" = from their languages / the browser)."""
    user = _named(conn, name)
    if ui_language and ui_language not in UI_LANGUAGES:
        raise ReviewError(f"interface language {ui_language!r} is not one of {', '.join(UI_LANGUAGES)}")
    for lang in languages or []:
        if not _LANGUAGE.match(lang):
            raise ReviewError(f"language {lang!r} is not a language code like zh or en")
    unknown = [s for s in specialties or [] if s not in known_specialties]
    if unknown:
        raise ReviewError(f"unknown specialty {unknown[0]!r}: one of the taxonomy's keys, e.g. "
                          f"{', '.join(known_specialties[:4])} (see curation/taxonomy.yaml)")
    row = conn.execute(select(ReviewerProfileRow).where(ReviewerProfileRow.user_id == user.id)).mappings().first()
    profile: dict[str, Any] = {"languages": list(row["languages"]) if row else [],
                               "specialties": list(row["specialties"]) if row else [],
                               "ui_language": row["ui_language"] if row else None}
    if ui_language is not None:
        profile["ui_language"] = ui_language or None
    if languages is not None:
        profile["languages"] = sorted(dict.fromkeys(languages))
    if specialties is not None:
        profile["specialties"] = sorted(dict.fromkeys(specialties))
    if row:
        conn.execute(update(ReviewerProfileRow).where(ReviewerProfileRow.user_id == user.id).values(**profile))
    else:
        conn.execute(ReviewerProfileRow.__table__.insert().values(user_id=user.id, **profile))
    log(conn, Event(kind="profile_set", stage="auth", actor=actor, payload={"user": name, **profile}))
    return profile


def staffing(conn: Connection, cfg: ReviewConfig) -> dict[str, Any]:
    """Per phase: items open in it, items still waiting for assignees (`unfilled`: the next `medcot run` or a
    consensus fills them) and items `short` of people: even every free eligible account could not bring them to
    the number needed (too few accounts, or the fitting ones deactivated). `shortfall` totals `short`."""
    out: dict[str, Any] = {}
    for phase in PHASES:
        ids = list(conn.scalars(select(ItemRow.id).where(ItemRow.stage == OPEN_STAGE[phase]).order_by(ItemRow.id)))
        n = needed(cfg, phase)
        short = assigning.unstaffable(conn, ids, phase, n, assigning.pool(conn, cfg, phase), cfg.routing)
        out[phase] = {"open_items": len(ids), "needed_per_item": n,
                      "unfilled": len(assigning.shortfall(conn, ids, phase, n)), "short": len(short),
                      "short_items": short[:50]}
    out["shortfall"] = sum(v["short"] for v in out.values())
    return out

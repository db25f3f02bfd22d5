"""Tables of the expert review (paper 2.3). Reviews, scores, revisions and decisions are append-only:
a new row supersedes an old one, nothing is updated in place.

Actor kinds: "human" (a real expert; the only kind that counts toward expert-validated),
"llm" (an LLM judge used for triage or as the demo's stand-in), "demo" (a scripted stand-in).
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from medcot.db import Base, utcnow

ROLES = ("reviewer", "panelist", "admin")
ACTOR_KINDS = ("human", "llm", "demo")
PHASES = ("review", "panel", "adjudication")
BINARY_DIMENSIONS = ("relevance", "correctness", "sufficiency")
DIFFICULTIES = ("easy", "moderate", "hard")
COGNITIVE_LEVELS = ("recall", "interpretation", "problem-solving")
RUBRIC_DIMENSIONS = ("medical_correctness", "reasoning_structure", "information_sufficiency",
                     "terminology_clarity", "clinical_utility")


class StoreSecretRow(Base):
    """Per-store secrets created with the store (never printed): e.g. the key of the published rater pseudonyms."""

    __tablename__ = "store_secrets"
    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    value: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class UserRow(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    role: Mapped[str] = mapped_column(String(20))  # ROLES
    kind: Mapped[str] = mapped_column(String(20), default="human")  # ACTOR_KINDS
    password_hash: Mapped[str | None] = mapped_column(String(300))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ReviewerProfileRow(Base):
    """What a reviewer can review (routing): languages (item language codes) and specialties (taxonomy names).
    Empty lists mean "any". A table of its own, so that stores created before profiles existed gain it."""

    __tablename__ = "reviewer_profiles"
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    languages: Mapped[list[str]] = mapped_column(JSON, default=list)
    specialties: Mapped[list[str]] = mapped_column(JSON, default=list)
    ui_language: Mapped[str | None] = mapped_column(String(8), nullable=True)  # the interface's (en | zh)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class ReviewTimeRow(Base):
    """Active expert time of one submission (review, panel score, adjudication): from the latest time the page was
    served to that person to the submit, capped (review.max_active_minutes: a page left open overnight is idle)."""

    __tablename__ = "review_times"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    item_id: Mapped[str] = mapped_column(ForeignKey("items.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    phase: Mapped[str] = mapped_column(String(20))  # PHASES
    seconds: Mapped[float] = mapped_column(Float)
    capped: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class SessionRow(Base):
    """A logged-in session of the review app (server side): logout or an admin revokes it at once."""

    __tablename__ = "review_sessions"
    sid_hash: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the cookie's session id
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    expires_at: Mapped[float] = mapped_column(Float)  # unix time
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AssignmentRow(Base):
    __tablename__ = "assignments"
    __table_args__ = (UniqueConstraint("item_id", "user_id", "phase", name="uq_assignment"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    item_id: Mapped[str] = mapped_column(ForeignKey("items.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    phase: Mapped[str] = mapped_column(String(20))  # PHASES
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ReviewRow(Base):
    """Initial review (paper 2.3.1): three binary judgements, the reviewer's answer, wording approval."""

    __tablename__ = "reviews"
    __table_args__ = (UniqueConstraint("item_id", "user_id", "phase", name="uq_review"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    item_id: Mapped[str] = mapped_column(ForeignKey("items.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    phase: Mapped[str] = mapped_column(String(20), default="review")
    relevance: Mapped[int] = mapped_column(Integer)  # 1/0
    correctness: Mapped[int] = mapped_column(Integer)  # 1/0
    sufficiency: Mapped[int] = mapped_column(Integer)  # 1/0
    answer: Mapped[str | None] = mapped_column(String(1))  # the letter the reviewer holds correct
    approve: Mapped[bool] = mapped_column(Boolean)  # approves the text it was cast on (revision_hash)
    comment: Mapped[str] = mapped_column(Text, default="")
    # the revision judged (medcot.revision.content_hash of question, options, key, CoT as shown); None only in
    # stores written before revisions were recorded: such a vote never counts as an approval
    revision_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    # True when nothing of another reviewer (verdict, answer, comment, edit) was visible before the vote
    blind: Mapped[bool] = mapped_column(Boolean, default=True)
    # private edit proposal {field: new value} (initial review); never applied by the review itself
    proposal: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    difficulty: Mapped[str | None] = mapped_column(String(20))  # DIFFICULTIES
    cognitive_level: Mapped[str | None] = mapped_column(String(20))  # COGNITIVE_LEVELS
    standard_version: Mapped[str | None] = mapped_column(String(40))  # annotation standard of the labels
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class RubricScoreRow(Base):
    """The five rubric dimensions (paper 3.2) scored 0-2 per rater and scoring round: by the initial reviewers
    (phase "review", round = the CoT revision they judged) and by the panel (phase "panel")."""

    __tablename__ = "rubric_scores"
    __table_args__ = (UniqueConstraint("item_id", "user_id", "phase", "round", "dimension", name="uq_rubric"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    item_id: Mapped[str] = mapped_column(ForeignKey("items.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    round: Mapped[int] = mapped_column(Integer, default=0)  # bumps after a revision/regeneration
    dimension: Mapped[str] = mapped_column(String(40))  # RUBRIC_DIMENSIONS
    score: Mapped[int] = mapped_column(Integer)  # 0..2
    phase: Mapped[str] = mapped_column(String(20), default="panel")  # review | panel
    revision_hash: Mapped[str | None] = mapped_column(String(64))  # the revision scored (content_hash)
    standard_version: Mapped[str | None] = mapped_column(String(40))  # annotation standard of the anchors
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class RevisionRow(Base):
    """An edit of question / options / answer / cot (who, when, diff)."""

    __tablename__ = "revisions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    item_id: Mapped[str] = mapped_column(ForeignKey("items.id"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    field: Mapped[str] = mapped_column(String(20))  # "question" | "options" | "answer" | "cot"
    kind: Mapped[str] = mapped_column(String(20), default="edit")  # "edit" | "regenerated"
    old: Mapped[Any] = mapped_column(JSON)
    new: Mapped[Any] = mapped_column(JSON)
    diff: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DecisionRow(Base):
    """Panel actions and consensus outcomes. The latest row per item is its current decision."""

    __tablename__ = "decisions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    item_id: Mapped[str] = mapped_column(ForeignKey("items.id"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    # "accept" | "revise" | "regenerate" | "discard" (panel actions);
    # "approved" | "adjudication" | "removed" (consensus outcomes)
    kind: Mapped[str] = mapped_column(String(30))
    human_approvals: Mapped[int] = mapped_column(Integer, default=0)
    automated_approvals: Mapped[int] = mapped_column(Integer, default=0)
    expert_validated: Mapped[bool] = mapped_column(Boolean, default=False)  # >= 2 HUMAN approvals
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

"""SQLAlchemy tables of the store. Other modules (expansion, review ...) add theirs to the same Base."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class ItemRow(Base):
    __tablename__ = "items"
    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    family_id: Mapped[str] = mapped_column(String(200), index=True)
    parent_id: Mapped[str | None] = mapped_column(String(200))
    origin: Mapped[str] = mapped_column(String(20))
    aspect: Mapped[str | None] = mapped_column(String(60))
    language: Mapped[str] = mapped_column(String(8))
    question: Mapped[str] = mapped_column(Text)
    options: Mapped[dict[str, Any]] = mapped_column(JSON)
    answer: Mapped[str] = mapped_column(String(1))
    subject: Mapped[str | None] = mapped_column(String(200))
    specialty: Mapped[str | None] = mapped_column(String(80))
    explanation: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str] = mapped_column(Text, default="")
    licence: Mapped[str | None] = mapped_column(String(80))
    stage: Mapped[str] = mapped_column(String(40), index=True)
    norm_question: Mapped[str] = mapped_column(Text, index=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class CallRow(Base):
    __tablename__ = "llm_calls"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    cache_key: Mapped[str] = mapped_column(String(64), unique=True)
    stage: Mapped[str] = mapped_column(String(40), index=True)
    item_id: Mapped[str | None] = mapped_column(String(200), index=True)
    model: Mapped[str] = mapped_column(String(200))
    endpoint: Mapped[str] = mapped_column(String(300))
    messages: Mapped[list[Any]] = mapped_column(JSON)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    response_format: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    prompt_version: Mapped[str] = mapped_column(String(80))
    content: Mapped[str] = mapped_column(Text)
    reasoning: Mapped[str | None] = mapped_column(Text)
    finish_reason: Mapped[str | None] = mapped_column(String(40))
    parsed: Mapped[Any] = mapped_column(JSON, nullable=True)
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    latency_s: Mapped[float] = mapped_column(Float)
    retries: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class GenerationRow(Base):
    __tablename__ = "generations"
    __table_args__ = (UniqueConstraint("item_id", "purpose", "revision", name="uq_generation"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    item_id: Mapped[str] = mapped_column(ForeignKey("items.id"), index=True)
    call_id: Mapped[int | None] = mapped_column(ForeignKey("llm_calls.id"))
    purpose: Mapped[str] = mapped_column(String(20))
    revision: Mapped[int] = mapped_column(Integer, default=0)
    prompt_version: Mapped[str] = mapped_column(String(80))
    cot: Mapped[str] = mapped_column(Text)
    reasoning: Mapped[str | None] = mapped_column(Text)
    answer: Mapped[str | None] = mapped_column(String(1))
    matched_by: Mapped[str] = mapped_column(String(60))
    option_explanations: Mapped[dict[str, Any]] = mapped_column(JSON)
    agrees_with_key: Mapped[bool | None] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class EventRow(Base):
    """Append-only: rows are inserted, never updated or deleted."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_item_kind", "item_id", "kind"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    item_id: Mapped[str | None] = mapped_column(String(200))
    stage: Mapped[str] = mapped_column(String(40))
    kind: Mapped[str] = mapped_column(String(60))
    actor: Mapped[str] = mapped_column(String(200))
    actor_kind: Mapped[str] = mapped_column(String(20))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class CandidateRow(Base):
    """An expansion candidate that was REJECTED by a check (accepted ones become items)."""

    __tablename__ = "candidates"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    family_id: Mapped[str] = mapped_column(String(200), index=True)
    parent_id: Mapped[str] = mapped_column(String(200))
    aspect: Mapped[str | None] = mapped_column(String(60))
    call_id: Mapped[int | None] = mapped_column(ForeignKey("llm_calls.id"))
    slot: Mapped[int] = mapped_column(Integer, default=0)  # which of the factor's candidates this was
    check: Mapped[str] = mapped_column(String(40))  # "json" | "structure" | "near_duplicate" | ...
    reason: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)  # what the model produced (or raw text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AttemptRow(Base):
    """One five-strike attempt: the question answered again WITHOUT explanation."""

    __tablename__ = "attempts"
    __table_args__ = (UniqueConstraint("item_id", "round", "attempt_no", name="uq_attempt"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    item_id: Mapped[str] = mapped_column(ForeignKey("items.id"), index=True)
    round: Mapped[int] = mapped_column(Integer, default=0)  # > 0 when re-run after an edit
    attempt_no: Mapped[int] = mapped_column(Integer)  # 1..5
    template: Mapped[str] = mapped_column(String(80))  # prompt tag of the template used
    permutation: Mapped[list[Any]] = mapped_column(JSON)  # shown letter i -> original letter permutation[i]
    seed: Mapped[int | None] = mapped_column(Integer)
    call_id: Mapped[int | None] = mapped_column(ForeignKey("llm_calls.id"))
    raw: Mapped[str] = mapped_column(Text)
    reasoning: Mapped[str | None] = mapped_column(Text)
    shown_letter: Mapped[str | None] = mapped_column(String(1))  # extracted, in the shown order
    letter: Mapped[str | None] = mapped_column(String(1))  # mapped back to the original order
    matched_by: Mapped[str] = mapped_column(String(60))
    correct: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

"""Typed records that flow between stages. Each is defined once and used everywhere."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

LETTERS = "ABCDE"
LANGUAGES = ("zh", "en")


@dataclass(slots=True)
class Seed:
    """One seed question, in the schema of shared/data (plus an optional licence)."""

    id: str
    question: str
    options: dict[str, str]
    answer: str
    language: str
    subject: str | None = None
    explanation: str | None = None
    source: str = ""
    licence: str | None = None


@dataclass(slots=True)
class Item:
    """A question in the store: a seed or an item derived from one (same family)."""

    id: str
    family_id: str
    language: str
    question: str
    options: dict[str, str]
    answer: str
    origin: str = "seed"  # "seed" | "expanded"
    parent_id: str | None = None
    aspect: str | None = None
    subject: str | None = None
    specialty: str | None = None
    explanation: str | None = None
    source: str = ""
    licence: str | None = None
    stage: str = "imported"

    @classmethod
    def from_seed(cls, seed: Seed) -> Item:
        return cls(id=seed.id, family_id=seed.id, language=seed.language, question=seed.question,
                   options=dict(seed.options), answer=seed.answer, subject=seed.subject,
                   explanation=seed.explanation, source=seed.source, licence=seed.licence)


@dataclass(slots=True)
class ChatRequest:
    """One chat completion to make (or to find in the cache)."""

    messages: list[dict[str, str]]
    model: str
    params: dict[str, Any] = field(default_factory=dict)  # temperature, top_p, max_tokens, seed, n ...
    prompt_version: str = ""
    stage: str = ""
    item_id: str | None = None
    response_format: dict[str, Any] | None = None  # OpenAI response_format (json_schema ...)


@dataclass(slots=True)
class ChatResult:
    """What came back: content and reasoning (from any of the places a server puts it)."""

    content: str
    reasoning: str | None
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    call_id: int | None = None
    cached: bool = False
    cache_key: str = ""
    endpoint: str = ""


@dataclass(slots=True)
class CallRecord:
    """A stored LLM call: the cache entry and the trace of one request."""

    cache_key: str
    stage: str
    item_id: str | None
    model: str
    endpoint: str
    messages: list[dict[str, str]]
    params: dict[str, Any]
    response_format: dict[str, Any] | None
    prompt_version: str
    content: str
    reasoning: str | None
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    retries: int = 0
    parsed: Any = None


@dataclass(slots=True)
class Generation:
    """A chain of thought for one item, parsed."""

    item_id: str
    call_id: int | None
    prompt_version: str
    cot: str
    reasoning: str | None
    answer: str | None  # None = no answer (never guessed)
    matched_by: str
    option_explanations: dict[str, str]
    agrees_with_key: bool | None
    purpose: str = "initial"  # "initial" | "regenerated"
    revision: int = 0


@dataclass(slots=True)
class Event:
    """An append-only state change."""

    kind: str
    item_id: str | None = None
    stage: str = ""
    actor: str = "system"
    actor_kind: str = "system"  # "system" | "llm" | "human" | "demo"
    payload: dict[str, Any] = field(default_factory=dict)


# Values of an item's `stage` (items.stage), in pipeline order (paper sections in brackets):
ITEM_STAGES = (
    "imported",        # seed stored [2.1]
    "generated",       # has its initial CoT [2.2] (expanded items too)
    "reviewed",        # initial review complete by >= N reviewers [2.3.1]
    "strikes_passed",  # answered correctly within five strikes [2.3.2]
    "escalated",       # failed five strikes: goes to the panel [2.3.3]
    "panel_done",      # panel scored / accepted / revised / regenerated [2.3.4]
    "adjudication",    # reviewers disagree: awaits an admin or a third expert [2.3.5]
    "restrike",        # question, options or key repaired: five-strike again, then the panel [2.3.3-2.3.4]
    "approved",        # consensus reached [2.3.5]
    "removed",         # discarded, or no consensus [2.3.5]
)


# Records of the expansion and five-strike stages, defined here because the store reads and writes them.
@dataclass(slots=True)
class Candidate:
    """One expansion candidate as checked. `check` is "" when accepted, else the failed check."""

    family_id: str
    parent_id: str
    slot: int  # -1: the family's facts extraction itself failed
    aspect: str | None
    call_id: int | None
    check: str  # "" | "facts_json" | "facts_missing_key" | "json" | "missing_key" | "structure" | "copy" | "near_duplicate"
    reason: str
    payload: dict[str, Any]


@dataclass(slots=True)
class Attempt:
    """One attempt (the `attempts` table), plus the token counts of its call."""

    item_id: str
    round: int
    attempt_no: int
    template: str  # prompt tag, e.g. "strike_direct@1"
    permutation: list[str]  # shown letter i -> original letter permutation[i]
    seed: int | None
    call_id: int | None
    raw: str
    reasoning: str | None
    shown_letter: str | None
    letter: str | None  # in the original order; None = no answer
    matched_by: str
    correct: bool
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

"""A synthetic store for the builder's tests and benchmark: N items in seed families (a seed and its
expansions), realistic text lengths (zh ~1 char/token, en words), initial CoTs with final-answer lines,
five-strike attempts, two blind reviews per item with rubric scores, difficulty and cognitive level, panel
rounds with repairs (regenerated CoT, edited question), revisions and decisions.

Every store it makes satisfies THE invariant (`curation.review.invariant`): each approved item carries blind
approvals of its final revision (content hash) by two distinct raters, with answers equal to the key and rubric
scores compatible with the default rubric policy; a repaired item is approved by panelists who did not edit it.
Everything is inserted with plain SQLAlchemy Core into the real tables, deterministically from `seed`.
`reviewers="human"` makes expert-validated approvals; `"llm"` makes automated ones (expert_validated False).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert

from medcot.db import AttemptRow, CallRow, CandidateRow, EventRow, GenerationRow, ItemRow
from medcot.review_tables import (
    COGNITIVE_LEVELS,
    DIFFICULTIES,
    RUBRIC_DIMENSIONS,
    DecisionRow,
    ReviewRow,
    RevisionRow,
    RubricScoreRow,
    UserRow,
)
from medcot.revision import content_hash
from medcot.store import Store, normalize_text

LETTERS = "ABCDE"
SPECIALTIES = ("internal_medicine/cardiology", "internal_medicine/respiratory", "surgery", "pediatrics",
               "obstetrics_gynecology", "neurology", "traditional_chinese_medicine", "emergency_critical_care", None)
ASPECTS = ("contraindication", "mechanism", "diagnosis", "next_step", "indication")
SOURCES = {"zh": ("kyre-99/CMExam-Dataset@303a45e data/val.csv", "Apache-2.0"),
           "en": ("openlifescienceai/medmcqa@2f3e1b7 dev.json", "MIT")}
_T0 = datetime(2026, 1, 1, tzinfo=UTC)
STANDARD = "annotation@1"
REVIEWERS = (1, 2, 3, 4)
PANELISTS = (5, 6, 7)


@dataclass
class SyntheticSpec:
    items: int = 100
    family_size: int = 10          # 1 seed + expansions
    reviewed: float = 1.0          # share of items that went through review, five-strike and consensus
    escalate: float = 0.1          # share of reviewed items failing five-strike (-> panel)
    removed: float = 0.05          # share of reviewed items whose consensus is "removed"
    reviewers: str = "human"       # human | llm
    zh_share: float = 0.67
    seed: int = 0


class _Text:
    """Fast random text: zh from CJK code points, en from a fixed random vocabulary."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.vocab = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 11))) for _ in range(20000)]
        self.hanzi = [chr(c) for c in range(0x4E00, 0x4E00 + 6000)]

    def zh(self, n: int) -> str:
        return "".join(self.rng.choices(self.hanzi, k=n))

    def en(self, n_words: int) -> str:
        return " ".join(self.rng.choices(self.vocab, k=n_words)).capitalize() + "."

    def text(self, lang: str, zh_chars: int, en_words: int) -> str:
        return self.zh(zh_chars) if lang == "zh" else self.en(en_words)


def make_store(url: str, spec: SyntheticSpec) -> Store:
    """Create (or add to) the store at `url` with spec.items synthetic items; returns the Store."""
    store = Store(url)
    rows = _Rows(spec)
    rows.fill()
    with store.transaction() as conn:
        for table, data in rows.tables():
            if data:
                conn.execute(insert(table), data)
    return store


class _Rows:
    def __init__(self, spec: SyntheticSpec):
        self.spec = spec
        self.rng = random.Random(spec.seed)
        self.txt = _Text(self.rng)
        self.users = [{"id": i + 1, "name": f"{spec.reviewers}-reviewer-{i + 1}", "role": "panelist" if i >= 4 else "reviewer",
                       "kind": spec.reviewers} for i in range(7)]
        self.items: list[dict[str, Any]] = []
        self.calls: list[dict[str, Any]] = []
        self.gens: list[dict[str, Any]] = []
        self.attempts: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.reviews: list[dict[str, Any]] = []
        self.rubric: list[dict[str, Any]] = []
        self.revisions: list[dict[str, Any]] = []
        self.decisions: list[dict[str, Any]] = []
        self.candidates: list[dict[str, Any]] = []

    def tables(self) -> list[tuple[Any, list[dict[str, Any]]]]:
        return [(UserRow, self.users), (ItemRow, self.items), (CallRow, self.calls), (GenerationRow, self.gens),
                (AttemptRow, self.attempts), (EventRow, self.events), (ReviewRow, self.reviews),
                (RubricScoreRow, self.rubric), (RevisionRow, self.revisions), (DecisionRow, self.decisions),
                (CandidateRow, self.candidates)]

    def fill(self) -> None:
        n_fam = max(1, -(-self.spec.items // self.spec.family_size))
        made = 0
        for f in range(n_fam):
            lang = "zh" if self.rng.random() < self.spec.zh_share else "en"
            fam = f"{'cmexam' if lang == 'zh' else 'medmcqa'}-{self.spec.seed}-{f}"
            for k in range(min(self.spec.family_size, self.spec.items - made)):
                self.item(fam, k, lang)
                made += 1
            self.candidates.append({"family_id": fam, "parent_id": fam, "aspect": "mechanism", "slot": 0,
                                    "check": "near_duplicate", "reason": "too similar to an existing item",
                                    "payload": {}})

    def item(self, fam: str, k: int, lang: str) -> None:
        r, t = self.rng, self.txt
        iid = fam if k == 0 else f"{fam}-x{k}"
        n_opt = 5 if lang == "zh" and r.random() < 0.7 else 4
        options = {LETTERS[i]: t.text(lang, r.randint(4, 14), r.randint(1, 6)) for i in range(n_opt)}
        answer = r.choice(LETTERS[:n_opt])
        source, licence = SOURCES[lang]
        self.items.append({"id": iid, "family_id": fam, "parent_id": None if k == 0 else fam,
                           "origin": "seed" if k == 0 else "expanded", "aspect": None if k == 0 else r.choice(ASPECTS),
                           "language": lang, "question": t.text(lang, r.randint(40, 160), r.randint(30, 110)),
                           "options": options, "answer": answer, "subject": None, "specialty": r.choice(SPECIALTIES),
                           "explanation": None, "source": source, "licence": licence, "stage": "generated",
                           "norm_question": "", "created_at": _T0})
        self.items[-1]["norm_question"] = normalize_text(self.items[-1]["question"])
        self.generation(iid, lang, answer, options, "initial", 0)
        if r.random() < self.spec.reviewed:
            self.review_path(self.items[-1])

    def call(self, iid: str, prompt_version: str, model: str = "deepseek-r1") -> int:
        cid = len(self.calls) + 1
        self.calls.append({"id": cid, "cache_key": f"k{cid}", "stage": prompt_version.split("@")[0], "item_id": iid,
                           "model": model, "endpoint": "http://127.0.0.1:8000/v1", "messages": [], "params": {},
                           "response_format": None, "prompt_version": prompt_version, "content": "",
                           "reasoning": None, "finish_reason": "stop", "parsed": None, "prompt_tokens": 300,
                           "completion_tokens": 700, "latency_s": 1.0, "retries": 0, "created_at": _T0})
        return cid

    def generation(self, iid: str, lang: str, answer: str, options: dict[str, str], purpose: str, revision: int,
                   user_edit: bool = False) -> None:
        r, t = self.rng, self.txt
        lines = [t.text(lang, r.randint(150, 300), r.randint(80, 160))]
        lines += [f"{k}. {t.text(lang, r.randint(40, 90), r.randint(25, 55))}" for k in options]
        cot_answer = answer if r.random() < 0.9 else r.choice(list(options))
        lines.append(f"答案：{cot_answer}" if lang == "zh" else f"Answer: {cot_answer}")
        version = "human-edit" if user_edit else "cot@1+extract@1"
        self.gens.append({"item_id": iid, "call_id": None if user_edit else self.call(iid, version),
                          "purpose": purpose, "revision": revision, "prompt_version": version, "cot": "\n".join(lines),
                          "reasoning": None, "answer": cot_answer, "matched_by": "final_line",
                          "option_explanations": {}, "agrees_with_key": cot_answer == answer,
                          "created_at": _T0 + timedelta(seconds=revision)})

    def cot_of(self, iid: str) -> str:
        return next(g["cot"] for g in reversed(self.gens) if g["item_id"] == iid)

    def revision(self, item: dict[str, Any]) -> str:
        return content_hash(item["question"], item["options"], item["answer"], self.cot_of(item["id"]))

    def scores(self, approve: bool) -> dict[str, int]:
        """Rubric scores: an approval's are compatible with the default policy (no 0, medical correctness 2)."""
        r = self.rng
        if approve:
            return {d: 2 if d == "medical_correctness" else r.choice((1, 2, 2)) for d in RUBRIC_DIMENSIONS}
        return {d: r.choice((0, 1, 1, 2)) for d in RUBRIC_DIMENSIONS}

    def add_scores(self, iid: str, uid: int, phase: str, rnd: int, revision: str, scores: dict[str, int]) -> None:
        self.rubric += [{"item_id": iid, "user_id": uid, "round": rnd, "dimension": d, "score": v, "phase": phase,
                         "revision_hash": revision, "standard_version": STANDARD, "created_at": _T0}
                        for d, v in scores.items()]

    def review_path(self, item: dict[str, Any]) -> None:
        r, iid = self.rng, item["id"]
        base = self.revision(item)
        approvals = []
        for uid in r.sample(REVIEWERS, 2):
            ok = r.random() < 0.92
            approvals.append(ok)
            self.reviews.append({"item_id": iid, "user_id": uid, "phase": "review", "relevance": 1,
                                 "correctness": int(ok), "sufficiency": int(ok or r.random() < 0.5),
                                 "answer": item["answer"], "approve": ok, "comment": "", "revision_hash": base,
                                 "blind": True, "proposal": None, "difficulty": r.choice(DIFFICULTIES),
                                 "cognitive_level": r.choice(COGNITIVE_LEVELS), "standard_version": STANDARD,
                                 "created_at": _T0})
            self.add_scores(iid, uid, "review", 0, base, self.scores(ok))
        escalated = r.random() < self.spec.escalate
        self.strikes(item, escalated)
        if escalated or not all(approvals):  # a five-strike failure, or a rejection: the panel judges it
            self.panel(item)
        kind = "removed" if r.random() < self.spec.removed else "approved"
        human = self.spec.reviewers == "human"
        self.decisions.append({"item_id": iid, "user_id": None, "kind": kind,
                               "human_approvals": 2 if kind == "approved" and human else 0,
                               "automated_approvals": 2 if kind == "approved" and not human else 0,
                               "expert_validated": kind == "approved" and human, "details": {}, "created_at": _T0})
        item["stage"] = kind

    def strikes(self, item: dict[str, Any], escalated: bool) -> None:
        r, iid = self.rng, item["id"]
        n = 5 if escalated else r.choice((1, 1, 1, 1, 2, 2, 3, 4, 5))
        for a in range(1, n + 1):
            correct = not escalated and a == n
            letter = item["answer"] if correct else r.choice([k for k in item["options"] if k != item["answer"]])
            self.attempts.append({"item_id": iid, "round": 0, "attempt_no": a, "template": "strike_direct@1",
                                  "permutation": list(item["options"]), "seed": a,
                                  "call_id": self.call(iid, "strike_direct@1+extract@1"), "raw": f"Answer: {letter}",
                                  "reasoning": None, "shown_letter": letter, "letter": letter, "matched_by": "final_line",
                                  "correct": correct, "created_at": _T0})
        kind = "escalated" if escalated else "strikes_passed"
        self.events.append({"item_id": iid, "stage": "strikes", "kind": kind, "actor": "llm", "actor_kind": "llm",
                            "payload": {"attempts": n}, "created_at": _T0})

    def panel_vote(self, item: dict[str, Any], uid: int, rnd: int, action: str, approve: bool) -> None:
        revision = self.revision(item)
        scores = self.scores(approve)
        self.add_scores(item["id"], uid, "panel", rnd, revision, scores)
        r = self.rng
        self.decisions.append({"item_id": item["id"], "user_id": uid, "kind": action, "human_approvals": 0,
                               "automated_approvals": 0, "expert_validated": False, "created_at": _T0,
                               "details": {"round": rnd, "answer": item["answer"], "scores": scores,
                                           "revision_hash": revision, "blind": True, "proposal": action == "revise",
                                           "difficulty": r.choice(DIFFICULTIES),
                                           "cognitive_level": r.choice(COGNITIVE_LEVELS),
                                           "standard_version": STANDARD}})

    def panel(self, item: dict[str, Any]) -> None:
        """Round 0 on the text as reviewed; half the items get a regenerated CoT and 30% an edited question
        (by panelist 5), and then a fresh round on the repaired revision by panelists who did not edit it."""
        r, iid = self.rng, item["id"]
        regenerate, edit = r.random() < 0.5, r.random() < 0.3
        if not regenerate and not edit:
            for uid in PANELISTS[:2]:
                self.panel_vote(item, uid, 0, "accept", True)
            return
        self.panel_vote(item, PANELISTS[0], 0, "revise" if edit else "regenerate", False)
        self.panel_vote(item, PANELISTS[1], 0, "regenerate" if regenerate else "accept", not regenerate)
        changes = 0
        if regenerate:
            old = self.cot_of(iid)
            self.generation(iid, item["language"], item["answer"], item["options"], "regenerated", 1)
            self.revisions.append({"item_id": iid, "user_id": None, "field": "cot", "kind": "regenerated",
                                   "old": old, "new": self.gens[-1]["cot"], "diff": "", "created_at": _T0})
            changes += 1
        if edit:
            new_q = item["question"] + (" 请选择最佳答案。" if item["language"] == "zh" else " Choose the best answer.")
            self.revisions.append({"item_id": iid, "user_id": PANELISTS[0], "field": "question", "kind": "edit",
                                   "old": item["question"], "new": new_q, "diff": "", "created_at": _T0})
            item["question"], item["norm_question"] = new_q, normalize_text(new_q)
            changes += 1
        for uid in PANELISTS[1:]:
            self.panel_vote(item, uid, changes, "accept", True)

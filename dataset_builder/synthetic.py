"""A synthetic store for the builder's tests and benchmark: N items in seed families (a seed and its
expansions), realistic text lengths (zh ~1 char/token, en words), initial CoTs with final-answer lines,
five-strike attempts, two blind reviews per item, panel rubric scores, revisions and decisions.

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
from medcot.review_tables import RUBRIC_DIMENSIONS, DecisionRow, ReviewRow, RevisionRow, RubricScoreRow, UserRow
from medcot.store import Store, normalize_text

LETTERS = "ABCDE"
SPECIALTIES = ("internal_medicine/cardiology", "internal_medicine/respiratory", "surgery", "pediatrics",
               "obstetrics_gynecology", "neurology", "traditional_chinese_medicine", "emergency_critical_care", None)
ASPECTS = ("contraindication", "mechanism", "diagnosis", "next_step", "indication")
SOURCES = {"zh": ("kyre-99/CMExam-Dataset@303a45e data/val.csv", "Apache-2.0"),
           "en": ("openlifescienceai/medmcqa@2f3e1b7 dev.json", "MIT")}
_T0 = datetime(2026, 1, 1, tzinfo=UTC)


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
                       "kind": spec.reviewers} for i in range(6)]
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

    def review_path(self, item: dict[str, Any]) -> None:
        r, iid = self.rng, item["id"]
        for uid in r.sample(range(1, 5), 2):
            ok = r.random() < 0.92
            self.reviews.append({"item_id": iid, "user_id": uid, "phase": "review", "relevance": 1,
                                 "correctness": int(ok), "sufficiency": int(ok or r.random() < 0.5),
                                 "answer": item["answer"], "approve": ok, "comment": "", "created_at": _T0})
        escalated = r.random() < self.spec.escalate
        self.strikes(item, escalated)
        if escalated:
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

    def panel(self, item: dict[str, Any]) -> None:
        r, iid = self.rng, item["id"]
        rounds = 2 if r.random() < 0.5 else 1
        for rnd in range(rounds):
            for uid in (5, 6):
                for dim in RUBRIC_DIMENSIONS:
                    self.rubric.append({"item_id": iid, "user_id": uid, "round": rnd, "dimension": dim,
                                        "score": r.choice((0, 1, 1, 2)) if rnd == 0 else r.choice((1, 2, 2)),
                                        "created_at": _T0})
        action = "regenerate" if rounds == 2 else "accept"
        for uid in (5, 6):
            self.decisions.append({"item_id": iid, "user_id": uid, "kind": action, "human_approvals": 0,
                                   "automated_approvals": 0, "expert_validated": False, "details": {},
                                   "created_at": _T0})
        if rounds == 2:
            self.generation(iid, item["language"], item["answer"], item["options"], "regenerated", 1)
            self.revisions.append({"item_id": iid, "user_id": None, "field": "cot", "kind": "regenerated",
                                   "old": "", "new": self.gens[-1]["cot"], "diff": "", "created_at": _T0})
        if r.random() < 0.3:
            new_q = item["question"] + (" 请选择最佳答案。" if item["language"] == "zh" else " Choose the best answer.")
            self.revisions.append({"item_id": iid, "user_id": 5, "field": "question", "kind": "edit",
                                   "old": item["question"], "new": new_q, "diff": "", "created_at": _T0})
            item["question"], item["norm_question"] = new_q, normalize_text(new_q)

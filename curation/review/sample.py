"""Sample review material for the tests and the load benchmark: items with a stored initial CoT (stage
"generated"), five-strike attempts for escalated items, and user accounts. Everything goes through the
store's normal writers; nothing here is used by the pipeline itself."""
from __future__ import annotations

from sqlalchemy import insert, update

from curation.review.auth import create_user, hash_password
from curation.review.records import User
from medcot.db import AttemptRow, ItemRow
from medcot.extract import extract_answer
from medcot.records import Event, Generation, Item
from medcot.store import Store

OPTIONS = {"A": "Adrenaline", "B": "Vasopressin", "C": "Atropine", "D": "Amiodarone"}


def sample_cot(letter: str, extra: str = "") -> str:
    return ("The question asks which drug is no longer used in pulseless arrest.\n"
            "A. Adrenaline: used, incorrect.\nB. Vasopressin: used, incorrect.\n"
            "C. Atropine: removed from the algorithm, correct.\nD. Amiodarone: used, incorrect.\n"
            f"{extra}\nAnswer: {letter}")


def add_items(store: Store, n: int, prefix: str = "q", cot_extra: str = "", key: str = "C",
              options: dict[str, str] | None = None) -> list[str]:
    """n items at stage "generated" with an initial CoT answering `key`."""
    items = [Item(id=f"{prefix}{i:04d}", family_id=f"{prefix}{i:04d}", language="en",
                  question=f"({prefix}{i}) Which drug is not used in pulseless arrest (AHA 2010)?",
                  options=dict(options or OPTIONS), answer=key, source="sample") for i in range(n)]
    store.add_items(items)
    for it in items:
        text = sample_cot(key, cot_extra)
        found = extract_answer(text, it.options)
        store.save_generation(Generation(item_id=it.id, call_id=None, prompt_version="sample", cot=text,
                                         reasoning=None, answer=found.letter, matched_by=found.matched_by,
                                         option_explanations={}, agrees_with_key=found.letter == key))
    return [it.id for it in items]


def set_stage(store: Store, item_id: str, stage: str, note: str = "sample") -> None:
    with store.transaction() as conn:
        conn.execute(update(ItemRow).where(ItemRow.id == item_id).values(stage=stage))
        store.log_event(Event(kind=stage, item_id=item_id, stage="strikes", payload={"note": note}), conn)


def fail_five_strikes(store: Store, item_id: str, wrong: str = "A") -> None:
    """Record five failed re-answering attempts and escalate the item (what the five-strike stage does)."""
    with store.transaction() as conn:
        conn.execute(insert(AttemptRow), [{
            "item_id": item_id, "round": 0, "attempt_no": k, "template": f"strike_{k}",
            "permutation": ["A", "B", "C", "D"][k % 4:] + ["A", "B", "C", "D"][:k % 4], "seed": k,
            "call_id": None, "raw": f"Attempt {k}: I think it is {wrong}. Answer: {wrong}",
            "reasoning": f"reasoning of attempt {k}", "shown_letter": wrong, "letter": wrong,
            "matched_by": "sample", "correct": False} for k in range(1, 6)])
    set_stage(store, item_id, "escalated", "failed five strikes")


def add_users(store: Store, password: str, reviewers: int = 2, panelists: int = 2, admins: int = 1,
              stems: tuple[str, str, str] = ("rev", "pan", "admin")) -> dict[str, User]:
    """Accounts rev1.., pan1.., admin1.. sharing one password (hashed once: argon2 costs ~0.3 s a hash)."""
    pw_hash = hash_password(password)
    users = {}
    for role, n, stem in (("reviewer", reviewers, stems[0]), ("panelist", panelists, stems[1]),
                          ("admin", admins, stems[2])):
        for i in range(1, n + 1):
            u = create_user(store, f"{stem}{i}", role, None, password_hash=pw_hash)
            users[u.name] = u
    return users


ALL2 = {d: 2 for d in ("medical_correctness", "reasoning_structure", "information_sufficiency",
                       "terminology_clarity", "clinical_utility")}


class ScriptedJudge:
    """A responder for medcot.scripted_server.ScriptedServer that plays the LLM judge and the regenerating
    model in tests: `review(persona, user_text)` / `panel(persona, user_text)` return the judgement dicts
    (override them per test), anything without a response_format is a CoT answering `cot_letter`."""

    def __init__(self, cot_letter: str = "C"):
        self.cot_letter = cot_letter
        self.calls: list[str] = []

    @staticmethod
    def key(user_text: str) -> str:
        import re
        m = re.search(r"(?:Answer key|标准答案)[:：]\s*([A-E])", user_text)
        return m.group(1) if m else "A"

    LABELS = {"difficulty": "moderate", "cognitive_level": "interpretation"}

    def review(self, persona: str, user_text: str) -> dict:
        return {"relevance": 1, "correctness": 1, "sufficiency": 1, "answer": self.key(user_text), "approve": True,
                "comment": f"fine ({persona})"} | ALL2 | self.LABELS

    def panel(self, persona: str, user_text: str) -> dict:
        return ALL2 | self.LABELS | {"action": "accept", "answer": self.key(user_text), "feedback": ""}

    def __call__(self, body: dict) -> str:
        import json
        import re
        messages = body.get("messages") or []
        system = next((m["content"] for m in messages if m["role"] == "system"), "")
        user = messages[-1]["content"] if messages else ""
        m = re.search(r"(?:codename|代号)\s*([\w:-]+)", system)
        persona = m.group(1) if m else "?"
        name = ((body.get("response_format") or {}).get("json_schema") or {}).get("name")
        self.calls.append(name or "cot")
        if name == "review_judge":
            return json.dumps(self.review(persona, user))
        if name == "panel_judge":
            return json.dumps(self.panel(persona, user))
        return sample_cot(self.cot_letter, "Revised following the experts' feedback.")

"""What the card and the build summary report: the pipeline funnel with counts at each step (like the
paper's section 3.2), what is absent from the store, seed sources and licences, reviewer kinds, agreement."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from dataset_builder.figures import UNASSIGNED
from dataset_builder.rows import PANEL_ACTIONS, RowMaker, RowSets
from dataset_builder.snapshot import Snapshot


@dataclass(frozen=True, slots=True)
class Step:
    label: str
    count: int
    note: str = ""


@dataclass
class ReleaseStats:
    steps: list[Step] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)
    rejected_by_check: dict[str, int] = field(default_factory=dict)
    top_rejection_reasons: list[tuple[str, str, int]] = field(default_factory=list)
    sources: list[tuple[str, str, str, int]] = field(default_factory=list)  # (source, licence, language, items)
    reviewer_kinds: dict[str, int] = field(default_factory=dict)         # kind -> users who acted
    judgements_by_kind: dict[str, int] = field(default_factory=dict)     # kind -> reviews + rubric rounds
    first_correct: dict[int, int] = field(default_factory=dict)          # attempt -> items
    decisions: dict[str, int] = field(default_factory=dict)              # current decision kind -> items
    excluded: dict[str, int] = field(default_factory=dict)
    specialties: dict[str, int] = field(default_factory=dict)
    languages: dict[str, int] = field(default_factory=dict)
    cot_key_disagreements: dict[str, int] = field(default_factory=dict)  # config -> rows whose CoT answer != key


def pct(n: int, d: int) -> str:
    return f"{100 * n / d:.1f}%" if d else "n/a"


def compute_stats(snap: Snapshot, maker: RowMaker, sets: RowSets) -> ReleaseStats:
    st = ReleaseStats()
    _funnel(snap, maker, sets, st)
    _people(snap, st)
    st.sources = _sources(snap)
    st.excluded = dict(sorted(sets.excluded.items()))
    st.specialties = dict(sorted(Counter(it.specialty or UNASSIGNED for it in snap.items).items()))
    st.languages = dict(sorted(Counter(it.language for it in snap.items).items()))
    st.cot_key_disagreements = {c: sum(1 for r in rows if r.cot_answer is not None and r.cot_answer != r.answer)
                                for c, rows in sets.rows.items()}
    st.rejected_by_check = dict(sorted(snap.rejected_candidates.items()))
    st.top_rejection_reasons = [(c, r, n) for (c, r), n in sorted(snap.rejected_reasons.items(),
                                                                   key=lambda kv: (-kv[1], kv[0]))[:10]]
    st.absent = _absent(snap)
    return st


def _funnel(snap: Snapshot, maker: RowMaker, sets: RowSets, st: ReleaseStats) -> None:
    items = snap.items
    seeds = sum(1 for it in items if it.origin == "seed")
    expanded = len(items) - seeds
    rejected = sum(snap.rejected_candidates.values())
    with_cot = [it for it in items if snap.initial_cot(it.id) is not None]
    no_answer = sum(1 for it in with_cot if snap.initial_cot(it.id).answer is None)
    reviewed = sum(1 for it in items if any(r.phase == "review" for r in snap.reviews.get(it.id, ())))
    struck = [it.id for it in items if it.id in snap.attempts]
    firsts = [maker.five_strike(i)["first_correct_attempt"] for i in struck]
    st.first_correct = dict(sorted(Counter(f for f in firsts if f is not None).items()))
    panel = [r.id for r in sets.rows["panel"]]
    status = Counter(maker.revision_status(i) for i in panel)
    panel_removed = sum(1 for i in panel if maker.consensus(i)["outcome"] == "removed"
                        or any(d.kind == "discard" for d in snap.decisions.get(i, ())))
    current = Counter((snap.current_decision(it.id).kind if snap.current_decision(it.id) else "(no decision)")
                      for it in items)
    st.decisions = dict(sorted(current.items()))
    labels = Counter(r.validation for r in sets.rows["validated"])
    st.steps = [
        Step("seed questions imported", seeds),
        Step("expansion candidates generated", expanded + rejected,
             f"{expanded} accepted as items, {rejected} rejected by checks"),
        Step("QA pairs constructed (seeds + expanded)", len(items)),
        Step("with an initial LLM chain of thought", len(with_cot), f"{no_answer} with no parseable final answer"),
        Step("initially reviewed (paper 2.3.1)", reviewed),
        Step("re-answered in five-strike (2.3.2)", len(struck)),
        Step("confirmed: answered correctly within five attempts", sum(1 for f in firsts if f is not None)),
        Step("flagged: failed five-strike (2.3.3)", len(snap.strike_escalated)),
        Step("reviewed by the expert panel (2.3.4)", len(panel),
             f"revised by hand {pct(status['modified'], len(panel))}, regenerated "
             f"{pct(status['regenerated'], len(panel))}, discarded {pct(panel_removed, len(panel))}"),
        Step("approved by consensus (2.3.5)", current.get("approved", 0)),
        Step("removed (discarded or no consensus)", current.get("removed", 0)),
        Step("awaiting adjudication", current.get("adjudication", 0)),
        Step("released as validated", len(sets.rows["validated"]),
             f"{labels.get('expert', 0)} expert-validated, {labels.get('automated', 0)} automated "
             f"(NOT expert-validated)"),
    ]


def _people(snap: Snapshot, st: ReleaseStats) -> None:
    acted: set[int] = set()
    judged: Counter[str] = Counter()
    for rows in snap.reviews.values():
        for r in rows:
            acted.add(r.user_id)
            judged[_kind(snap, r.user_id)] += 1
    # a panel scoring round is a judgement; review-phase rubric scores are part of their review
    rounds = {(r.item_id, r.user_id, r.round) for rows in snap.rubric.values() for r in rows if r.phase != "review"}
    for _, uid, _ in rounds:
        acted.add(uid)
        judged[_kind(snap, uid)] += 1
    acted |= {d.user_id for rows in snap.decisions.values() for d in rows
              if d.user_id is not None and d.kind in PANEL_ACTIONS}
    st.reviewer_kinds = dict(sorted(Counter(_kind(snap, u) for u in acted).items()))
    st.judgements_by_kind = dict(sorted(judged.items()))


def _kind(snap: Snapshot, user_id: int) -> str:
    user = snap.users.get(user_id)
    return user.kind if user is not None else "unknown"


def _sources(snap: Snapshot) -> list[tuple[str, str, str, int]]:
    counts = Counter((_source_name(it.source), it.licence or "(not recorded)", it.language) for it in snap.items
                     if it.origin == "seed")
    return [(s, lic, lang, n) for (s, lic, lang), n in sorted(counts.items())]


def _source_name(source: str) -> str:
    """'owner/repo@commit path' -> 'owner/repo@commit' (the dataset, without the file)."""
    return source.split(" ", 1)[0] if source else "(not recorded)"


def _absent(snap: Snapshot) -> list[str]:
    out = []
    if not any(it.origin != "seed" for it in snap.items) and not snap.rejected_candidates:
        out.append("expansion has not run: no expanded items and no rejected candidates are recorded")
    if not snap.reviews:
        out.append("no reviews recorded: the initial expert review (2.3.1) has not run")
    if not snap.attempts:
        out.append("five-strike re-answering has not run: no attempts recorded")
    if not snap.rubric:
        out.append("no rubric scores recorded: neither the initial review nor the panel (2.3.4) scored any item")
    if not snap.decisions:
        out.append("no consensus decisions recorded: no item is approved, so `validated` is empty")
    if not any(it.specialty for it in snap.items):
        out.append("no specialty labels assigned")
    return out

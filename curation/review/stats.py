"""Review statistics from the store: agreement (Cohen per reviewer pair, Fleiss on the binary review,
Krippendorff's ordinal alpha per rubric dimension), progress per stage and per reviewer, validation counts.
`raters="human"` (default) measures the experts only; `raters="all"` includes automated reviewers."""
from __future__ import annotations

from collections import Counter, defaultdict
from itertools import combinations
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from curation.review.agreement import cohen_kappa, fleiss_from_ratings, krippendorff_alpha
from medcot.db import ItemRow
from medcot.review_tables import (
    BINARY_DIMENSIONS,
    RUBRIC_DIMENSIONS,
    AssignmentRow,
    DecisionRow,
    ReviewRow,
    RubricScoreRow,
    UserRow,
)

REVIEW_FIELDS = BINARY_DIMENSIONS + ("approve",)


def _kinds(raters: str) -> tuple[str, ...]:
    if raters not in ("human", "all"):
        raise ValueError("raters must be human or all")
    return ("human",) if raters == "human" else ("human", "llm", "demo")


def _reviews(conn: Connection, kinds: tuple[str, ...]) -> dict[str, dict[str, dict[str, int]]]:
    """item -> reviewer name -> {relevance, correctness, sufficiency, approve} (initial review only)."""
    out: dict[str, dict[str, dict[str, int]]] = defaultdict(dict)
    rows = conn.execute(select(ReviewRow.item_id, UserRow.name, *(getattr(ReviewRow, f) for f in REVIEW_FIELDS))
                        .join(UserRow, UserRow.id == ReviewRow.user_id)
                        .where(ReviewRow.phase == "review", UserRow.kind.in_(kinds))).mappings()
    for r in rows:
        out[r["item_id"]][r["name"]] = {f: int(r[f]) for f in REVIEW_FIELDS}
    return out


def pair_kappas(by_item: dict[str, dict[str, dict[str, int]]]) -> list[dict[str, Any]]:
    """Cohen's kappa for every reviewer pair with common items: per judgement and pooled over the three."""
    shared: dict[tuple[str, str], list[str]] = defaultdict(list)
    for item, revs in by_item.items():
        for a, b in combinations(sorted(revs), 2):
            shared[(a, b)].append(item)
    out = []
    for (a, b), items in sorted(shared.items()):
        row: dict[str, Any] = {"pair": [a, b], "items": len(items)}
        for f in REVIEW_FIELDS:
            row[f] = cohen_kappa([by_item[i][a][f] for i in items], [by_item[i][b][f] for i in items])
        row["pooled"] = cohen_kappa([by_item[i][a][f] for f in BINARY_DIMENSIONS for i in items],
                                    [by_item[i][b][f] for f in BINARY_DIMENSIONS for i in items])
        out.append(row)
    return out


def fleiss_binary(by_item: dict[str, dict[str, dict[str, int]]]) -> dict[str, Any]:
    """Fleiss' kappa per judgement over the items with the most common number of reviews (>= 2)."""
    sizes = Counter(len(v) for v in by_item.values() if len(v) >= 2)
    if not sizes:
        return {"raters_per_item": None, "items": 0, **{f: None for f in REVIEW_FIELDS}}
    k = max(sizes, key=lambda s: (sizes[s], s))
    items = [v for v in by_item.values() if len(v) == k]
    return {"raters_per_item": k, "items": len(items),
            **{f: fleiss_from_ratings([[r[f] for r in v.values()] for v in items]) for f in REVIEW_FIELDS}}


def rubric_alpha(conn: Connection, kinds: tuple[str, ...]) -> dict[str, Any]:
    """Krippendorff's alpha (ordinal) per rubric dimension; a unit is (item, round)."""
    units: dict[str, dict[tuple[str, int], list[int]]] = {d: defaultdict(list) for d in RUBRIC_DIMENSIONS}
    rows = conn.execute(select(RubricScoreRow.item_id, RubricScoreRow.round, RubricScoreRow.dimension,
                               RubricScoreRow.score).join(UserRow, UserRow.id == RubricScoreRow.user_id)
                        .where(UserRow.kind.in_(kinds)))
    for item_id, rnd, dim, score in rows:
        if dim in units:
            units[dim][(item_id, rnd)].append(score)
    return {d: {"alpha": krippendorff_alpha(list(u.values()), "ordinal"),
                "units": sum(1 for v in u.values() if len(v) >= 2)} for d, u in units.items()}


def progress(conn: Connection) -> dict[str, Any]:
    stages = dict(conn.execute(select(ItemRow.stage, func.count()).group_by(ItemRow.stage)).all())
    per: dict[str, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(lambda: {"assigned": 0, "done": 0}))
    for name, phase, n in conn.execute(select(UserRow.name, AssignmentRow.phase, func.count())
                                       .join(UserRow, UserRow.id == AssignmentRow.user_id)
                                       .group_by(UserRow.name, AssignmentRow.phase)):
        per[name][phase]["assigned"] = n
    for name, phase, n in conn.execute(select(UserRow.name, ReviewRow.phase, func.count())
                                       .join(UserRow, UserRow.id == ReviewRow.user_id)
                                       .group_by(UserRow.name, ReviewRow.phase)):
        per[name][phase]["done"] = n
    for name, n in conn.execute(select(UserRow.name, func.count(func.distinct(RubricScoreRow.item_id)))
                                .join(UserRow, UserRow.id == RubricScoreRow.user_id).group_by(UserRow.name)):
        per[name]["panel"]["done"] = n
    return {"stages": stages, "reviewers": {k: dict(v) for k, v in sorted(per.items())}}


def validation_counts(conn: Connection) -> dict[str, int]:
    rows = conn.execute(select(DecisionRow.expert_validated, func.count()).where(DecisionRow.kind == "approved")
                        .group_by(DecisionRow.expert_validated)).all()
    counts = {bool(k): n for k, n in rows}
    return {"expert_validated": counts.get(True, 0), "automated_only": counts.get(False, 0)}


def collect(conn: Connection, raters: str = "human") -> dict[str, Any]:
    kinds = _kinds(raters)
    by_item = _reviews(conn, kinds)
    return {"raters": raters, "cohen_pairs": pair_kappas(by_item), "fleiss": fleiss_binary(by_item),
            "krippendorff_rubric": rubric_alpha(conn, kinds), "progress": progress(conn),
            "validation": validation_counts(conn)}


def fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def render_text(s: dict[str, Any]) -> str:
    lines = [f"Agreement ({s['raters']} raters)", "", "Cohen's kappa per reviewer pair (initial review):"]
    for p in s["cohen_pairs"]:
        lines.append(f"  {p['pair'][0]} / {p['pair'][1]} ({p['items']} items): pooled {fmt(p['pooled'])}; " +
                     ", ".join(f"{f} {fmt(p[f])}" for f in REVIEW_FIELDS))
    if not s["cohen_pairs"]:
        lines.append("  (no pair of reviewers shares an item yet)")
    fl = s["fleiss"]
    lines += ["", f"Fleiss' kappa ({fl['items']} items with {fl['raters_per_item']} reviews each): " +
              ", ".join(f"{f} {fmt(fl[f])}" for f in REVIEW_FIELDS), "",
              "Krippendorff's alpha (ordinal) per rubric dimension:"]
    for d, v in s["krippendorff_rubric"].items():
        lines.append(f"  {d}: {fmt(v['alpha'])} ({v['units']} units)")
    lines += ["", "Items per stage: " + ", ".join(f"{k} {v}" for k, v in sorted(s["progress"]["stages"].items())),
              "", "Per reviewer (phase: done/assigned):"]
    for name, phases in s["progress"]["reviewers"].items():
        lines.append(f"  {name}: " + ", ".join(f"{ph} {c['done']}/{c['assigned']}" for ph, c in sorted(phases.items())))
    v = s["validation"]
    lines += ["", f"Approved and expert-validated (>= 2 human approvals): {v['expert_validated']}; "
                  f"approved by automated reviewers only (NOT expert-validated): {v['automated_only']}"]
    return "\n".join(lines)

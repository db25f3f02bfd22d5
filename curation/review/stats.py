"""Review statistics from the store: agreement (Cohen per reviewer pair, Fleiss on the binary review,
Krippendorff's ordinal alpha per rubric dimension), progress per stage and per reviewer, validation counts.
`raters="human"` (default) measures the experts only; `raters="all"` includes automated reviewers.

Every coefficient comes with raw percent agreement and Gwet's AC1 beside it and a bootstrap interval over items
(`agreement` section): approval prevalence is high, and kappa alone then looks poor while raters agree (the
kappa paradox). Unequal numbers of raters per item are kept (generalised Fleiss, alpha), and any item that
cannot count (fewer than two ratings) is reported as dropped, never silently."""
from __future__ import annotations

from collections import Counter, defaultdict
from itertools import combinations
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from curation.review.agreement import fleiss_unequal, krippendorff_alpha
from curation.review.agreement_ci import agreement_summaries, cohen_kappa_cis
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


def pair_kappas(by_item: dict[str, dict[str, dict[str, int]]], resamples: int = 1000) -> list[dict[str, Any]]:
    """Cohen's kappa for every reviewer pair with common items: per judgement and pooled over the three, each
    with a bootstrap interval (`ci`)."""
    shared: dict[tuple[str, str], list[str]] = defaultdict(list)
    for item, revs in by_item.items():
        for a, b in combinations(sorted(revs), 2):
            shared[(a, b)].append(item)
    out = []
    for (a, b), items in sorted(shared.items()):
        row: dict[str, Any] = {"pair": [a, b], "items": len(items)}
        # kappa per judgement and pooled over the three binary ones, each with a 95% bootstrap interval over the
        # pair's shared items (pooled: an item's three judgements resampled together); the estimate is the
        # vectorised kappa, equal to `agreement.cohen_kappa` to 1e-12 (tested)
        units = {f: [[(by_item[i][a][f], by_item[i][b][f])] for i in items] for f in REVIEW_FIELDS}
        units["pooled"] = [[(by_item[i][a][f], by_item[i][b][f]) for f in BINARY_DIMENSIONS] for i in items]
        row["ci"] = {f: v.as_dict() for f, v in cohen_kappa_cis(units, resamples).items()}
        row |= {f: row["ci"][f]["estimate"] for f in units}
        out.append(row)
    return out


def fleiss_binary(by_item: dict[str, dict[str, dict[str, int]]]) -> dict[str, Any]:
    """Fleiss' kappa per judgement over every item with >= 2 reviews (generalised to unequal rater counts;
    equal to Fleiss' own formula when the counts are equal); items with one review are counted as dropped."""
    sizes = Counter(len(v) for v in by_item.values() if len(v) >= 2)
    if not sizes:
        return {"raters_per_item": None, "items": 0, "items_dropped": len(by_item), **{f: None for f in REVIEW_FIELDS}}
    raters: int | str = min(sizes) if len(sizes) == 1 else f"{min(sizes)}-{max(sizes)}"
    out: dict[str, Any] = {"raters_per_item": raters}
    for f in REVIEW_FIELDS:
        res = fleiss_unequal([[r[f] for r in v.values()] for v in by_item.values()])
        out[f] = res.value
        out["items"], out["items_dropped"] = res.items_used, res.items_dropped
    return out


def agreement_intervals(by_item: dict[str, dict[str, dict[str, int]]], rubric: dict[str, list[list[int]]],
                        resamples: int = 1000) -> dict[str, Any]:
    """Percent agreement, Fleiss' kappa, Gwet's AC1 and Krippendorff's alpha with 95% bootstrap intervals over
    items: per binary judgement of the initial review (nominal) and per rubric dimension (ordinal)."""
    review = agreement_summaries({f: [[r[f] for r in v.values()] for v in by_item.values()] for f in REVIEW_FIELDS},
                                 categories=(0, 1), resamples=resamples)
    scores = agreement_summaries(rubric, categories=(0, 1, 2), level="ordinal", resamples=resamples)
    return {"review": review, "rubric": scores}


def rubric_alpha(conn: Connection, kinds: tuple[str, ...]) -> dict[str, Any]:
    """Krippendorff's alpha (ordinal) per rubric dimension over every rated item: a unit is one revision of an
    item (its content hash), scored by initial reviewers and panelists alike; alpha handles unequal rater counts."""
    units: dict[str, dict[tuple[str, str], list[int]]] = {d: defaultdict(list) for d in RUBRIC_DIMENSIONS}
    rows = conn.execute(select(RubricScoreRow.item_id, RubricScoreRow.round, RubricScoreRow.revision_hash,
                               RubricScoreRow.dimension, RubricScoreRow.score)
                        .join(UserRow, UserRow.id == RubricScoreRow.user_id).where(UserRow.kind.in_(kinds)))
    for item_id, rnd, revision, dim, score in rows:
        if dim in units:
            units[dim][(item_id, revision or f"round {rnd}")].append(score)
    return {d: {"alpha": krippendorff_alpha(list(u.values()), "ordinal"),
                "units": sum(1 for v in u.values() if len(v) >= 2), "ratings": list(u.values())}
            for d, u in units.items()}


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
                                .join(UserRow, UserRow.id == RubricScoreRow.user_id)
                                .where(RubricScoreRow.phase == "panel").group_by(UserRow.name)):
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
    alpha = rubric_alpha(conn, kinds)
    ratings = {d: v.pop("ratings") for d, v in alpha.items()}
    return {"raters": raters, "cohen_pairs": pair_kappas(by_item), "fleiss": fleiss_binary(by_item),
            "krippendorff_rubric": alpha, "agreement": agreement_intervals(by_item, ratings),
            "progress": progress(conn), "validation": validation_counts(conn)}


def fmt_ci(v: dict[str, Any]) -> str:
    return f"{fmt(v['estimate'])} [{fmt(v['low'])}, {fmt(v['high'])}]"


def fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def render_text(s: dict[str, Any]) -> str:
    lines = [f"Agreement ({s['raters']} raters)", "", "Cohen's kappa per reviewer pair (initial review):"]
    for p in s["cohen_pairs"]:
        lines.append(f"  {p['pair'][0]} / {p['pair'][1]} ({p['items']} items): pooled {fmt_ci(p['ci']['pooled'])}; " +
                     ", ".join(f"{f} {fmt(p[f])}" for f in REVIEW_FIELDS))
    if not s["cohen_pairs"]:
        lines.append("  (no pair of reviewers shares an item yet)")
    fl = s["fleiss"]
    lines += ["", f"Fleiss' kappa ({fl['items']} items with {fl['raters_per_item']} reviews each): " +
              ", ".join(f"{f} {fmt(fl[f])}" for f in REVIEW_FIELDS), "",
              "Krippendorff's alpha (ordinal) per rubric dimension:"]
    for d, v in s["krippendorff_rubric"].items():
        lines.append(f"  {d}: {fmt(v['alpha'])} ({v['units']} units)")
    lines += ["", "With 95% bootstrap intervals over items (percent agreement beside kappa: high prevalence makes "
              "kappa low even when raters agree):"]
    for part, rows in s["agreement"].items():
        for name, a in rows.items():
            lines.append(f"  {part} {name} ({a['n_items_used']} items, {a['items_dropped']} dropped): agreement "
                         f"{fmt_ci(a['percent_agreement'])}, Fleiss {fmt_ci(a['fleiss_kappa'])}, AC1 "
                         f"{fmt_ci(a['gwet_ac1'])}, alpha {fmt_ci(a['krippendorff_alpha'])}")
    lines += ["", "Items per stage: " + ", ".join(f"{k} {v}" for k, v in sorted(s["progress"]["stages"].items())),
              "", "Per reviewer (phase: done/assigned):"]
    for name, phases in s["progress"]["reviewers"].items():
        lines.append(f"  {name}: " + ", ".join(f"{ph} {c['done']}/{c['assigned']}" for ph, c in sorted(phases.items())))
    lines += staffing_lines(s.get("staffing")) + time_lines(s.get("expert_time"))
    v = s["validation"]
    lines += ["", f"Approved and expert-validated (>= 2 human approvals): {v['expert_validated']}; "
                  f"approved by automated reviewers only (NOT expert-validated): {v['automated_only']}"]
    return "\n".join(lines)


def staffing_lines(staff: dict[str, Any] | None) -> list[str]:
    """The staffing check (curation/review/accounts.py `staffing`) as text lines."""
    if not staff:
        return []
    lines = ["", f"Staffing: shortfall {staff['shortfall']} item(s)"]
    for phase in ("review", "panel", "adjudication"):
        p = staff[phase]
        line = (f"  {phase}: {p['open_items']} open, {p['unfilled']} awaiting assignment, {p['short']} short of "
                f"eligible people (need {p['needed_per_item']} each)")
        if p["short"]:
            line += ": " + ", ".join(p["short_items"][:10]) + (" ..." if p["short"] > 10 else "")
        lines.append(line)
    return lines


def time_lines(t: dict[str, Any] | None) -> list[str]:
    """Expert time (curation/review/timing.py `expert_time`) as text lines."""
    if not t:
        return []
    eta = "n/a (nobody submitted in the window)" if t["eta_days"] is None else f"{t['eta_days']} days"
    lines = ["", f"Expert time (active, page served -> submit; last {t['window_days']} days for rates):",
             "  backlog (submissions owed): " + ", ".join(f"{k} {v}" for k, v in t["backlog"].items()) +
             f"; team {t['team_per_day']}/day; ETA {eta}"]
    for name, r in t["reviewers"].items():
        lines.append(f"  {name}: {r['submissions']} timed, median {fmt_minutes(r['median_minutes'])}, "
                     f"{r['per_day']}/day")
    lines.append(f"  per expert-validated item: median {fmt_minutes(t['median_minutes_per_validated_item'])} "
                 f"({t['validated_items_timed']} items timed)")
    return lines


def fmt_minutes(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1f} min"

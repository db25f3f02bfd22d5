"""Inter-annotator agreement for the card, computed on the snapshot already in memory with the project's
estimators (`curation.review.agreement`: Cohen's kappa per reviewer pair, Fleiss' kappa, Krippendorff's
alpha, with raw agreement, Gwet's AC1 and bootstrap intervals), over the same data as `medcot review stats`:
the initial review's binary judgements and approval (phase "review"), and the rubric scores of every rated
item (initial reviewers and panelists alike; a unit is one revision of an item). Reviewers appear as pseudonyms.

When the estimators are not installed, nothing is computed and the card says so.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any

from dataset_builder.features import DIMENSIONS
from dataset_builder.snapshot import Snapshot

FIELDS = ("relevance", "correctness", "sufficiency", "approve")
BINARY = FIELDS[:3]
KINDS = {"human": ("human",), "all": ("human", "llm", "demo")}


def compute_agreement(snap: Snapshot, rater: Any, views: tuple[str, ...], resamples: int = 1000) -> dict[str, Any]:
    """views: "human" (experts only) and/or "all" (automated reviewers included)."""
    try:
        from curation.review.stats import agreement_intervals, fleiss_binary, pair_kappas
    except ModuleNotFoundError as exc:
        return {"available": False, "note": f"agreement statistics not computed: {exc.name} is not available"}
    out: dict[str, Any] = {"available": True}
    for view in views:
        kinds = KINDS[view]
        by_item = _reviews(snap, kinds, rater)
        units = _rubric_units(snap, kinds)
        intervals = agreement_intervals(by_item, {d: list(u.values()) for d, u in units.items()}, resamples=resamples)
        # the ordinal alpha per dimension is the intervals' point estimate (one computation, not two)
        alpha = {d: {"alpha": intervals["rubric"][d]["krippendorff_alpha"]["estimate"],
                     "units": sum(1 for v in u.values() if len(v) >= 2)} for d, u in units.items()}
        out[view] = {"cohen_pairs": pair_kappas(by_item), "fleiss": fleiss_binary(by_item),
                     "krippendorff_rubric": alpha, "intervals": intervals}
    return out


def _reviews(snap: Snapshot, kinds: tuple[str, ...], rater: Any) -> dict[str, dict[str, dict[str, int]]]:
    """item -> reviewer hash -> {relevance, correctness, sufficiency, approve} of the initial review
    (the shape `curation.review.stats` computes its tables from)."""
    out: dict[str, dict[str, dict[str, int]]] = defaultdict(dict)
    for item_id, rows in snap.reviews.items():
        for r in rows:
            user = snap.users.get(r.user_id)
            if r.phase == "review" and user is not None and user.kind in kinds:
                out[item_id][rater(r.user_id)] = dict(zip(FIELDS, (int(r.relevance), int(r.correctness),
                                                                    int(r.sufficiency), int(r.approve))))
    return out


def _rubric_units(snap: Snapshot, kinds: tuple[str, ...]) -> dict[str, dict[tuple[str, str], list[int]]]:
    """dimension -> (item, revision) -> scores: every rated item, initial review and panel alike."""
    units: dict[str, dict[tuple[str, str], list[int]]] = defaultdict(lambda: defaultdict(list))
    for item_id, rows in snap.rubric.items():
        for r in rows:
            user = snap.users.get(r.user_id)
            if user is not None and user.kind in kinds:
                units[r.dimension][(item_id, r.revision_hash or f"round {r.round}")].append(r.score)
    order = sorted(units, key=lambda d: (DIMENSIONS.index(d) if d in DIMENSIONS else len(DIMENSIONS), d))
    return {d: units[d] for d in order}

"""Inter-annotator agreement for the card, computed on the snapshot already in memory with the project's
estimators (`curation.review.agreement`: Cohen's kappa per reviewer pair, Fleiss' kappa, Krippendorff's
alpha), over the same data as `medcot review stats`: the initial review's binary judgements and approval
(phase "review"), and the panel's rubric scores per (item, round). Reviewers appear as id hashes.

When the estimators are not installed, nothing is computed and the card says so.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any

from dataset_builder.figures import DIMENSIONS
from dataset_builder.snapshot import Snapshot

FIELDS = ("relevance", "correctness", "sufficiency", "approve")
BINARY = FIELDS[:3]
KINDS = {"human": ("human",), "all": ("human", "llm", "demo")}


def compute_agreement(snap: Snapshot, rater: Any, views: tuple[str, ...]) -> dict[str, Any]:
    """views: "human" (experts only) and/or "all" (automated reviewers included)."""
    try:
        from curation.review import agreement as est
        from curation.review.stats import fleiss_binary, pair_kappas
    except ModuleNotFoundError as exc:
        return {"available": False, "note": f"agreement statistics not computed: {exc.name} is not available"}
    out: dict[str, Any] = {"available": True}
    for view in views:
        kinds = KINDS[view]
        by_item = _reviews(snap, kinds, rater)
        out[view] = {"cohen_pairs": pair_kappas(by_item), "fleiss": fleiss_binary(by_item),
                     "krippendorff_rubric": _rubric_alpha(snap, kinds, est)}
    return out


def _reviews(snap: Snapshot, kinds: tuple[str, ...], rater: Any) -> dict[str, dict[str, dict[str, int]]]:
    """item -> reviewer hash -> {relevance, correctness, sufficiency, approve} of the initial review
    (the shape `curation.review.stats` computes its tables from)."""
    out: dict[str, dict[str, dict[str, int]]] = defaultdict(dict)
    for item_id, rows in snap.reviews.items():
        for _, uid, phase, rel, cor, suf, _, ok in rows:
            user = snap.users.get(uid)
            if phase == "review" and user is not None and user.kind in kinds:
                out[item_id][rater(uid)] = dict(zip(FIELDS, (int(rel), int(cor), int(suf), int(ok))))
    return out


def _rubric_alpha(snap: Snapshot, kinds: tuple[str, ...], est: Any) -> dict[str, Any]:
    """Krippendorff's alpha (ordinal) per rubric dimension; a unit is (item, round)."""
    units: dict[str, dict[tuple[str, int], list[int]]] = defaultdict(lambda: defaultdict(list))
    for item_id, rows in snap.rubric.items():
        for _, uid, rnd, dim, score in rows:
            user = snap.users.get(uid)
            if user is not None and user.kind in kinds:
                units[dim][(item_id, rnd)].append(score)
    order = sorted(units, key=lambda d: (DIMENSIONS.index(d) if d in DIMENSIONS else len(DIMENSIONS), d))
    return {d: {"alpha": est.krippendorff_alpha(list(units[d].values()), "ordinal"),
                "units": sum(1 for v in units[d].values() if len(v) >= 2)} for d in order}

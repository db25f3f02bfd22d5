"""The card's figures (PNG, matplotlib Agg): the specialty distribution (like the paper's Figure 3) and the
rubric scores of every rated item (like Figure 4). Deterministic bytes: fixed size and dpi, no Software/date metadata."""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from dataset_builder.features import DIMENSIONS, ReleaseRow  # noqa: E402

UNASSIGNED = "(no specialty assigned)"
_PNG_META = {"Software": None}
_SCORE_COLORS = ("#d9534f", "#f0ad4e", "#5cb85c")


def _save(fig: plt.Figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100, metadata=_PNG_META)
    plt.close(fig)


def specialty_counts(rows: list[ReleaseRow]) -> Counter[str]:
    return Counter(r.specialty or UNASSIGNED for r in rows)


def specialty_figure(by_config: dict[str, list[ReleaseRow]], path: Path) -> None:
    """Horizontal bars: items per specialty in each config that has rows."""
    configs = [c for c, rows in by_config.items() if rows]
    counts = {c: specialty_counts(by_config[c]) for c in configs}
    total = Counter[str]()
    for c in configs:
        total.update(counts[c])
    labels = sorted(total, key=lambda s: (-total[s], s))
    height = max(3.0, 0.35 * len(labels) * max(1, len(configs)) / 2 + 1.5)
    fig, ax = plt.subplots(figsize=(8, height))
    bar = 0.8 / max(1, len(configs))
    for i, c in enumerate(configs):
        ys = [j + i * bar for j in range(len(labels))]
        ax.barh(ys, [counts[c][s] for s in labels], height=bar, label=f"{c} (n={len(by_config[c])})")
    ax.set_yticks([j + bar * (len(configs) - 1) / 2 for j in range(len(labels))], labels)
    ax.invert_yaxis()
    ax.set_xlabel("items")
    ax.set_title("Items per clinical specialty")
    ax.legend(loc="best")
    fig.tight_layout()
    _save(fig, path)


def rubric_distribution(rated: list[list[dict[str, Any]]], which: str) -> dict[str, Counter[int]]:
    """dimension -> score counts, over each item's first ("first") or last ("final") scored revision.
    `rated`: per item, its scores as dicts with "round" (the order of the revisions scored), "dimension", "score"."""
    out: dict[str, Counter[int]] = {d: Counter() for d in DIMENSIONS}
    for scores in rated:
        if not scores:
            continue
        rounds = [s["round"] for s in scores]
        pick = min(rounds) if which == "first" else max(rounds)
        for s in scores:
            if s["round"] == pick:
                out.setdefault(s["dimension"], Counter())[s["score"]] += 1
    return out


def rubric_figure(rated: list[list[dict[str, Any]]], path: Path) -> None:
    """Stacked shares of scores 0/1/2 per dimension: first scored revision of each item (the initial review, or
    the panel's first round), and the final one (after any repair / regeneration)."""
    panels = [("first", "first scored revision"), ("final", "final revision (after any repair)")]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    for ax, (which, title) in zip(axes, panels):
        dist = rubric_distribution(rated, which)
        dims = [d for d in dist if sum(dist[d].values())]
        left = [0.0] * len(dims)
        for score in (0, 1, 2):
            shares = [dist[d][score] / sum(dist[d].values()) for d in dims]
            ax.barh(dims, shares, left=left, color=_SCORE_COLORS[score], label=f"score {score}")
            left = [a + b for a, b in zip(left, shares)]
        n = sum(1 for scores in rated if scores)
        ax.set_title(f"{title}\n({n} items)", fontsize=10)
        ax.set_xlim(0, 1)
        ax.set_xlabel("share of scores")
    axes[0].invert_yaxis()
    axes[1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    kinds = sorted({s["rater_kind"] or "unknown" for scores in rated for s in scores})
    fig.suptitle(f"Rubric scores (0-2) of every rated item; raters: {', '.join(kinds)}")
    fig.tight_layout()
    _save(fig, path)

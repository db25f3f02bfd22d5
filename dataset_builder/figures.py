"""The card's figures (PNG, matplotlib Agg): the specialty distribution (like the paper's Figure 3) and the
panel's rubric scores (like Figure 4). Deterministic bytes: fixed size and dpi, no Software/date metadata."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from dataset_builder.features import ReleaseRow  # noqa: E402

DIMENSIONS = ("medical_correctness", "reasoning_structure", "information_sufficiency", "terminology_clarity",
              "clinical_utility")
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


def rubric_distribution(rows: list[ReleaseRow], which: str) -> dict[str, Counter[int]]:
    """dimension -> score counts, over each item's first ("first") or last ("final") scoring round."""
    out: dict[str, Counter[int]] = {d: Counter() for d in DIMENSIONS}
    for r in rows:
        if not r.rubric:
            continue
        rounds = [s["round"] for s in r.rubric]
        pick = min(rounds) if which == "first" else max(rounds)
        for s in r.rubric:
            if s["round"] == pick:
                out.setdefault(s["dimension"], Counter())[s["score"]] += 1
    return out


def rubric_figure(panel_rows: list[ReleaseRow], path: Path) -> None:
    """Stacked shares of scores 0/1/2 per dimension: first scoring round, and the final round after revision."""
    panels = [("first", "first scoring"), ("final", "final scoring (after revision / regeneration)")]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    for ax, (which, title) in zip(axes, panels):
        dist = rubric_distribution(panel_rows, which)
        dims = [d for d in dist if sum(dist[d].values())]
        left = [0.0] * len(dims)
        for score in (0, 1, 2):
            shares = [dist[d][score] / sum(dist[d].values()) for d in dims]
            ax.barh(dims, shares, left=left, color=_SCORE_COLORS[score], label=f"score {score}")
            left = [a + b for a, b in zip(left, shares)]
        n = sum(1 for r in panel_rows if r.rubric)
        ax.set_title(f"{title}\n({n} items)", fontsize=10)
        ax.set_xlim(0, 1)
        ax.set_xlabel("share of scores")
    axes[0].invert_yaxis()
    axes[1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    kinds = sorted({s["rater_kind"] or "unknown" for r in panel_rows for s in r.rubric})
    fig.suptitle(f"Panel rubric scores (0-2); raters: {', '.join(kinds)}")
    fig.tight_layout()
    _save(fig, path)

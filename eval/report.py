"""Report building blocks rendered to both markdown and HTML, and the comparison plots (matplotlib Agg)."""
from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from eval.records import RUBRIC_DIMENSIONS  # noqa: E402


@dataclass
class Block:
    kind: str  # "h1" | "h2" | "p" | "list" | "table" | "image"
    text: str = ""
    rows: list[list[str]] = field(default_factory=list)  # table: first row is the header; list: one item each


def to_markdown(blocks: list[Block]) -> str:
    out: list[str] = []
    for b in blocks:
        if b.kind in ("h1", "h2"):
            out += [("# " if b.kind == "h1" else "## ") + b.text, ""]
        elif b.kind == "p":
            out += [b.text, ""]
        elif b.kind == "list":
            out += [f"- {r[0]}" for r in b.rows] + [""]
        elif b.kind == "table":
            head, *body = b.rows
            out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            out += ["| " + " | ".join(r) + " |" for r in body] + [""]
        elif b.kind == "image":
            out += [f"![{b.text}]({b.rows[0][0]})", ""]
    return "\n".join(out)


def to_html(blocks: list[Block], title: str) -> str:
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>"
             "body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:4px 8px;"
             "text-align:left}th{background:#eee}img{max-width:100%}</style></head><body>"]
    for b in blocks:
        if b.kind in ("h1", "h2"):
            parts.append(f"<{b.kind}>{e(b.text)}</{b.kind}>")
        elif b.kind == "p":
            parts.append(f"<p>{e(b.text)}</p>")
        elif b.kind == "list":
            parts.append("<ul>" + "".join(f"<li>{e(r[0])}</li>" for r in b.rows) + "</ul>")
        elif b.kind == "table":
            head, *body = b.rows
            parts.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>"
                         + "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in body)
                         + "</table>")
        elif b.kind == "image":
            parts.append(f"<figure><img src='{e(b.rows[0][0])}' alt='{e(b.text)}'><figcaption>{e(b.text)}"
                         "</figcaption></figure>")
    return "".join(parts) + "</body></html>\n"


def plot_accuracy(rows: list[tuple[str, float, float, float]], path: Path, title: str) -> Path:
    """Bars of accuracy with CI error bars; rows: (label, value, low, high)."""
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(rows) + 1.5), 3.6))
    xs = range(len(rows))
    vals = [r[1] for r in rows]
    err = [[r[1] - r[2] for r in rows], [r[3] - r[1] for r in rows]]
    ax.bar(xs, vals, yerr=err, capsize=5, color=[_color(r[0]) for r in rows])
    ax.set_xticks(list(xs), [r[0] for r in rows], rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy (95% CI)")
    ax.set_title(title)
    return _save(fig, path)


def plot_specialty(table: dict[str, dict[str, float]], path: Path) -> Path:
    """Grouped bars: specialty on x, one bar per group (arm) with its accuracy."""
    specialties = sorted({s for g in table.values() for s in g})
    groups = list(table)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(specialties) * max(1, len(groups)) / 2 + 2), 3.8))
    width = 0.8 / max(1, len(groups))
    for i, g in enumerate(groups):
        xs = [j + i * width for j in range(len(specialties))]
        ax.bar(xs, [table[g].get(s, math.nan) for s in specialties], width, label=g, color=_color(g))
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(specialties))], specialties, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title("Accuracy per specialty")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_radar(means: dict[str, dict[str, float]], path: Path) -> Path:
    """Rubric radar: mean judge score (0-2) per dimension, one polygon per group."""
    angles = [2 * math.pi * i / len(RUBRIC_DIMENSIONS) for i in range(len(RUBRIC_DIMENSIONS))]
    fig = plt.figure(figsize=(5.2, 5.2))
    ax = fig.add_subplot(111, polar=True)
    for g, dims in means.items():
        vals = [dims.get(d, math.nan) for d in RUBRIC_DIMENSIONS]
        ax.plot(angles + angles[:1], vals + vals[:1], label=g, color=_color(g))
        ax.fill(angles + angles[:1], vals + vals[:1], alpha=0.15, color=_color(g))
    ax.set_xticks(angles, [d.replace("_", "\n") for d in RUBRIC_DIMENSIONS], fontsize=8)
    ax.set_ylim(0, 2)
    ax.set_title("LLM-judge rubric (mean, 0-2)")
    ax.legend(loc="lower right", fontsize=8, bbox_to_anchor=(1.25, -0.05))
    return _save(fig, path)


def _color(label: str) -> str:
    if label.startswith("unvalidated"):
        return "tab:orange"
    if label.startswith("validated"):
        return "tab:blue"
    return "tab:gray"


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

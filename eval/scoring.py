"""Accuracy of predictions, overall and per language and specialty, through the repo's `evaluate` modules
(loaded by path, offline). No-answer is reported as its own rate, never folded into a letter."""
from __future__ import annotations

from collections import Counter, defaultdict
from functools import cache
from pathlib import Path
from typing import Any

from eval.config import BootstrapConfig
from eval.records import Prediction

METRICS_DIR = Path(__file__).resolve().parent / "metrics"


@cache
def load_metric(name: str) -> Any:
    """An `evaluate` metric module kept in eval/metrics/<name>/<name>.py."""
    import evaluate
    path = METRICS_DIR / name
    if not (path / f"{name}.py").is_file():
        raise FileNotFoundError(f"no metric module {path / (name + '.py')}")
    return evaluate.load(str(path))


def accuracy(preds: list[Prediction], boot: BootstrapConfig) -> dict[str, Any]:
    metric = load_metric("mcq_accuracy")
    return metric.compute(predictions=[p.prediction or "" for p in preds], references=[p.gold for p in preds],
                          resamples=boot.resamples, seed=boot.seed, confidence=boot.confidence)


def _by(preds: list[Prediction], key: str, boot: BootstrapConfig) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[Prediction]] = defaultdict(list)
    for p in preds:
        groups[getattr(p, key) or "(none)"].append(p)
    return {k: accuracy(v, boot) for k, v in sorted(groups.items())}


def set_metrics(preds: list[Prediction], boot: BootstrapConfig) -> dict[str, Any]:
    """Metrics of one model on one eval set; a set without answers gets no accuracy, only its no-answer rate."""
    if not any(p.labelled for p in preds):
        no_answer = sum(p.prediction is None for p in preds)
        return {"labelled": False, "n": len(preds), "no_answer": no_answer, "no_answer_rate": no_answer / len(preds),
                "matched_by": dict(sorted(Counter(p.matched_by for p in preds).items()))}
    if not all(p.labelled for p in preds):
        raise ValueError(f"set {preds[0].set!r} mixes predictions with and without a gold answer")
    return {"labelled": True, **accuracy(preds, boot),
            "per_language": _by(preds, "language", boot),
            "per_specialty": _by(preds, "specialty", boot),
            "matched_by": dict(sorted(Counter(p.matched_by for p in preds).items()))}


def model_metrics(preds: list[Prediction], boot: BootstrapConfig) -> dict[str, dict[str, Any]]:
    """set name -> metrics, for the predictions of one model."""
    by_set: dict[str, list[Prediction]] = defaultdict(list)
    for p in preds:
        by_set[p.set].append(p)
    return {name: set_metrics(v, boot) for name, v in sorted(by_set.items())}


def fmt_acc(m: dict[str, Any]) -> str:
    return f"{m['accuracy']:.3f} [{m['accuracy_ci_low']:.3f}, {m['accuracy_ci_high']:.3f}]"


def metrics_markdown(results: dict[str, Any]) -> str:
    """The accuracy table of `eval run` results: one row per model and set."""
    scored = [m for m in _all_sets(results) if m.get("labelled", True)]
    conf = int(round(100 * (scored[0] if scored else {}).get("confidence", 0.95)))
    lines = [f"| model | set | n | accuracy [{conf}% CI] | no-answer rate | accuracy when answered |",
             "|---|---|---|---|---|---|"]
    for model, info in results["models"].items():
        for name, m in info["sets"].items():
            if not m.get("labelled", True):
                lines.append(f"| {model} | {name} | {m['n']} | no answers in the set: submission only | "
                             f"{m['no_answer_rate']:.3f} | n/a |")
                continue
            lines.append(f"| {model} | {name} | {m['n']} | {fmt_acc(m)} | {m['no_answer_rate']:.3f} | "
                         f"{_num(m['answered_accuracy'])} |")
    return "\n".join(lines)


def _all_sets(results: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for info in results["models"].values() for m in info["sets"].values()]


def _num(x: float) -> str:
    return "n/a" if x != x else f"{x:.3f}"

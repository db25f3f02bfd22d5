"""MCQ accuracy with a bootstrap CI and the no-answer rate as its own number (an `evaluate` module).

    import evaluate
    metric = evaluate.load("eval/metrics/mcq_accuracy")         # by path: works offline
    metric.compute(predictions=["A", None, "C"], references=["A", "B", "D"], resamples=2000, seed=0)

A prediction of None (or "") is "no answer": it counts as wrong in `accuracy` and is reported in
`no_answer_rate`; `answered_accuracy` is the accuracy over answered items only.
"""
import datasets
import evaluate

from eval.stats import bootstrap_mean

_DESCRIPTION = __doc__
_KWARGS_DESCRIPTION = """
Args:
    predictions: extracted letters, None or "" for no answer.
    references: gold letters.
    resamples (int, default 2000), seed (int, default 0), confidence (float, default 0.95): the bootstrap.
Returns:
    n, accuracy, accuracy_ci_low, accuracy_ci_high, confidence, no_answer_rate, answered, answered_accuracy.
"""


class McqAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation="", inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}))

    def _compute(self, predictions, references, resamples=2000, seed=0, confidence=0.95):
        answered = [p not in (None, "") for p in predictions]
        correct = [float(a and p == r) for a, p, r in zip(answered, predictions, references)]
        acc = bootstrap_mean(correct, resamples=resamples, seed=seed, confidence=confidence)
        n_answered = sum(answered)
        return {"n": acc.n, "accuracy": acc.value, "accuracy_ci_low": acc.low, "accuracy_ci_high": acc.high,
                "confidence": confidence,
                "no_answer_rate": (acc.n - n_answered) / acc.n if acc.n else float("nan"),
                "answered": n_answered,
                "answered_accuracy": sum(correct) / n_answered if n_answered else float("nan")}

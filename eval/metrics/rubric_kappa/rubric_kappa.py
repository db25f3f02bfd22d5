"""Quadratic-weighted Cohen's kappa between two raters on the 0-2 rubric scale (an `evaluate` module).

    metric = evaluate.load("eval/metrics/rubric_kappa")
    metric.compute(predictions=judge_scores, references=expert_scores)   # ints 0..2
"""
import datasets
import evaluate

from eval.stats import quadratic_weighted_kappa

_KWARGS_DESCRIPTION = """
Args:
    predictions: one rater's scores (e.g. the LLM judge), ints in 0..2.
    references: the other rater's scores (e.g. an expert), ints in 0..2.
Returns:
    n, qwk (NaN when undefined), exact_agreement.
"""


class RubricKappa(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__, citation="", inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int32"),
                                        "references": datasets.Value("int32")}))

    def _compute(self, predictions, references):
        n = len(predictions)
        agree = sum(p == r for p, r in zip(predictions, references))
        return {"n": n, "qwk": quadratic_weighted_kappa(predictions, references),
                "exact_agreement": agree / n if n else float("nan")}

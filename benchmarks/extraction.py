"""Benchmark: our answer extractor vs an lm-evaluation-harness style regex chain, on the labelled fixtures.

    python benchmarks/extraction.py [--fixtures tests/fixtures/extraction.jsonl]

Prints one JSON line. Per extractor: accuracy (letter or None equals the label), false_letters (how many
responses got a letter that is wrong, or a letter where the label is "no answer") and no_answer_rate.

The reference mimics lm-eval: the strict filter `The answer is \\(([A-E])\\)` (take_first), falling back to
`MultiChoiceRegexFilter` as the MMLU CoT tasks configure it (regex `(\\([A-Z]\\))`, group_select -1,
ignore_case, ignore_punctuation): a letter in parentheses, else an option's text, else `:\\s*([A-D])`;
"[invalid]" becomes None. Like lm-eval it ignores finish_reason and does not strip <think> blocks.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
import unicodedata
from collections.abc import Callable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from medcot.extract import extract_answer  # noqa: E402

Extractor = Callable[[str | None, Mapping[str, str], str | None], str | None]

_STRICT = re.compile(r"The answer is \(([A-E])\)")
_PAREN = re.compile(r"(\([A-Z]\))")
_PUNCT = dict.fromkeys(i for i in range(sys.maxunicode) if unicodedata.category(chr(i)).startswith("P"))


def _ignores(s: str) -> str:
    return s.lower().translate(_PUNCT)  # ignore_case + ignore_punctuation


def lm_eval_regex(response: str | None, options: Mapping[str, str], finish_reason: str | None = None) -> str | None:
    """The letter lm-eval's strict-then-flexible filters would score, or None for "[invalid]"."""
    resp = response or ""
    if strict := _STRICT.findall(resp):
        return strict[0]
    if paren := _PAREN.findall(resp):
        return paren[-1].strip("()")
    letters = list(options)
    choice_to_letter = {_ignores(text.strip()): letter for letter, text in options.items()}
    by_text = re.compile("|".join(re.escape(c) for c in choice_to_letter))
    if found := by_text.findall(_ignores(resp)):
        return choice_to_letter.get(found[-1])
    if colon := re.findall(rf":[\s]*({'|'.join(letters)})", resp):
        return colon[-1]
    return None


def ours(response: str | None, options: Mapping[str, str], finish_reason: str | None = None) -> str | None:
    return extract_answer(response, options, finish_reason=finish_reason).letter


def score(rows: list[dict], extractor: Extractor) -> dict[str, float | int]:
    preds = [extractor(r["response"], r["options"], r["finish_reason"]) for r in rows]
    right = sum(p == r["expected"] for p, r in zip(preds, rows))
    false_letters = sum(p is not None and p != r["expected"] for p, r in zip(preds, rows))
    no_answer = sum(p is None for p in preds)
    return {"accuracy": round(right / len(rows), 4), "false_letters": false_letters,
            "no_answer_rate": round(no_answer / len(rows), 4)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixtures", type=Path, default=ROOT / "tests" / "fixtures" / "extraction.jsonl",
                        help="labelled responses, one JSON object per line")
    parser.add_argument("--quick", action="store_true", help="accepted for `make bench`; the run is quick anyway")
    args = parser.parse_args(argv)
    rows = [json.loads(line) for line in args.fixtures.read_text(encoding="utf-8").splitlines() if line.strip()]
    result = {"benchmark": "extraction", "fixtures": len(rows), "ours": score(rows, ours),
              "lm_eval_regex": score(rows, lm_eval_regex), "ours_responses_per_s": throughput(rows)}
    print(json.dumps(result))


def throughput(rows: list[dict], min_seconds: float = 1.0) -> float:
    """Responses per second of our extractor on the fixtures (single thread, repeated for >= min_seconds)."""
    done, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < min_seconds:
        for r in rows:
            extract_answer(r["response"], r["options"], finish_reason=r["finish_reason"])
        done += len(rows)
    return round(done / elapsed, 1)


if __name__ == "__main__":
    main()

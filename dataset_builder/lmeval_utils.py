"""lm-evaluation-harness helpers for the medcot release. Copied into every release as `lm_eval/utils.py`
(it imports nothing from medcot): the task YAMLs reference these functions with `!function utils.NAME`.
Answers are read by medcot's own extractor, `medcot_extract.py`, shipped beside this file (a byte copy of
`medcot/extract.py`), so lm-eval and `medcot eval` give the same letter for the same response.

The release is loaded from the folder this file sits in (its parent), or from `release_dir` / `config`
passed with `lm_eval --metadata '{"release_dir": "...", "config": "unvalidated"}'`.
"""
from __future__ import annotations

import importlib.util
import sys
from functools import cache
from pathlib import Path
from typing import Any

LETTERS = ("A", "B", "C", "D", "E")
NO_ANSWER = "[no answer]"  # what the filter gives for a response without a committed final answer
EXTRACTOR_FILE = "medcot_extract.py"

_COT_INSTRUCTION = {
    "zh": "请回答下面这道医学单项选择题。先逐步分析，对每一个选项说明它正确或错误的理由，"
          "最后单独一行，严格按照“答案：X”的格式给出唯一正确选项的字母。",
    "en": "Answer the following single-choice medical exam question. Reason step by step, explain for EACH "
          "option why it is correct or incorrect, and end with a final line exactly in the form "
          "\"Answer: X\", where X is the letter of the single best option.",
}
_LABELS = {"zh": ("题目：", "选项：", "答案："), "en": ("Question: ", "Options:", "Answer:")}


def load_release(config: str = "validated", release_dir: str | None = None, **_: Any) -> Any:
    """`custom_dataset` hook: the release's Parquet config as a DatasetDict (lm-eval passes its task
    metadata as keyword arguments; the ones not used here are ignored)."""
    import datasets
    root = Path(release_dir) if release_dir else Path(__file__).resolve().parent.parent
    return datasets.load_dataset(str(root), config)


@cache
def _extractor() -> Any:
    """The shipped extractor module beside this file (in the source tree, before any release is written, the
    file it is copied from)."""
    here = Path(__file__).resolve().with_name(EXTRACTOR_FILE)
    path = here if here.is_file() else Path(__file__).resolve().parent.parent / "medcot" / "extract.py"
    spec = importlib.util.spec_from_file_location("medcot_release_extract", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the answer extractor {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(module)
    return module


def extract_letter(response: str, doc: dict[str, Any]) -> str:
    """The committed answer letter of one response to ``doc``, or NO_ANSWER."""
    options = {k: doc["options"][k] for k in present_letters(doc)}
    return _extractor().extract_answer(response, options).letter or NO_ANSWER


def extract_filter(resps: Any, docs: Any) -> list[list[str]]:
    """lm-eval `custom` filter: every response of every doc through medcot's extractor."""
    return [[extract_letter(r, doc) for r in doc_resps] for doc_resps, doc in zip(resps, docs, strict=True)]


def present_letters(doc: dict[str, Any]) -> list[str]:
    return [k for k in LETTERS if doc["options"].get(k)]


def _options(doc: dict[str, Any]) -> str:
    return "\n".join(f"{k}. {doc['options'][k]}" for k in present_letters(doc))


def doc_to_text_cot(doc: dict[str, Any]) -> str:
    lang = doc["language"]
    q, o, _ = _LABELS[lang]
    return f"{_COT_INSTRUCTION[lang]}\n\n{q}{doc['question']}\n\n{o}\n{_options(doc)}"


def doc_to_text_mc(doc: dict[str, Any]) -> str:
    q, o, a = _LABELS[doc["language"]]
    return f"{q}{doc['question']}\n{o}\n{_options(doc)}\n{a}"


def doc_to_target_letter(doc: dict[str, Any]) -> str:
    return LETTERS[doc["answer"]]


def doc_to_choice(doc: dict[str, Any]) -> list[str]:
    return present_letters(doc)


def doc_to_target_index(doc: dict[str, Any]) -> int:
    return present_letters(doc).index(LETTERS[doc["answer"]])


def process_results_cot(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """`results[0]` is the filtered prediction: a letter, or NO_ANSWER when no final-answer line was found.
    A letter that is not one of the item's options is no answer too. No answer is never counted as correct
    and is reported as its own rate."""
    pred = results[0].strip() if results else NO_ANSWER
    if pred not in present_letters(doc):
        pred = NO_ANSWER
    return {"exact_match": float(pred == doc_to_target_letter(doc)), "no_answer": float(pred == NO_ANSWER)}

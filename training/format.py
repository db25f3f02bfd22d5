"""SFT formatting: one release row -> one conversational prompt/completion example. Both arms use it.

prompt     = the versioned CoT prompt (``medcot/prompts/<name>.yaml``, zh or en): instruction, question and
             the lettered options, as chat messages (system + user);
completion = the row's chain of thought, and how its final answer is treated depends on the arm:
  * validated (``keep_own_answer=False``): the reviewed CoT as written when it already ends on one final-answer
    line stating the key (the normal case after review); otherwise its final-answer lines are removed and one
    line in the project's fixed form (zh ``答案：X``, en ``Answer: X``, X = the row's ``answer``) is appended;
  * unvalidated (``keep_own_answer=True``): the raw first-pass CoT VERBATIM, with its own final answer, even
    when it argues for another letter than the key. Replacing it by the key would correct the raw arm.
So an item whose CoT review left unchanged yields the identical example in both arms (``example_hash``).

TRL's SFTTrainer tokenizes ``prompt`` with the generation prompt and ``prompt + completion`` with the chat
template and puts the loss on the completion tokens only (``completion_only_loss``, on by default for this
format). Change anything here and bump ``FORMAT_VERSION``: it is part of every run's data hash.
"""
from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from medcot.prompts import format_options, load_prompt

FORMAT_VERSION = "sft-format@2"
LETTERS = "ABCDE"
FINAL_LINE = {"zh": "答案：{letter}", "en": "Answer: {letter}"}

# A line that is nothing but a final-answer statement ("答案：B", "**Final answer:** (B).", "Answer - C").
_FINAL_ANSWER_LINE = re.compile(
    r"[ \t>#*_]*(?:(?:final|correct)\s+answer|answer|(?:最终|正确|参考)?答案)[ \t*_]*(?:is|为|是)?[ \t*_]*[:：=\-–—]?"
    r"[ \t*_]*[(（\[【]?[ \t]*(?P<letter>[A-E])[ \t]*[)）\]】]?[ \t*_]*[.。]?[ \t*_]*",
    re.IGNORECASE,
)


class FormatError(ValueError):
    """A release row that cannot be turned into a training example; the message names the row."""


@dataclass(frozen=True, slots=True)
class SFTExample:
    """One training example in TRL's conversational prompt/completion format, with its provenance."""

    id: str
    family_id: str
    language: str
    prompt: list[dict[str, str]]
    completion: list[dict[str, str]]
    key: str | None = None  # the row's answer key
    stated: str | None = None  # the letter the completion's final answer states (None = none found)

    def as_row(self) -> dict[str, Any]:
        return {"id": self.id, "family_id": self.family_id, "prompt": self.prompt, "completion": self.completion}


def strip_final_answer_lines(cot: str) -> str:
    """The CoT without lines that only state a final answer (the fixed line is appended afterwards)."""
    kept = [line for line in cot.splitlines()
            if not _FINAL_ANSWER_LINE.fullmatch(unicodedata.normalize("NFKC", line))]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip()


def final_answer_line(language: str, letter: str) -> str:
    return FINAL_LINE[language].format(letter=letter)


def answer_letter(answer: Any) -> str:
    """The answer as a letter: the release stores a ClassLabel index (0-4); a letter is accepted too."""
    if isinstance(answer, bool):
        raise FormatError(f"answer must be a letter A-E or an index 0-4, got {answer!r}")
    if isinstance(answer, int) and 0 <= answer < len(LETTERS):
        return LETTERS[answer]
    if isinstance(answer, str) and len(answer.strip()) == 1 and answer.strip().upper() in LETTERS:
        return answer.strip().upper()
    raise FormatError(f"answer must be a letter A-E or an index 0-4, got {answer!r}")


def present_options(options: Mapping[str, str | None]) -> dict[str, str]:
    """The options that exist (E is null for 4-option questions), in letter order."""
    return {k: str(options[k]) for k in LETTERS if options.get(k) not in (None, "")}


def build_prompt(question: str, options: Mapping[str, str | None], language: str,
                 prompt_name: str = "cot") -> list[dict[str, str]]:
    if language not in FINAL_LINE:
        raise FormatError(f"language must be 'zh' or 'en', got {language!r}")
    return load_prompt(prompt_name, language).messages(question=question,
                                                       options=format_options(present_options(options)))


def final_answer_letters(cot: str) -> list[str]:
    """The letters of the lines that only state a final answer, in order."""
    found = (_FINAL_ANSWER_LINE.fullmatch(unicodedata.normalize("NFKC", line)) for line in cot.splitlines())
    return [m.group("letter").upper() for m in found if m]


def ends_on_answer(cot: str, letter: str) -> bool:
    """True when the CoT's only final-answer line states ``letter`` and is its last non-empty line."""
    lines = [line for line in cot.strip().splitlines() if line.strip()]
    if not lines or not _FINAL_ANSWER_LINE.fullmatch(unicodedata.normalize("NFKC", lines[-1])):
        return False
    return final_answer_letters(cot) == [letter]


def build_completion(cot: str, language: str, letter: str, keep_own_answer: bool = False) -> str:
    """The completion text (see the module doc): verbatim for the raw arm, ending on the key otherwise."""
    text = (cot or "").strip()
    if keep_own_answer or ends_on_answer(text, letter):
        return text
    body = strip_final_answer_lines(text)
    line = final_answer_line(language, letter)
    return f"{body}\n\n{line}" if body else line


def stated_answer(completion: str, options: Mapping[str, str]) -> str | None:
    """The letter a completion commits to, by the project's answer extractor (None = no answer)."""
    from medcot.extract import extract_answer
    return extract_answer(completion, options).letter


def with_reasoning(reasoning: str | None, completion: str) -> str:
    """target reasoning_and_cot: the generator's raw thinking in R1's <think> form, then the completion."""
    return f"<think>\n{(reasoning or '').strip()}\n</think>\n\n{completion}"


def format_row(row: Mapping[str, Any], prompt_name: str = "cot", keep_own_answer: bool = False,
               target: str = "cot") -> SFTExample:
    """One release row (``id, family_id, language, question, options, answer, cot``) -> an SFTExample;
    ``keep_own_answer``: the unvalidated arm's raw CoT, verbatim (see the module doc); ``target``
    reasoning_and_cot: the row's `reasoning` (never validated) before it."""
    rid = row.get("id", "?")
    try:
        letter = answer_letter(row["answer"])
        opts = present_options(row["options"])
        if letter not in opts:
            raise FormatError(f"answer {letter} is not one of the options {sorted(opts)}")
        prompt = build_prompt(row["question"], opts, row["language"], prompt_name)
        completion = build_completion(row["cot"], row["language"], letter, keep_own_answer)
        if target == "reasoning_and_cot":
            completion = with_reasoning(row.get("reasoning"), completion)
    except (KeyError, FormatError) as exc:
        raise FormatError(f"row {rid}: {exc}") from exc
    return SFTExample(id=str(rid), family_id=str(row["family_id"]), language=row["language"], prompt=prompt,
                      completion=[{"role": "assistant", "content": completion}], key=letter,
                      stated=stated_answer(completion, opts))  # the extractor reads outside <think>


def prompt_version(prompt_name: str = "cot") -> str:
    """The tag of the prompt file plus the format version (stored with every run)."""
    return f"{load_prompt(prompt_name, 'en').tag}+{FORMAT_VERSION}"


def example_hash(ex: SFTExample) -> str:
    """sha256 of one example's prompt and completion text (not its id): equal = the same training example."""
    text = json.dumps([ex.prompt, ex.completion], ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def data_hash(examples: Iterable[SFTExample]) -> str:
    """sha256 over the exact formatted examples, in id order: equal hash = identical training data."""
    h = hashlib.sha256(FORMAT_VERSION.encode())
    for ex in sorted(examples, key=lambda e: e.id):
        h.update(json.dumps([ex.id, ex.prompt, ex.completion], ensure_ascii=False, sort_keys=True).encode())
        h.update(b"\n")
    return "sha256:" + h.hexdigest()

"""SFT formatting: one release row -> one conversational prompt/completion example. Both arms use it.

prompt     = the versioned CoT prompt (``medcot/prompts/<name>.yaml``, zh or en): instruction, question and
             the lettered options, as chat messages (system + user);
completion = the row's chain of thought with any final-answer line removed, then exactly one final-answer
             line in the project's fixed form (zh ``答案：X``, en ``Answer: X``), X = the row's ``answer``.

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

FORMAT_VERSION = "sft-format@1"
LETTERS = "ABCDE"
FINAL_LINE = {"zh": "答案：{letter}", "en": "Answer: {letter}"}

# A line that is nothing but a final-answer statement ("答案：B", "**Final answer:** (B).", "Answer - C").
_FINAL_ANSWER_LINE = re.compile(
    r"[ \t>#*_]*(?:(?:final|correct)\s+answer|answer|(?:最终|正确|参考)?答案)[ \t*_]*(?:is|为|是)?[ \t*_]*[:：=\-–—]?"
    r"[ \t*_]*[(（\[【]?[ \t]*[A-E][ \t]*[)）\]】]?[ \t*_]*[.。]?[ \t*_]*",
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


def build_completion(cot: str, language: str, letter: str) -> str:
    body = strip_final_answer_lines(cot or "")
    line = final_answer_line(language, letter)
    return f"{body}\n\n{line}" if body else line


def format_row(row: Mapping[str, Any], prompt_name: str = "cot") -> SFTExample:
    """One release row (``id, family_id, language, question, options, answer, cot``) -> an SFTExample."""
    rid = row.get("id", "?")
    try:
        letter = answer_letter(row["answer"])
        opts = present_options(row["options"])
        if letter not in opts:
            raise FormatError(f"answer {letter} is not one of the options {sorted(opts)}")
        prompt = build_prompt(row["question"], opts, row["language"], prompt_name)
        completion = build_completion(row["cot"], row["language"], letter)
    except (KeyError, FormatError) as exc:
        raise FormatError(f"row {rid}: {exc}") from exc
    return SFTExample(id=str(rid), family_id=str(row["family_id"]), language=row["language"], prompt=prompt,
                      completion=[{"role": "assistant", "content": completion}])


def prompt_version(prompt_name: str = "cot") -> str:
    """The tag of the prompt file plus the format version (stored with every run)."""
    return f"{load_prompt(prompt_name, 'en').tag}+{FORMAT_VERSION}"


def data_hash(examples: Iterable[SFTExample]) -> str:
    """sha256 over the exact formatted examples, in id order: equal hash = identical training data."""
    h = hashlib.sha256(FORMAT_VERSION.encode())
    for ex in sorted(examples, key=lambda e: e.id):
        h.update(json.dumps([ex.id, ex.prompt, ex.completion], ensure_ascii=False, sort_keys=True).encode())
        h.update(b"\n")
    return "sha256:" + h.hexdigest()

"""The review's versioned prompt files (zh and en), in curation/review/prompts/: the LLM judge's review
and panel prompts and the guided-regeneration prompt. Same format and rules as curation/prompts."""
from __future__ import annotations

from pathlib import Path

from medcot.prompts import Prompt, load_prompt

PROMPT_DIR = Path(__file__).resolve().parent / "prompts"


def load(name: str, language: str) -> Prompt:
    return load_prompt(name, language, PROMPT_DIR)

"""The review's versioned prompt files (zh and en), in curation/review/prompts/: the LLM judge's review
and panel prompts and the guided-regeneration prompt. Same format and rules as curation/prompts."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml

from curation.prompts import Prompt

PROMPT_DIR = Path(__file__).resolve().parent / "prompts"


@lru_cache(maxsize=None)
def load(name: str, language: str) -> Prompt:
    path = PROMPT_DIR / f"{name}.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if data.get("name") != name or not isinstance(data.get("version"), int):
        raise ValueError(f"{path}: needs `name: {name}` and an integer `version`")
    lang = data.get(language) or data.get("en")
    if not lang or "user" not in lang:
        raise ValueError(f"{path}: no '{language}' (or 'en') section with a `user` template")
    return Prompt(name=name, version=data["version"], language=language, system=lang.get("system", ""),
                  user=lang["user"])

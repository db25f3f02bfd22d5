"""Versioned prompt files (zh and en). A prompt's tag `name@version` is stored with every output."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

PROMPT_DIR = Path(__file__).resolve().parent / "prompts"


@dataclass(frozen=True, slots=True)
class Prompt:
    name: str
    version: int
    language: str
    system: str
    user: str

    @property
    def tag(self) -> str:
        return f"{self.name}@{self.version}"

    def messages(self, **fields: Any) -> list[dict[str, str]]:
        msgs = [{"role": "system", "content": self.system}] if self.system else []
        msgs.append({"role": "user", "content": self.user.format(**fields)})
        return msgs


@cache
def load_prompt(name: str, language: str, directory: Path = PROMPT_DIR) -> Prompt:
    """The `language` section (else `en`) of `directory/name.yaml`."""
    path = directory / f"{name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no prompt file {path}")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if data.get("name") != name or not isinstance(data.get("version"), int):
        raise ValueError(f"{path}: needs `name: {name}` and an integer `version`")
    lang = data.get(language) or data.get("en")
    if not lang or "user" not in lang:
        raise ValueError(f"{path}: no '{language}' (or 'en') section with a `user` template")
    return Prompt(name=name, version=data["version"], language=language,
                  system=lang.get("system", ""), user=lang["user"])


def format_options(options: dict[str, str]) -> str:
    return "\n".join(f"{letter}. {text}" for letter, text in sorted(options.items()))

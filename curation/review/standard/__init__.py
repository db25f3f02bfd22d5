"""The versioned annotation standard (rubric anchors, difficulty, cognitive level) and the rubric policy check."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from medcot.review_tables import COGNITIVE_LEVELS, DIFFICULTIES, RUBRIC_DIMENSIONS

STANDARD_FILE = Path(__file__).with_name("annotation_standard.yaml")


@dataclass(frozen=True)
class Standard:
    version: str
    data: dict[str, Any]

    def dimension_name(self, dim: str, language: str) -> str:
        return _pick(self.data["dimensions"][dim]["name"], language)

    def anchor(self, dim: str, score: int, language: str) -> str:
        return _pick(self.data["dimensions"][dim]["anchors"][score], language)

    def label_help(self, kind: str, label: str, language: str) -> str:
        return _pick(self.data[kind]["labels"][label], language)

    def for_language(self, language: str) -> dict[str, Any]:
        """What a form shows: names and anchors in the item's language (English for other languages)."""
        return {"version": self.version,
                "dimensions": [{"id": d, "name": self.dimension_name(d, language),
                                "anchors": {s: self.anchor(d, s, language) for s in (0, 1, 2)}}
                               for d in RUBRIC_DIMENSIONS],
                "difficulty": [{"id": x, "help": self.label_help("difficulty", x, language)} for x in DIFFICULTIES],
                "cognitive_level": [{"id": x, "help": self.label_help("cognitive_level", x, language)}
                                    for x in COGNITIVE_LEVELS]}

    def prompt_text(self, language: str) -> str:
        """The anchors as plain text for an automated rater's prompt."""
        lines = []
        for d in self.for_language(language)["dimensions"]:
            lines.append(f"{d['id']} ({d['name']}): " + "; ".join(f"{s} = {a}" for s, a in d["anchors"].items()))
        return "\n".join(lines)


def _pick(texts: Mapping[str, str], language: str) -> str:
    return texts.get(language) or texts["en"]


@lru_cache(maxsize=1)
def load_standard() -> Standard:
    data = yaml.safe_load(STANDARD_FILE.read_text(encoding="utf-8"))
    dims = data.get("dimensions", {})
    if set(dims) != set(RUBRIC_DIMENSIONS) or any(set(v["anchors"]) != {0, 1, 2} for v in dims.values()):
        raise ValueError(f"{STANDARD_FILE}: every rubric dimension needs anchors for 0, 1 and 2")
    if set(data["difficulty"]["labels"]) != set(DIFFICULTIES) or \
            set(data["cognitive_level"]["labels"]) != set(COGNITIVE_LEVELS):
        raise ValueError(f"{STANDARD_FILE}: difficulty / cognitive_level labels do not match the store's")
    return Standard(version=str(data["version"]), data=data)


def policy_problems(scores: Mapping[str, int], min_score: int, required: Mapping[str, int]) -> list[str]:
    """Why these scores are incompatible with approving the item under the rubric policy ([] when compatible)."""
    out = [f"{d} is {scores[d]} (approval needs every dimension >= {min_score})"
           for d in RUBRIC_DIMENSIONS if scores.get(d, 0) < min_score]
    out += [f"{d} is {scores.get(d)} (approval needs {d} = {v})" for d, v in required.items()
            if scores.get(d, 0) < v and scores.get(d, 0) >= min_score]
    return out

"""Several models (issue 14): a stage names the model(s) it uses (`generate.model`, `strikes.models` ...), each
an entry of `llm.models` or the default model (`llm.endpoints` + `llm.model`). A ModelHandle is what a stage
gets: the model's name, the id it sends (the cache keys on it), its client and its own sampling."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TypeVar

from medcot.config import DEFAULT_MODEL, ModelSampling, SamplingConfig
from medcot.llm import LLMClient

S = TypeVar("S", bound=SamplingConfig)
C = TypeVar("C")


@dataclass(frozen=True)
class ModelHandle:
    name: str  # an llm.models name, or "default"
    model: str  # the model id sent to the server (and in every cache key and call record)
    client: LLMClient
    sampling: ModelSampling = dataclasses.field(default_factory=ModelSampling)

    def tune(self, s: S) -> S:
        """A stage's sampling with this model's own values (temperature, top_p) where it sets them."""
        own = {k: v for k, v in dataclasses.asdict(self.sampling).items() if v is not None}
        return dataclasses.replace(s, **own) if own else s

    def tuned(self, cfg: C, *sampling_fields: str) -> C:
        """A stage config whose named sampling fields carry this model's own sampling."""
        return dataclasses.replace(cfg, **{f: self.tune(getattr(cfg, f)) for f in sampling_fields})  # type: ignore[type-var]

    @property
    def label(self) -> str:
        return self.model if self.name == DEFAULT_MODEL else f"{self.name} ({self.model})"

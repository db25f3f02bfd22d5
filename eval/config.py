"""Eval configuration (defaults < YAML < `--set`), loaded with medcot.config.load_config(cls=EvalConfig).

    medcot eval run --config configs/eval/demo.yaml --set release.limit=4
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from medcot.config import ConfigError, LLMConfig, ServerConfig, _build

MODEL_KINDS = ("base", "merged", "lora")


@dataclass
class ModelSpec:
    name: str = field(default="", metadata={"help": "label in reports; also the served name"})
    kind: str = field(default="base", metadata={"help": "base | merged (a full model folder) | lora (an adapter)"})
    path: str = field(default="", metadata={"help": "model folder, merged checkpoint, or LoRA adapter folder"})
    base: str = field(default="", metadata={"help": "lora only: the base model folder the adapter applies to"})
    arm: str = field(default="", metadata={"help": "validated | unvalidated for trained arms ('' = not an arm)"})
    seed: int | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("models[]: every model needs a name")
        if self.kind not in MODEL_KINDS:
            raise ConfigError(f"models[{self.name}].kind must be one of {MODEL_KINDS}, not {self.kind!r}")
        if not self.path:
            raise ConfigError(f"models[{self.name}].path is empty")
        if self.kind == "lora" and not self.base:
            raise ConfigError(f"models[{self.name}]: a lora model needs `base` (the base model folder)")


@dataclass
class ExternalSet:
    name: str = field(default="", metadata={"help": "set name in predictions and reports"})
    path: str = field(default="", metadata={"help": "MCQ file: the seed JSONL (or CSV) schema, or a MedBench-style "
                                                      "JSONL (an `other` object per line, kept as it is)"})
    offset: int = field(default=0, metadata={"help": "skip the first N questions (e.g. ones a demo trained on)"})
    limit: int | None = None
    language: str | None = field(default=None, metadata={
        "help": "zh|en for lines without a `language` field (leaderboard files often have none)"})

    def __post_init__(self) -> None:
        if not self.name or not self.path:
            raise ConfigError("external[]: every set needs `name` and `path`")
        if self.language not in (None, "zh", "en"):
            raise ConfigError(f"external[{self.name}]: language must be zh, en or null, not {self.language!r}")
        if self.offset < 0 or (self.limit is not None and self.limit < 1):
            raise ConfigError(f"external[{self.name}]: offset must be >= 0 and limit >= 1")


@dataclass
class ReleaseSource:
    dir: str = field(default="", metadata={"help": "release folder (Parquet + README configs); '' = none"})
    config: str = "validated"
    split: str = "test"
    limit: int | None = field(default=None, metadata={"help": "evaluate at most N items of the split"})


@dataclass
class EvalSampling:
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 1024
    seed: int | None = None


@dataclass
class BootstrapConfig:
    resamples: int = 2000
    seed: int = 0
    confidence: float = 0.95

    def __post_init__(self) -> None:
        if self.resamples < 100:
            raise ConfigError("bootstrap.resamples must be >= 100")
        if not 0.5 < self.confidence < 1.0:
            raise ConfigError("bootstrap.confidence must be in (0.5, 1)")


@dataclass
class JudgeConfig:
    enabled: bool = field(default=False, metadata={"help": "score CoTs with the LLM judge after generation"})
    model: str = field(default="", metadata={
        "help": "a model name from `models` (served by the eval's own server) or, with `endpoints`, "
                "the model name at those endpoints"})
    endpoints: list[str] = field(default_factory=list, metadata={"help": "external judge server(s); [] = managed"})
    prompt: str = "eval_judge"
    sampling: EvalSampling = field(default_factory=lambda: EvalSampling(temperature=0.0, max_tokens=512))
    max_items: int | None = field(default=None, metadata={"help": "judge at most N items per model"})


@dataclass
class ContaminationConfig:
    """What `eval run` checks every eval item against before it serves any model (eval/contamination.py)."""

    store: str = field(default="", metadata={"help": "curation store (URL or SQLite path) to compare with; '' = none"})
    release: str = field(default="", metadata={"help": "release folder to compare with; '' = release.dir"})
    seeds_from: list[str] = field(default_factory=list, metadata={
        "help": "curation configs whose imported seeds (seeds.files minus seeds.exclude) are compared with"})
    allow_overlap: bool = field(default=False, metadata={
        "help": "evaluate despite overlaps, reporting contaminated items apart (CLI: --allow-overlap)"})


@dataclass
class EvalConfig:
    out_dir: str = "runs/eval"
    release: ReleaseSource = field(default_factory=ReleaseSource)
    external: list[ExternalSet] = field(default_factory=list)
    models: list[ModelSpec] = field(default_factory=list)
    manifest: str = field(default="", metadata={"help": "training manifest.json: its runs are added to models"})
    prefer_merged: bool = field(default=False, metadata={"help": "serve a run's merged model, not its adapter"})
    server: ServerConfig = field(default_factory=ServerConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    sampling: EvalSampling = field(default_factory=EvalSampling)
    prompt: str = "eval_cot"
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    contamination: ContaminationConfig = field(default_factory=ContaminationConfig)
    source: str = ""

    def __post_init__(self) -> None:
        # the shared loader keeps list elements as they come: build the dataclasses here, strictly
        self.models = [_as(ModelSpec, m, f"models[{i}]") for i, m in enumerate(self.models)]
        self.external = [_as(ExternalSet, e, f"external[{i}]") for i, e in enumerate(self.external)]
        names = [m.name for m in self.models]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"models: duplicate name(s) {dup}")


def _as(cls: type, value: Any, where: str) -> Any:
    return value if isinstance(value, cls) else _build(cls, value, where, "eval config")

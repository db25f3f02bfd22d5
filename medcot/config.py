"""Configuration: dataclass defaults < YAML file < command line (`--set section.key=value`).

Unknown keys are errors that name the file and the key. String values may use ${VAR} and
${VAR:-default}, expanded from the environment (so caches and secrets stay out of configs).
"""
from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    pass


def default_cache_dir() -> str:
    return os.environ.get("MEDCOT_CACHE") or str(Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "medcot")


@dataclass
class StoreConfig:
    url: str = field(default="runs/medcot.db", metadata={"help": "SQLAlchemy URL, or a file path for SQLite"})


@dataclass
class ServerConfig:
    managed: bool = field(default=False, metadata={"help": "start/stop a vLLM server ourselves"})
    python: str = field(default="", metadata={"help": "python with vllm; '' = $MEDCOT_VLLM_PYTHON, else the CPU venv"})
    model: str = field(default="", metadata={"help": "model folder or Hub name to serve"})
    served_model_name: str = ""
    host: str = "127.0.0.1"
    port: int = 8011
    max_model_len: int = 2048
    dtype: str = field(default="auto", metadata={"help": "auto = fastest on this CPU (float32 unless bf16 is "
                                                         "native: AVX512_BF16/AMX), or a vLLM --dtype"})
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    startup_timeout_s: float = 600.0
    log_file: str = ""


DEFAULT_MODEL = "default"  # the name of the model `llm.endpoints` + `llm.model` define (a stage's '' means it too)


@dataclass
class ModelSampling:
    """A model's own sampling, applied over the sampling of every stage it serves (None: the stage's value).
    max_tokens stays per stage (it sizes the answer the stage needs)."""

    temperature: float | None = None
    top_p: float | None = None


@dataclass
class ModelConfig:
    """One more model (`llm.models.NAME`): its own OpenAI-compatible server(s) and model id. The connection
    settings it does not name (timeouts, retries, backoff, strategy) are llm's."""

    model: str = field(default="", metadata={"help": "the model id its server serves (required; the cache keys on it)"})
    endpoints: list[str] = field(default_factory=list, metadata={"help": "its base URLs (required), e.g. http://h:8000/v1"})
    api_key_env: str = field(default="", metadata={"help": "env var holding its API key; '' = llm.api_key_env"})
    concurrency: int | None = field(default=None, metadata={"help": "requests in flight; None = llm.concurrency"})
    system_prompt: str = field(default="", metadata={"help": "keep | merge; '' = llm.system_prompt"})
    sampling: ModelSampling = field(default_factory=ModelSampling)


@dataclass
class LLMConfig:
    endpoints: list[str] = field(default_factory=lambda: ["http://127.0.0.1:8011/v1"])
    model: str = ""
    api_key_env: str = field(default="MEDCOT_API_KEY", metadata={"help": "env var holding the API key"})
    concurrency: int = 16
    timeout_s: float = 600.0
    connect_timeout_s: float = 10.0
    max_retries: int = 5
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    strategy: str = field(default="least-busy", metadata={"help": "least-busy | round-robin"})
    system_prompt: str = field(default="keep", metadata={
        "help": "keep | merge: merge moves the system message's instructions into the first user turn "
                "(DeepSeek advises no system prompt for R1 and other reasoning models)"})
    models: dict[str, ModelConfig] = field(default_factory=dict, metadata={
        "help": "more models by name (each its endpoints and model id); stages name them (generate.model, "
                "strikes.models ...); the model above is called 'default'"})

    def __post_init__(self) -> None:
        if self.strategy not in ("least-busy", "round-robin"):
            raise ConfigError(f"llm.strategy must be least-busy or round-robin, not {self.strategy!r}")
        if self.system_prompt not in ("keep", "merge"):
            raise ConfigError(f"llm.system_prompt must be keep or merge, not {self.system_prompt!r}")
        if self.concurrency < 1:
            raise ConfigError("llm.concurrency must be >= 1")
        for name, m in self.models.items():
            _check_model(name, m)
        self.check_distinct_ids()

    def check_distinct_ids(self) -> None:
        """Two models with one model id would share cache entries (the cache keys on the id): refused. Called
        again once a managed server has named the default model."""
        seen: dict[str, str] = {self.model: DEFAULT_MODEL} if self.model else {}
        for name, m in self.models.items():
            if m.model in seen:
                raise ConfigError(f"llm.models.{name}.model: {m.model!r} is also the id of model '{seen[m.model]}' "
                                  f"(each model needs its own id: the response cache keys on it)")
            seen[m.model] = name

    def model_names(self) -> list[str]:
        return [DEFAULT_MODEL, *self.models]

    def for_model(self, name: str) -> LLMConfig:
        """The client settings of one model: 'default' (or '') is this section itself, others override it."""
        if name in ("", DEFAULT_MODEL):
            return dataclasses.replace(self, models={})
        if name not in self.models:
            raise ConfigError(f"unknown model {name!r} (llm.models: {', '.join(self.models) or 'none'})")
        m = self.models[name]
        return dataclasses.replace(self, endpoints=list(m.endpoints), model=m.model,
                                   api_key_env=m.api_key_env or self.api_key_env,
                                   concurrency=m.concurrency or self.concurrency,
                                   system_prompt=m.system_prompt or self.system_prompt, models={})


def _check_model(name: str, m: ModelConfig) -> None:
    where = f"llm.models.{name}"
    if not name or name == DEFAULT_MODEL:
        raise ConfigError(f"llm.models: {name!r} is not a model name ('{DEFAULT_MODEL}' is llm.model itself)")
    if not m.model:
        raise ConfigError(f"{where}.model: required (the model id its server serves)")
    if not m.endpoints or not all(m.endpoints):
        raise ConfigError(f"{where}.endpoints: required (its OpenAI-compatible base URLs)")
    if m.system_prompt not in ("", "keep", "merge"):
        raise ConfigError(f"{where}.system_prompt must be keep, merge or '' (llm's), not {m.system_prompt!r}")
    if m.concurrency is not None and m.concurrency < 1:
        raise ConfigError(f"{where}.concurrency must be >= 1")


@dataclass
class SamplingConfig:
    temperature: float = 0.6
    top_p: float = 0.95
    max_tokens: int = 1024
    seed: int | None = 0


@dataclass
class GenerateConfig:
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    prompt: str = "cot"
    model: str = field(default="", metadata={"help": "the model that writes CoTs (an llm.models name; '' = default)"})
    limit: int | None = field(default=None, metadata={"help": "generate for at most N items (None = all)"})
    truncated_retry_factor: float = field(default=2.0, metadata={
        "help": "a CoT cut at max_tokens is asked again once with this many times the budget (1 = no retry)"})
    keep_truncated: bool = field(default=False, metadata={
        "help": "a CoT still cut after the retry: false = held (never reviewed, counted in the report; a rerun "
                "with a larger budget writes it); true = reviewed as it is (tiny demo models). Empty: always held"})

    def __post_init__(self) -> None:
        if self.truncated_retry_factor < 1:
            raise ConfigError("generate.truncated_retry_factor must be >= 1")


@dataclass
class SeedsConfig:
    files: list[str] = field(default_factory=list)
    per_file_limit: int | None = None
    exclude: list[str] = field(default_factory=list, metadata={
        "help": "files naming seed ids never to import (held-out eval items): .txt (one id a line) or seed JSONL"})


# ---- expansion, specialty, five-strike (issue 3) -------------------------------------------------------
EXPAND_ASPECTS = ["indication", "contraindication", "mechanism", "diagnosis", "next_step", "complication",
                  "numeric_variant", "differential", "adverse_effect"]


# Sampling defaults per use. Subclasses (not default_factory lambdas) so that a partial override in YAML or
# --set (e.g. `strikes.sampling.max_tokens=256`) keeps the other defaults of that use. max_tokens defaults
# leave room for a reasoning model (DeepSeek-R1 thinks inside max_tokens; a cut-off answer is no answer);
# structured outputs end as soon as their JSON is complete, so a large limit costs nothing there.
@dataclass
class FactsSampling(SamplingConfig):
    temperature: float = 0.2
    max_tokens: int = 4096


@dataclass
class QuestionSampling(SamplingConfig):
    temperature: float = 0.8
    max_tokens: int = 4096


@dataclass
class SpecialtySampling(SamplingConfig):
    temperature: float = 0.0
    max_tokens: int = 1024
    seed: int | None = None


@dataclass
class StrikeSampling(SamplingConfig):
    temperature: float = 0.7
    max_tokens: int = 8192
    seed: int | None = field(default=0, metadata={"help": "attempt k uses seed + k (None: unseeded)"})


@dataclass
class CheckSampling(SamplingConfig):
    temperature: float = 0.6
    max_tokens: int = 8192


@dataclass
class ExpandConfig:
    factor: int = field(default=9, metadata={"help": "new questions per seed (9 -> a family of 10)"})
    aspects: list[str] = field(default_factory=lambda: list(EXPAND_ASPECTS),
                               metadata={"help": "aspects rotated over the slots (names in expand_questions.yaml)"})
    facts_prompt: str = "expand_facts"
    questions_prompt: str = "expand_questions"
    facts_sampling: FactsSampling = field(default_factory=FactsSampling)
    questions_sampling: QuestionSampling = field(default_factory=QuestionSampling)
    max_facts: int = field(default=8, metadata={"help": "at most this many key facts (and steps) per seed"})
    generate_cot: bool = field(default=True, metadata={"help": "answer accepted items with a CoT right away"})
    limit: int | None = field(default=None, metadata={"help": "expand at most N families (None = all)"})
    model: str = field(default="", metadata={"help": "the model that writes facts and questions ('' = default)"})
    check_model: str = field(default="", metadata={
        "help": "a second model that answers every new question to cross-check its key ('' = no cross-check; "
                "'default' = llm.model)"})
    check_prompt: str = field(default="strike_direct", metadata={"help": "the answerer prompt of the cross-check"})
    check_sampling: CheckSampling = field(default_factory=CheckSampling)
    check_action: str = field(default="flag", metadata={
        "help": "flag | reject: a question whose cross-check answer differs from its key (or is no answer) is kept "
                "with an `expand_check` event (flag), or stored as a rejected candidate, check `cross_check`"})

    def __post_init__(self) -> None:
        if self.factor < 1:
            raise ConfigError("expand.factor must be >= 1")
        if self.check_action not in ("flag", "reject"):
            raise ConfigError(f"expand.check_action must be flag or reject, not {self.check_action!r}")
        if not self.aspects or len(set(self.aspects)) != len(self.aspects):
            raise ConfigError("expand.aspects must be a non-empty list without repeats")
        if self.max_facts < 1:
            raise ConfigError("expand.max_facts must be >= 1")


@dataclass
class SpecialtyConfig:
    taxonomy: str = field(default="", metadata={"help": "taxonomy YAML; '' = the bundled curation/taxonomy.yaml"})
    prompt: str = "specialty"
    use_subject_map: bool = field(default=True, metadata={"help": "seeds with a mapped source subject skip the LLM"})
    sampling: SpecialtySampling = field(default_factory=SpecialtySampling)
    model: str = field(default="", metadata={"help": "the model that classifies ('' = default)"})

    def __post_init__(self) -> None:
        if self.sampling.max_tokens < 8:
            raise ConfigError("specialty.sampling.max_tokens must be >= 8 (room for the JSON answer)")


@dataclass
class StrikesConfig:
    max_attempts: int = field(default=5, metadata={"help": "attempts before an item is escalated to the panel"})
    templates: list[str] = field(default_factory=lambda: ["strike_direct", "strike_stepwise", "strike_exam"],
                                 metadata={"help": "prompt files rotated over the attempts (>= 3 recommended)"})
    eligible_stages: list[str] = field(
        default_factory=lambda: ["reviewed", "generated"],
        metadata={"help": "item stages that are re-answered; set [reviewed] when the review stage runs first"})
    shuffle_options: bool = field(default=True, metadata={"help": "attempts 2.. show a recorded option permutation"})
    sampling: StrikeSampling = field(default_factory=StrikeSampling)
    round: int = field(default=0, metadata={"help": "> 0: a new round of five strikes (e.g. after an edit)"})
    limit: int | None = field(default=None, metadata={"help": "re-answer at most N items (None = all)"})
    truncated_retry_factor: float = field(default=2.0, metadata={
        "help": "a reply cut at max_tokens is retried once with max_tokens x this (1 = no retry); never a strike"})
    max_truncated: int = field(default=2, metadata={
        "help": "truncated attempts of one item in one run before it is held (not escalated) until a rerun"})
    models: list[str] = field(default_factory=list, metadata={
        "help": "answerer models rotated over the attempts: attempt k uses models[(k-1) % len] ([] = default)"})

    def __post_init__(self) -> None:
        if not 1 <= self.max_attempts <= 20:
            raise ConfigError("strikes.max_attempts must be between 1 and 20")
        if self.truncated_retry_factor < 1:
            raise ConfigError("strikes.truncated_retry_factor must be >= 1")
        if self.max_truncated < 1:
            raise ConfigError("strikes.max_truncated must be >= 1")
        if not self.templates:
            raise ConfigError("strikes.templates must name at least one prompt file")
        from medcot.records import ITEM_STAGES
        bad = [s for s in self.eligible_stages if s not in ITEM_STAGES]
        if bad or not self.eligible_stages:
            raise ConfigError(f"strikes.eligible_stages: unknown or empty {bad} (stages: {', '.join(ITEM_STAGES)})")
        if self.round < 0:
            raise ConfigError("strikes.round must be >= 0")


@dataclass
class RunConfig:
    out_dir: str = "runs/out"
    stages: list[str] = field(default_factory=lambda: ["seeds", "generate", "export"])


@dataclass
class JudgeConfig:
    """The automated reviewer (an LLM judge through the client); its reviews are kind "llm", never expert."""

    personas: list[str] = field(default_factory=lambda: ["judge-a", "judge-b"],
                                metadata={"help": "one automated reviewer per persona (user name llm:<persona>)"})
    temperature: float = 0.3
    max_tokens: int = 400
    seed: int = field(default=0, metadata={"help": "persona i samples with seed + i"})
    attempts: int = field(default=2, metadata={"help": "tries (new seed each) before a judgement is reported failed"})

    def __post_init__(self) -> None:
        if len(set(self.personas)) != len(self.personas) or not all(self.personas):
            raise ConfigError("review.judge.personas must be distinct, non-empty names")
        if self.attempts < 1:
            raise ConfigError("review.judge.attempts must be >= 1")


@dataclass
class PanelConfig:
    panelists_per_item: int = field(default=2, metadata={"help": "independent panelists per escalated item (>= 2)"})
    max_regenerations: int = field(default=2, metadata={"help": "guided regenerations per item before adjudication"})

    def __post_init__(self) -> None:
        if self.panelists_per_item < 2:
            raise ConfigError("review.panel.panelists_per_item must be >= 2 (paper 2.3.4: at least two experts)")
        if self.max_regenerations < 0:
            raise ConfigError("review.panel.max_regenerations must be >= 0")


@dataclass
class ConsensusConfig:
    min_agree: int = field(default=2, metadata={"help": "experts who must agree on the answer AND approve the wording"})
    require_all_binary: bool = field(default=True, metadata={
        "help": "a review approves only if relevance, correctness and sufficiency are all 1"})

    def __post_init__(self) -> None:
        if self.min_agree < 2:
            raise ConfigError("review.consensus.min_agree must be >= 2: an item needs two agreeing experts")


@dataclass
class RubricPolicyConfig:
    """Which rubric scores are compatible with approving an item (an incoherent vote is refused)."""

    min_score: int = field(default=1, metadata={"help": "every dimension must score at least this to approve"})
    required: dict[str, int] = field(default_factory=lambda: {"medical_correctness": 2}, metadata={
        "help": "dimension -> the score it must reach to approve"})

    def __post_init__(self) -> None:
        from medcot.review_tables import RUBRIC_DIMENSIONS
        if self.min_score not in (0, 1, 2):
            raise ConfigError("review.rubric_policy.min_score must be 0, 1 or 2")
        for dim, score in self.required.items():
            if dim not in RUBRIC_DIMENSIONS:
                raise ConfigError(f"review.rubric_policy.required: unknown dimension {dim!r} "
                                  f"(one of {', '.join(RUBRIC_DIMENSIONS)})")
            if score not in (0, 1, 2):
                raise ConfigError(f"review.rubric_policy.required.{dim} must be 0, 1 or 2")


@dataclass
class RoutingConfig:
    """Which reviewers an item goes to (paper 2.3: subject-matter experts), from `medcot review user set-profile`."""

    languages: bool = field(default=True, metadata={
        "help": "only reviewers whose profile languages include the item's language (no languages = reads all)"})
    specialties: bool = field(default=False, metadata={
        "help": "only reviewers whose profile specialties include the item's specialty (no specialties = any)"})
    fallback: str = field(default="any", metadata={
        "help": "any: when nobody fits, assign among all eligible reviewers (warned, logged as routing_fallback); "
                "wait: leave the item short (reported as a shortfall) until someone who fits is added"})

    def __post_init__(self) -> None:
        if self.fallback not in ("any", "wait"):
            raise ConfigError(f"review.routing.fallback must be any or wait, not {self.fallback!r}")


@dataclass
class ReviewConfig:
    """Expert review (paper 2.3): assignment, the web app, panel, consensus, the automated stand-in."""

    reviewers_per_item: int = field(default=2, metadata={"help": "blind reviewers per item (>= 2)"})
    host: str = field(default="127.0.0.1", metadata={"help": "review app bind address"})
    port: int = 8020
    secret_key_env: str = field(default="MEDCOT_REVIEW_SECRET",
                                metadata={"help": "env var holding the session-signing key (required to serve)"})
    session_max_age_s: int = 8 * 3600
    cookie_secure: bool = field(default=False, metadata={"help": "mark cookies Secure (set behind HTTPS)"})
    login_max_failures: int = field(default=5, metadata={
        "help": "failed logins per (account, client address) before each further attempt must wait (backoff)"})
    login_window_s: int = field(default=900, metadata={"help": "failures older than this are forgotten"})
    login_backoff_s: float = field(default=2.0, metadata={
        "help": "first wait after login_max_failures; doubles with every further failure, capped at login_window_s"})
    trusted_proxies: list[str] = field(default_factory=list, metadata={
        "help": "addresses/CIDRs of reverse proxies whose X-Forwarded-For names the client (default: none)"})
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    triage: bool = field(default=False, metadata={
        "help": "an LLM judge reads each item in initial review first; its doubts order the experts' queues "
                "(most doubtful first). It never reviews, approves or counts toward anything"})
    max_active_minutes: float = field(default=20.0, metadata={
        "help": "expert time of one submission is page served -> submit, capped at this (longer = idle)"})
    automated: str = field(default="none", metadata={
        "help": "none | llm: LLM judges stand in for the review and panel steps (demo only; never expert-validated)"})
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    panel: PanelConfig = field(default_factory=PanelConfig)
    consensus: ConsensusConfig = field(default_factory=ConsensusConfig)
    rubric: str = field(default="all", metadata={
        "help": "all: initial reviewers score the five rubric dimensions, difficulty and cognitive level too; "
                "panel: only the panel scores the rubric (the paper's lighter first pass)"})
    rubric_policy: RubricPolicyConfig = field(default_factory=RubricPolicyConfig)

    def __post_init__(self) -> None:
        if self.rubric not in ("all", "panel"):
            raise ConfigError(f"review.rubric must be all or panel, not {self.rubric!r}")
        if self.reviewers_per_item < 2:
            raise ConfigError("review.reviewers_per_item must be >= 2 (blind review by at least two experts)")
        if self.automated not in ("none", "llm"):
            raise ConfigError(f"review.automated must be none or llm, not {self.automated!r}")
        if self.automated == "llm":
            need = max(self.reviewers_per_item, self.panel.panelists_per_item)
            if len(self.judge.personas) < need:
                raise ConfigError(f"review.automated=llm needs >= {need} review.judge.personas "
                                  f"(got {len(self.judge.personas)})")
        if self.consensus.min_agree > min(self.reviewers_per_item, self.panel.panelists_per_item):
            raise ConfigError("review.consensus.min_agree cannot exceed review.reviewers_per_item or "
                              "review.panel.panelists_per_item: no item could ever be approved")
        if not 0 <= self.port <= 65535:
            raise ConfigError("review.port must be 0..65535")
        if self.max_active_minutes <= 0:
            raise ConfigError("review.max_active_minutes must be > 0")
        for proxy in self.trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError as exc:
                raise ConfigError(f"review.trusted_proxies: {proxy!r} is not an IP address or CIDR") from exc


@dataclass
class BuildConfig:
    """The Hugging Face release (`medcot build`): splits by seed family, integrity checks, card, lm-eval task."""

    seed: int = field(default=20250510, metadata={"help": "seed of the family -> split assignment"})
    version: str = field(default="", metadata={
        "help": "release version X.Y.Z (semver); changes.json and CHANGELOG.md compare with the previous release"})
    splits: dict[str, float] = field(default_factory=lambda: {"train": 0.8, "validation": 0.1, "test": 0.1},
                                     metadata={"help": "fraction of seed FAMILIES per split (train/validation/test)"})
    allow_automated_reviewers: bool = field(default=False, metadata={
        "help": "let items approved by automated (LLM/demo) reviewers into `validated`, labelled "
                "'automated, NOT expert-validated' in every row and in the card (demo only)"})
    shard_rows: int = field(default=50000, metadata={"help": "max rows per Parquet shard"})
    repo_id: str = field(default="", metadata={"help": "Hub dataset repo (ORG/NAME) named in the card"})
    pretty_name: str = "medcot: human-verified medical chain-of-thought"
    license: str = field(default="other", metadata={"help": "Hub licence id of the release (rows keep their seed licence)"})

    def __post_init__(self) -> None:
        if set(self.splits) != {"train", "validation", "test"}:
            raise ConfigError(f"build.splits must name exactly train, validation, test (got {sorted(self.splits)})")
        if any(not isinstance(v, (int, float)) or v < 0 for v in self.splits.values()) or \
                abs(sum(self.splits.values()) - 1.0) > 1e-6 or self.splits["train"] <= 0:
            raise ConfigError(f"build.splits must be non-negative fractions summing to 1 with train > 0: {self.splits}")
        if self.shard_rows < 1:
            raise ConfigError("build.shard_rows must be >= 1")
        if self.repo_id and self.repo_id.count("/") != 1:
            raise ConfigError(f"build.repo_id must look like ORG/NAME, not {self.repo_id!r}")


@dataclass
class TrainStageConfig:
    """The `train` stage of `medcot run`: SFT baselines on the release the build stage wrote."""

    config: str = field(default="configs/train/demo.yaml", metadata={"help": "training config (TrainConfig YAML)"})
    matrix: bool = field(default=True, metadata={"help": "run arms x seeds (else one run of the config's arm)"})
    release_dir: str = field(default="", metadata={"help": "release to train on ('' = the build stage's)"})
    out_dir: str = field(default="", metadata={"help": "where runs go ('' = <run.out_dir>/train)"})


@dataclass
class EvalStageConfig:
    """The `eval` stage of `medcot run`: the eval config it runs (see configs/eval/), kept small in the demo."""

    config: str = field(default="configs/eval/demo.yaml", metadata={"help": "eval config (EvalConfig YAML)"})
    max_items: int | None = field(default=None, metadata={"help": "evaluate at most N items per eval set"})
    max_tokens: int | None = field(default=None, metadata={"help": "override the eval config's sampling.max_tokens"})

    def __post_init__(self) -> None:
        if self.max_items is not None and self.max_items < 1:
            raise ConfigError("eval.max_items must be >= 1")


@dataclass
class Config:
    store: StoreConfig = field(default_factory=StoreConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    seeds: SeedsConfig = field(default_factory=SeedsConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    expand: ExpandConfig = field(default_factory=ExpandConfig)
    specialty: SpecialtyConfig = field(default_factory=SpecialtyConfig)
    strikes: StrikesConfig = field(default_factory=StrikesConfig)
    run: RunConfig = field(default_factory=RunConfig)
    review: ReviewConfig = field(default_factory=ReviewConfig)
    build: BuildConfig = field(default_factory=BuildConfig)
    train: TrainStageConfig = field(default_factory=TrainStageConfig)
    eval: EvalStageConfig = field(default_factory=EvalStageConfig)
    source: str = field(default="", metadata={"help": "the YAML file this came from"})

    def __post_init__(self) -> None:
        known = self.llm.model_names()
        for where, name in stage_models(self).items():
            if name and name not in known:
                raise ConfigError(f"{where}: unknown model {name!r} (models: {', '.join(known)}; "
                                  f"'{DEFAULT_MODEL}' is llm.model, define others under llm.models)")


def stage_models(cfg: Config) -> dict[str, str]:
    """Every stage field that names a model -> the name ('' = the default model; for expand.check_model: none)."""
    out = {"generate.model": cfg.generate.model, "expand.model": cfg.expand.model,
           "expand.check_model": cfg.expand.check_model, "specialty.model": cfg.specialty.model}
    out.update({f"strikes.models[{i}]": name for i, name in enumerate(cfg.strikes.models)})
    return out


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_vars(value: str) -> str:
    def repl(m: re.Match[str]) -> str:
        if m.group(1) == "MEDCOT_CACHE" and not os.environ.get("MEDCOT_CACHE"):
            return default_cache_dir()
        return os.environ.get(m.group(1)) or (m.group(2) or "")
    return os.path.expanduser(_VAR.sub(repl, value))


def _build(cls: type, data: Any, where: str, origin: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: '{where or 'top level'}' must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{origin}: unknown key '{_join(where, unknown[0])}' (known: {', '.join(sorted(names))})")
    kwargs = {k: _coerce(hints[k], v, _join(where, k), origin) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{origin}: '{where}': {exc}") from exc


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _coerce(tp: Any, value: Any, where: str, origin: str) -> Any:
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where, origin)
    args = typing.get_args(tp)
    if value is None:
        if type(None) in args:
            return None
        raise ConfigError(f"{origin}: '{where}' must not be null")
    base = next((a for a in args if a is not type(None)), tp) if type(None) in args else tp
    origin_type = typing.get_origin(base) or base
    if isinstance(value, str):
        value = expand_vars(value)
    if origin_type is list:
        if not isinstance(value, list):
            raise ConfigError(f"{origin}: '{where}' must be a list")
        return [expand_vars(v) if isinstance(v, str) else v for v in value]
    if origin_type is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{origin}: '{where}' must be a mapping")
        item_type = (typing.get_args(base) or (str, Any))[1]
        if dataclasses.is_dataclass(item_type):  # e.g. llm.models: name -> ModelConfig
            return {str(k): _build(item_type, v, _join(where, str(k)), origin) for k, v in value.items()}
        return {str(k): expand_vars(v) if isinstance(v, str) else v for k, v in value.items()}
    if origin_type is bool and not isinstance(value, bool):
        raise ConfigError(f"{origin}: '{where}' must be true or false, got {value!r}")
    if origin_type in (int, float) and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ConfigError(f"{origin}: '{where}' must be a number, got {value!r}")
    if origin_type is int and isinstance(value, float) and not value.is_integer():
        raise ConfigError(f"{origin}: '{where}' must be an integer, got {value!r}")
    if origin_type in (int, float, str):
        return origin_type(value)
    return value


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: '{key}' is not a section")
    node[keys[-1]] = value


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects section.key=value, got {item!r}")
        key, raw = item.split("=", 1)
        _set_path(data, key.strip(), yaml.safe_load(raw) if raw.strip() else "")
    return data


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(path: str | Path | None, overrides: list[str] | None = None, cls: type = Config) -> Any:
    """Defaults < YAML < overrides. Errors name the file and the key."""
    data: dict[str, Any] = {}
    origin = "defaults"
    if path is not None:
        origin = str(path)
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"{path}: no such config file") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
        data = loaded or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
    if overrides:
        origin = f"{origin} + --set"
        data = _merge(data, parse_overrides(overrides))
    if "source" in data:
        raise ConfigError(f"{origin}: unknown key 'source'")
    cfg = _build(cls, data, "", origin)
    if hasattr(cfg, "source"):
        cfg.source = str(path or "")
    return cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)

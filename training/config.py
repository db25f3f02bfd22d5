"""Training configuration: dataclass defaults < YAML < ``--set`` (``medcot.config.load_config``).

The ``sft:`` mapping is passed through to TRL's ``SFTConfig``: its keys are checked against SFTConfig's
own fields (unknown keys are errors). A few keys are owned by medcot and rejected there:
``output_dir`` (output.dir), ``seed``/``data_seed`` (top-level ``seed``), and ``completion_only_loss``
false (loss on the completion only is the point of the format). ``bf16``/``fp16`` may be set; left out,
they follow the hardware (bf16 on a bf16-capable GPU, fp32 on CPU), so one config runs on both.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medcot.config import ConfigError, default_cache_dir
from training import import_torch

ARMS = ("validated", "unvalidated")
DESIGNS = ("matched", "pipeline")
DEFAULT_RUNS = 5
DTYPES = ("auto", "bfloat16", "float16", "float32")
RESERVED_SFT_KEYS = {"output_dir": "output.dir", "seed": "the top-level `seed`", "data_seed": "the top-level `seed`"}


def default_model_path() -> str:
    return str(Path(default_cache_dir()) / "models" / "smollm2-135m-instruct")


@functools.lru_cache(maxsize=1)
def sft_field_names() -> frozenset[str]:
    import_torch()
    from trl import SFTConfig
    return frozenset(f.name for f in dataclasses.fields(SFTConfig) if f.init)


TARGETS = ("cot", "reasoning_and_cot")


@dataclass
class DataConfig:
    release_dir: str = field(default="", metadata={"help": "release folder (Parquet + README configs)"})
    arm: str = field(default="validated", metadata={"help": "release config to train on: validated | unvalidated"})
    split: str = field(default="train", metadata={"help": "split of the release config"})
    design: str = field(default="matched", metadata={
        "help": "matrix arms: matched (same item ids, validated vs raw first-pass text) | pipeline (validated vs "
                "raw pipeline output incl. removed items, equal N, matched counts per family)"})
    max_examples: int | None = field(default=None, metadata={
        "help": "cap on training examples (whole families, subsampled with subsample_seed); None = all"})
    subsample_seed: int = field(default=0, metadata={
        "help": "seed of the data subsample (a matrix run's data seed replaces it; recorded)"})
    prompt: str = field(default="cot", metadata={"help": "versioned prompt file (medcot/prompts/NAME.yaml)"})
    target: str = field(default="cot", metadata={
        "help": "what the model learns to write: cot (the expert-validated text) | reasoning_and_cot (the "
                "generator's raw thinking in <think>...</think>, NEVER validated, then the cot; rows without "
                "reasoning are set apart)"})

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ConfigError(f"data.target must be one of {', '.join(TARGETS)}, not {self.target!r}")
        if self.arm not in ARMS:
            raise ConfigError(f"data.arm must be one of {', '.join(ARMS)}, not {self.arm!r}")
        if self.design not in DESIGNS:
            raise ConfigError(f"data.design must be one of {', '.join(DESIGNS)}, not {self.design!r}")
        if self.max_examples is not None and self.max_examples < 1:
            raise ConfigError("data.max_examples must be >= 1 (or null for all)")


@dataclass
class ModelConfig:
    path: str = field(default_factory=default_model_path, metadata={"help": "model folder or Hub name"})
    dtype: str = field(default="auto", metadata={
        "help": "weights dtype: auto (bf16 for LoRA on a bf16 GPU, else fp32) | bfloat16 | float16 | float32"})
    attn_implementation: str | None = field(default=None, metadata={"help": "e.g. sdpa, flash_attention_2"})
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ConfigError(f"model.dtype must be one of {', '.join(DTYPES)}, not {self.dtype!r}")


@dataclass
class LoraConfig:
    full_finetune: bool = field(default=False, metadata={"help": "train every weight instead of a LoRA adapter"})
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
                                      metadata={"help": "module names, or ['all-linear']"})

    def __post_init__(self) -> None:
        if self.r < 1 or self.alpha < 1:
            raise ConfigError("lora.r and lora.alpha must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("lora.dropout must be in [0, 1)")
        if not self.target_modules:
            raise ConfigError("lora.target_modules must not be empty")


@dataclass
class OutputConfig:
    dir: str = field(default="runs/train", metadata={"help": "run folder (a matrix puts one folder per run in it)"})
    merge: bool = field(default=False, metadata={"help": "also save the adapter merged into the base (for vLLM)"})
    merged_dtype: str = field(default="bfloat16", metadata={"help": "dtype of the merged model"})
    plot: bool = field(default=True, metadata={"help": "write the loss curve PNG"})

    def __post_init__(self) -> None:
        if self.merged_dtype not in DTYPES[1:]:
            raise ConfigError(f"output.merged_dtype must be one of {', '.join(DTYPES[1:])}")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


@dataclass
class MatrixConfig:
    """Runs per arm. Every run varies BOTH the training seed and the data-subsample seed: ``runs: R`` gives
    run r the pair (seed + r, data.subsample_seed + r); ``seeds`` lists them instead, each an integer s
    (= the pair (s, data.subsample_seed + s)) or a pair [training seed, data seed]. Neither: 5 runs."""

    arms: list[str] = field(default_factory=lambda: list(ARMS))
    runs: int | None = field(default=None, metadata={"help": "runs per arm (default 5 when seeds is not set)"})
    seeds: list[Any] | None = field(default=None, metadata={
        "help": "per run: a training seed, or [training seed, data seed]; overrides runs"})

    def __post_init__(self) -> None:
        bad = [a for a in self.arms if a not in ARMS]
        if bad or not self.arms or len(set(self.arms)) != len(self.arms):
            raise ConfigError(f"matrix.arms must be distinct values of {', '.join(ARMS)}, got {self.arms}")
        if self.runs is not None and self.runs < 1:
            raise ConfigError(f"matrix.runs must be >= 1, got {self.runs}")
        if self.seeds is not None:
            if not self.seeds or not all(_is_int(s) or (isinstance(s, list) and len(s) == 2 and all(map(_is_int, s)))
                                         for s in self.seeds):
                raise ConfigError(f"matrix.seeds must be integers or [training seed, data seed] pairs, got "
                                  f"{self.seeds}")
            if self.runs is not None and self.runs != len(self.seeds):
                raise ConfigError(f"matrix.runs ({self.runs}) and matrix.seeds ({len(self.seeds)} entries) "
                                  "disagree: set one of them")
            trains = [s if _is_int(s) else s[0] for s in self.seeds]
            if len(set(trains)) != len(trains):
                raise ConfigError(f"matrix.seeds: training seeds must be distinct (they name the runs), got "
                                  f"{self.seeds}")

    def pairs(self, seed: int, data_seed: int) -> list[tuple[int, int]]:
        """(training seed, data seed) of every run, in order (see the class doc)."""
        if self.seeds is None:
            return [(seed + r, data_seed + r) for r in range(self.runs or DEFAULT_RUNS)]
        return [(s, data_seed + s) if _is_int(s) else (s[0], s[1]) for s in self.seeds]


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    matrix: MatrixConfig = field(default_factory=MatrixConfig)
    seed: int = field(default=0, metadata={"help": "training seed (SFTConfig.seed and data_seed)"})
    sft: dict[str, Any] = field(default_factory=dict, metadata={"help": "TRL SFTConfig fields, passed through"})
    source: str = field(default="", metadata={"help": "the YAML file this came from"})

    def __post_init__(self) -> None:
        check_sft_keys(self.sft)


def check_sft_keys(sft: dict[str, Any]) -> None:
    for key, owner in RESERVED_SFT_KEYS.items():
        if key in sft:
            raise ConfigError(f"sft.{key} is set by medcot: use {owner}")
    unknown = sorted(set(sft) - sft_field_names())
    if unknown:
        raise ConfigError(f"unknown key 'sft.{unknown[0]}' (not a field of trl.SFTConfig)")
    if sft.get("completion_only_loss") is False:
        raise ConfigError("sft.completion_only_loss must not be false: the loss is on the completion only")


def load_train_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    from medcot.config import load_config
    return load_config(path, overrides, cls=TrainConfig)


def run_config(base: TrainConfig, arm: str, seed: int, data_seed: int | None = None) -> TrainConfig:
    """The config of one matrix run: the base with ONLY data.arm, seed and data.subsample_seed replaced."""
    if arm not in ARMS:
        raise ConfigError(f"arm must be one of {', '.join(ARMS)}, not {arm!r}")
    cfg = copy.deepcopy(base)
    cfg.data.arm, cfg.seed = arm, seed
    if data_seed is not None:
        cfg.data.subsample_seed = data_seed
    return cfg


def to_dict(cfg: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)

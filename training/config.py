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
DTYPES = ("auto", "bfloat16", "float16", "float32")
RESERVED_SFT_KEYS = {"output_dir": "output.dir", "seed": "the top-level `seed`", "data_seed": "the top-level `seed`"}


def default_model_path() -> str:
    return str(Path(default_cache_dir()) / "models" / "smollm2-135m-instruct")


@functools.lru_cache(maxsize=1)
def sft_field_names() -> frozenset[str]:
    import_torch()
    from trl import SFTConfig
    return frozenset(f.name for f in dataclasses.fields(SFTConfig) if f.init)


@dataclass
class DataConfig:
    release_dir: str = field(default="", metadata={"help": "release folder (Parquet + README configs)"})
    arm: str = field(default="validated", metadata={"help": "release config to train on: validated | unvalidated"})
    split: str = field(default="train", metadata={"help": "split of the release config"})
    max_examples: int | None = field(default=None, metadata={
        "help": "cap on training examples (whole families, subsampled with subsample_seed); None = all"})
    subsample_seed: int = field(default=0, metadata={"help": "seed of the family subsample (recorded)"})
    prompt: str = field(default="cot", metadata={"help": "versioned prompt file (medcot/prompts/NAME.yaml)"})

    def __post_init__(self) -> None:
        if self.arm not in ARMS:
            raise ConfigError(f"data.arm must be one of {', '.join(ARMS)}, not {self.arm!r}")
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


@dataclass
class MatrixConfig:
    arms: list[str] = field(default_factory=lambda: list(ARMS))
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "training seeds per arm"})

    def __post_init__(self) -> None:
        bad = [a for a in self.arms if a not in ARMS]
        if bad or not self.arms or len(set(self.arms)) != len(self.arms):
            raise ConfigError(f"matrix.arms must be distinct values of {', '.join(ARMS)}, got {self.arms}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or not all(
                isinstance(s, int) and not isinstance(s, bool) for s in self.seeds):
            raise ConfigError(f"matrix.seeds must be distinct integers, got {self.seeds}")


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


def run_config(base: TrainConfig, arm: str, seed: int) -> TrainConfig:
    """The config of one matrix run: the base with ONLY data.arm and seed replaced."""
    if arm not in ARMS:
        raise ConfigError(f"arm must be one of {', '.join(ARMS)}, not {arm!r}")
    cfg = copy.deepcopy(base)
    cfg.data.arm, cfg.seed = arm, seed
    return cfg


def to_dict(cfg: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)

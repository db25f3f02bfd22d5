"""One SFT run: TRL ``SFTTrainer`` + PEFT LoRA (or full fine-tuning) on one arm of a release.

    medcot train --config configs/train/demo.yaml --set data.release_dir=runs/demo/release
    accelerate launch --config_file configs/train/accelerate/multi_gpu.yaml -m training.train \\
        --config configs/train/qwen7b-lora.yaml --set data.release_dir=/data/release

Outputs in the run folder: ``adapter/`` (LoRA; ``model/`` for full fine-tuning), ``merged/`` (when
``output.merge``), ``training_log.json`` (config, data, metrics incl. tokens/s, TRL's log history),
``loss.png``. Precision follows the hardware unless ``sft.bf16``/``sft.fp16`` say otherwise.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from training import import_torch
from training.config import TrainConfig, to_dict
from training.data import ArmData, ArmPool, equal_selections, format_pool, load_split

import_torch()  # before transformers/trl/peft load it (see training.import_torch)

LOG_NAME = "training_log.json"
SFT_DEFAULTS: dict[str, Any] = {"report_to": "none", "save_strategy": "no", "logging_steps": 1,
                                "include_num_input_tokens_seen": "non_padding", "disable_tqdm": True}


@dataclass(frozen=True, slots=True)
class Hardware:
    device: str  # cuda | mps | cpu
    gpus: int
    bf16: bool


@dataclass
class RunResult:
    """What one run produced (the matrix manifest copies it)."""

    arm: str
    seed: int
    n_examples: int
    n_families: int
    data_hash: str
    fingerprint: str
    output_dir: str
    adapter_dir: str | None
    model_dir: str | None
    merged_dir: str | None
    log_json: str
    loss_png: str | None
    metrics: dict[str, Any] = field(default_factory=dict)
    skipped: bool = False
    data_seed: int | None = None  # data.subsample_seed of the run (None in logs written before it was recorded)


def detect_hardware() -> Hardware:
    import torch
    if torch.cuda.is_available():
        return Hardware("cuda", torch.cuda.device_count(), bool(torch.cuda.is_bf16_supported()))
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return Hardware("mps", 0, False)
    return Hardware("cpu", 0, False)


def precision_args(sft: dict[str, Any], hw: Hardware) -> dict[str, Any]:
    """bf16/fp16 from the hardware unless the config sets them; CPU-only machines train on the CPU."""
    out: dict[str, Any] = {}
    if "bf16" not in sft and "fp16" not in sft:
        out = {"bf16": hw.bf16, "fp16": hw.device == "cuda" and not hw.bf16}
    if hw.device == "cpu" and "use_cpu" not in sft:
        out["use_cpu"] = True
    return out


def weights_dtype(cfg: TrainConfig, hw: Hardware) -> str:
    """auto: bf16 weights for LoRA on a bf16 GPU; fp32 otherwise (full FT keeps fp32 master weights)."""
    if cfg.model.dtype != "auto":
        return cfg.model.dtype
    return "bfloat16" if hw.bf16 and not cfg.lora.full_finetune else "float32"


def fingerprint(cfg: TrainConfig, data_hash: str) -> str:
    """Identifies a run: the resolved config (minus its source file) and the exact data."""
    body = {k: v for k, v in to_dict(cfg).items() if k != "source"}
    text = json.dumps([body, data_hash], sort_keys=True, ensure_ascii=False, default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def run_name(arm: str, seed: int) -> str:
    return f"{arm}-seed{seed}"


def load_tokenizer(cfg: TrainConfig) -> Any:
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(cfg.model.path, trust_remote_code=cfg.model.trust_remote_code)


def max_length(cfg: TrainConfig) -> int | None:
    from trl import SFTConfig
    return cfg.sft.get("max_length", SFTConfig.__dataclass_fields__["max_length"].default)


def load_pools(cfg: TrainConfig, arms: list[str], tokenizer: Any) -> dict[str, ArmPool]:
    """Each arm's split, formatted and measured in tokens (rows that cannot be trained are set apart)."""
    d = cfg.data
    return {arm: format_pool(arm, load_split(d.release_dir, arm, d.split), d.prompt, tokenizer, max_length(cfg),
                             d.target) for arm in arms}


def prepare_data(cfg: TrainConfig, tokenizer: Any) -> ArmData:
    """The arm's usable rows, capped at data.max_examples by whole families."""
    pools = load_pools(cfg, [cfg.data.arm], tokenizer)
    return equal_selections(pools, cfg.data.max_examples, cfg.data.subsample_seed)[cfg.data.arm]


def sft_args(cfg: TrainConfig, run_dir: Path, hw: Hardware) -> Any:
    from trl import SFTConfig
    kwargs = {**SFT_DEFAULTS, **precision_args(cfg.sft, hw), **cfg.sft}
    init = {"dtype": weights_dtype(cfg, hw), "trust_remote_code": cfg.model.trust_remote_code}
    if cfg.model.attn_implementation:
        init["attn_implementation"] = cfg.model.attn_implementation
    kwargs["model_init_kwargs"] = {**init, **(cfg.sft.get("model_init_kwargs") or {})}
    return SFTConfig(output_dir=str(run_dir / "trainer"), seed=cfg.seed, data_seed=cfg.seed, **kwargs)


def peft_config(cfg: TrainConfig) -> Any:
    if cfg.lora.full_finetune:
        return None
    from peft import LoraConfig
    targets = cfg.lora.target_modules
    return LoraConfig(task_type="CAUSAL_LM", r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules="all-linear" if targets == ["all-linear"] else list(targets))


def build_trainer(cfg: TrainConfig, data: ArmData, run_dir: Path, hw: Hardware, tokenizer: Any = None) -> Any:
    """The SFTTrainer; fails if TRL's preparation dropped any example (the arms would no longer be equal)."""
    import datasets
    from trl import SFTTrainer
    train_ds = datasets.Dataset.from_list(data.rows())
    trainer = SFTTrainer(model=cfg.model.path, args=sft_args(cfg, run_dir, hw), train_dataset=train_ds,
                         processing_class=tokenizer or load_tokenizer(cfg), peft_config=peft_config(cfg))
    if len(trainer.train_dataset) != data.selection.n:
        raise RuntimeError(f"TRL kept {len(trainer.train_dataset)} of {data.selection.n} examples after "
                           "tokenization: the run would not have the planned N")
    return trainer


def _snapshot(model: Any, limit: int = 8) -> dict[str, Any]:
    """Copies of a few trainable tensors, to prove afterwards that training changed them."""
    out = {}
    for name, p in model.named_parameters():
        if p.requires_grad and p.numel() > 0:
            out[name] = p.detach().float().cpu().clone()
            if len(out) >= limit:
                break
    return out


def _max_change(model: Any, before: dict[str, Any]) -> float | None:
    params = dict(model.named_parameters())
    deltas = [(params[n].detach().float().cpu() - t).abs().max().item() for n, t in before.items()
              if n in params and params[n].shape == t.shape]
    return max(deltas) if deltas else None


def train_one(cfg: TrainConfig, run_dir: str | Path | None = None, data: ArmData | None = None,
              resume: bool = True) -> RunResult:
    """Train one run into ``run_dir`` (default ``<output.dir>/<arm>-seed<seed>``, as in a matrix).
    A finished run with the same fingerprint is kept (``resume``)."""
    run_dir = Path(run_dir or Path(cfg.output.dir) / run_name(cfg.data.arm, cfg.seed))
    tokenizer = load_tokenizer(cfg)
    data = data or prepare_data(cfg, tokenizer)
    fp = fingerprint(cfg, data.hash)
    if resume and (done := finished_result(cfg, run_dir, data)) is not None:
        return done
    if is_main_process():
        (run_dir / LOG_NAME).unlink(missing_ok=True)  # a crash must not leave an older run's record behind
    hw = detect_hardware()
    trainer = build_trainer(cfg, data, run_dir, hw, tokenizer)
    before = _snapshot(trainer.model)
    start = time.perf_counter()
    output = trainer.train()
    metrics = _metrics(trainer, output, time.perf_counter() - start, _max_change(trainer.model, before))
    result = _result(cfg, data, fp, run_dir, _save(cfg, trainer, run_dir), metrics)
    if trainer.is_world_process_zero():
        _finish(cfg, result, trainer.state.log_history)
        write_log(result, cfg, data, hw, trainer.state.log_history)
    return result


def _finish(cfg: TrainConfig, result: RunResult, history: list[dict[str, Any]]) -> None:
    """Main process only: the merged model and the loss curve."""
    run_dir = Path(result.output_dir)
    with contextlib.suppress(OSError):
        (run_dir / "trainer").rmdir()  # TRL's output_dir: empty unless sft.save_strategy saves checkpoints
    if result.adapter_dir and cfg.output.merge:
        result.merged_dir = str(merge_adapter(cfg.model.path, result.adapter_dir, run_dir / "merged",
                                              cfg.output.merged_dtype, cfg.model.trust_remote_code))
    if cfg.output.plot:
        result.loss_png = str(plot_loss(history, run_dir / "loss.png", f"{cfg.data.arm} seed {cfg.seed}"))


def _metrics(trainer: Any, output: Any, wall: float, change: float | None) -> dict[str, Any]:
    history = trainer.state.log_history
    losses = [h["loss"] for h in history if "loss" in h]
    runtime = float(output.metrics.get("train_runtime", wall))
    tokens = int(trainer.state.num_input_tokens_seen or 0)
    trainable = sum(getattr(p, "ds_numel", p.numel()) for p in trainer.model.parameters() if p.requires_grad)
    return {"train_loss": float(output.training_loss), "first_loss": losses[0] if losses else None,
            "final_loss": losses[-1] if losses else None, "steps": int(output.global_step),
            "epochs": float(trainer.state.epoch or 0.0), "train_runtime_s": round(runtime, 3),
            "tokens_trained": tokens, "tokens_per_s": round(tokens / runtime, 2) if runtime > 0 else None,
            "samples_per_s": output.metrics.get("train_samples_per_second"),
            "trainable_params": int(trainable), "max_weight_change": change}


def _save(cfg: TrainConfig, trainer: Any, run_dir: Path) -> dict[str, str | None]:
    target = run_dir / ("model" if cfg.lora.full_finetune else "adapter")
    trainer.save_model(str(target))
    if trainer.is_world_process_zero():
        trainer.processing_class.save_pretrained(str(target))
    key = "model_dir" if cfg.lora.full_finetune else "adapter_dir"
    return {key: str(target)}


def merge_adapter(base_path: str, adapter_dir: str | Path, out_dir: Path, dtype: str = "bfloat16",
                  trust_remote_code: bool = False) -> Path:
    """The base model with the LoRA adapter folded in, saved as a plain model folder (vLLM can serve it)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=getattr(torch, dtype),
                                                trust_remote_code=trust_remote_code)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(str(out_dir))
    AutoTokenizer.from_pretrained(str(adapter_dir)).save_pretrained(str(out_dir))
    return out_dir


def plot_loss(history: list[dict[str, Any]], path: Path, title: str) -> Path:
    return plot_losses({"": history}, path, title)


def plot_losses(histories: dict[str, list[dict[str, Any]]], path: Path, title: str) -> Path:
    """Training loss per logged step, one line per run (matplotlib Agg, no display needed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    for label, history in histories.items():
        points = [(h["step"], h["loss"]) for h in history if "loss" in h and "step" in h]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3, label=label or None)
    ax.set(xlabel="step", ylabel="training loss (completion tokens)", title=title)
    ax.grid(alpha=0.3)
    if len(histories) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _result(cfg: TrainConfig, data: ArmData, fp: str, run_dir: Path, saved: dict[str, str | None],
            metrics: dict[str, Any]) -> RunResult:
    return RunResult(arm=cfg.data.arm, seed=cfg.seed, n_examples=data.selection.n,
                     n_families=data.selection.families, data_hash=data.hash, fingerprint=fp, output_dir=str(run_dir),
                     adapter_dir=saved.get("adapter_dir"), model_dir=saved.get("model_dir"),
                     merged_dir=saved.get("merged_dir"), log_json=str(run_dir / LOG_NAME), loss_png=None,
                     metrics=metrics, data_seed=cfg.data.subsample_seed)


def write_log(result: RunResult, cfg: TrainConfig, data: ArmData, hw: Hardware,
              history: list[dict[str, Any]]) -> Path:
    from training.format import prompt_version
    log = {"status": "done", "result": asdict(result), "config": to_dict(cfg),
           "selection": asdict(data.selection) | {"indices": None}, "ids": [ex.id for ex in data.examples],
           "prompt_version": prompt_version(cfg.data.prompt), "hardware": asdict(hw), "log_history": history}
    path = Path(result.log_json)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(log, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def is_main_process() -> bool:
    """Rank 0 of a distributed launch (accelerate/torchrun set RANK), or a plain single process."""
    return int(os.environ.get("RANK", "0")) == 0


def finished_result(cfg: TrainConfig, run_dir: Path, data: ArmData) -> RunResult | None:
    """The stored result of a finished run with the same config and data whose outputs still exist."""
    fp = fingerprint(cfg, data.hash)
    path = run_dir / LOG_NAME
    if not path.is_file():
        return None
    try:
        log = json.loads(path.read_text(encoding="utf-8"))
        result = RunResult(**log["result"])
    except (ValueError, KeyError, TypeError):
        return None
    outputs = [result.adapter_dir, result.model_dir, result.merged_dir]
    if log.get("status") != "done" or result.fingerprint != fp or not all(Path(o).is_dir() for o in outputs if o):
        return None
    result.skipped = True
    return result


def main(argv: list[str] | None = None) -> None:
    """``python -m training.train --config C [--set k=v ...]`` (what ``accelerate launch`` runs)."""
    import argparse

    from medcot.config import ConfigError
    from training.format import FormatError
    parser = argparse.ArgumentParser(description="medcot: one SFT run (see training/README.md)")
    parser.add_argument("--config", required=True)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--matrix", action="store_true", help="run arms x seeds and write manifest.json")
    parser.add_argument("--only", action="append", default=None, metavar="NAME",
                        help="with --matrix: train only this run (e.g. validated-seed1); repeatable")
    args = parser.parse_args(argv)
    try:
        _main(args)
    except (ConfigError, FormatError) as exc:
        raise SystemExit(f"error: {exc}") from None


def _main(args: Any) -> None:
    from training.config import load_train_config
    cfg = load_train_config(args.config, args.overrides)
    if args.matrix:
        from training.matrix import run_matrix
        manifest = run_matrix(cfg, only=args.only)
        if is_main_process():
            print(json.dumps({"manifest": manifest["path"], "runs": [r["name"] for r in manifest["runs"]]}))
    else:
        print(json.dumps(asdict(train_one(cfg)), indent=2, default=str))


if __name__ == "__main__":
    main()

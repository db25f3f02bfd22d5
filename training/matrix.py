"""The baseline matrix: arms {validated, unvalidated} x runs, equal N, identical hyperparameters.

    medcot train matrix --config configs/train/demo.yaml --set data.release_dir=runs/demo/release

Every run's config is the base config with ONLY ``data.arm``, ``seed`` and ``data.subsample_seed`` replaced
(``run_config``). Runs vary BOTH seeds: run r of every arm has the pair (training seed, data seed) from
``matrix`` (``runs: R`` or ``seeds``; ``TrainConfig.matrix.pairs``), so run-to-run variance includes which
training examples were drawn, not only the training randomness. For each data seed both arms are selected
together by ``data.design`` (``training.data``: ``matched`` = same item ids, validated vs raw first-pass
text; ``pipeline`` = validated vs raw pipeline output, matched counts per family). A finished run (same
config and data fingerprint, outputs present) is not trained again.

``<output.dir>/manifest.json`` -- the contract with the evaluation code. Schema (version 2)::

    {
      "schema": "medcot.train.manifest/2",
      "created": "2026-11-22T10:00:00+00:00",          # UTC, ISO 8601
      "config": "configs/train/demo.yaml",             # the YAML the matrix came from ('' = defaults)
      "base_config": {...},                            # the resolved base TrainConfig (dataclasses.asdict)
      "release_dir": "runs/demo/release",              # the release the data came from
      "split": "train",                                # the split trained on
      "design": "matched",                             # data.design
      "base_model": "/path/or/hub-name",               # model.path: what adapters apply to
      "full_finetune": false,
      "prompt": "cot",                                 # medcot/prompts/<prompt>.yaml, used for zh and en
      "prompt_version": "cot@1+sft-format@2",          # prompt file tag + completion format version
      "n_per_arm": 120,                                # N: training examples of EVERY run
      "seed_pairs": [[0, 0], [1, 1]],                  # (training seed, data seed) of run r, same in each arm
      "arms": {                                        # one entry per arm
        "validated": {"source_config": "validated",    # the release config the rows come from
                      "rows": 124, "available": 120,   # rows in the split; usable rows for this design
                      "excluded": {"prompt_fills_max_length": 4},  # reason -> rows left out
                      "n": 120,
                      "selections": [                  # one per data seed (see training.data.Selection)
                        {"data_seed": 0, "n": 120, "families": 12, "subsampled": false,
                         "shared_ids": 120,            # selected ids the other arm trains on too
                         "identical_examples": 75,     # same prompt + completion text in the other arm
                         "own_answer": {"agree": 120, "disagree": 0, "none": 0, "rate": 1.0},
                         "completions_truncated": 3, "data_hash": "sha256:...",
                         "families_matched": null, "filled_from_other_families": null}]},  # pipeline only
        "unvalidated": {...}
      },
      "seeds": [0, 1],                                 # training seeds (run names)
      "runs": [                                        # arms x runs, arm-major order
        {
          "name": "validated-seed0",                   # also the run folder's name
          "arm": "validated", "seed": 0, "data_seed": 0,
          "n_examples": 120, "n_families": 12,
          "data_hash": "sha256:...",                   # sha256 of the formatted examples of this run
          "fingerprint": "sha256:...",                 # config + data: equal fingerprint = identical run
          "output_dir": ".../validated-seed0",
          "adapter_dir": ".../validated-seed0/adapter",  # LoRA adapter + tokenizer (null for full FT)
          "model_dir": null,                             # full fine-tuned model (null for LoRA)
          "merged_dir": ".../validated-seed0/merged",    # base + adapter merged, servable by vLLM (or null)
          "serve_dir": ".../validated-seed0/merged",     # merged_dir or model_dir: a plain model folder, or null
          "log_json": ".../validated-seed0/training_log.json",
          "loss_png": ".../validated-seed0/loss.png",    # or null
          "metrics": {"train_loss": 1.9, "first_loss": 2.3, "final_loss": 1.7, "steps": 8, "epochs": 0.5,
                      "train_runtime_s": 20.1, "tokens_trained": 9000, "tokens_per_s": 448.0,
                      "samples_per_s": 1.6, "trainable_params": 921600, "max_weight_change": 0.003},
          "reused": false                              # true when a finished earlier run was kept
        }
      ]
    }

Beside it: ``loss_curves.png`` (every run's training loss). Paths are as given in the config (relative
paths are relative to the working directory of the run).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from medcot.config import ConfigError
from training.config import TrainConfig, run_config, to_dict
from training.data import ARM_CONFIGS, ArmData, select_arms
from training.train import (
    finished_result,
    is_main_process,
    load_pools,
    load_tokenizer,
    plot_losses,
    run_name,
    train_one,
)

MANIFEST_SCHEMA = "medcot.train.manifest/2"
Selections = dict[int, dict[str, ArmData]]  # data seed -> arm -> its data


@dataclass
class PlannedRun:
    name: str
    cfg: TrainConfig
    data: ArmData
    run_dir: Path


def seed_pairs(base: TrainConfig) -> list[tuple[int, int]]:
    return base.matrix.pairs(base.seed, base.data.subsample_seed)


def load_arms(base: TrainConfig) -> Selections:
    """Both arms selected by data.design for every data seed of the matrix (equal N everywhere)."""
    pools = load_pools(base, list(ARM_CONFIGS), load_tokenizer(base))
    return {d: select_arms(pools, base.data.design, base.data.max_examples, d)
            for d in dict.fromkeys(d for _, d in seed_pairs(base))}


def plan(base: TrainConfig, arms: Selections | None = None) -> list[PlannedRun]:
    arms = arms or load_arms(base)
    root = Path(base.output.dir)
    return [PlannedRun(run_name(arm, seed), run_config(base, arm, seed, data_seed), arms[data_seed][arm],
                       root / run_name(arm, seed))
            for arm in base.matrix.arms for seed, data_seed in seed_pairs(base)]


def run_matrix(base: TrainConfig, resume: bool = True, only: list[str] | None = None) -> dict[str, Any]:
    """Train every run of the plan (one after the other) and write ``manifest.json``; returns the manifest.

    ``only``: train just these runs (one launch per run on a cluster); the other runs enter the manifest
    only if they finished earlier. Rerunning without ``only`` then collects everything without retraining.
    """
    arms = load_arms(base)
    planned = plan(base, arms)
    unknown = sorted(set(only or []) - {p.name for p in planned})
    if unknown:
        raise ConfigError(f"--only {unknown[0]!r} is not a run of this matrix ({', '.join(p.name for p in planned)})")
    runs = []
    for p in planned:
        if only is not None and p.name not in only:
            result = finished_result(p.cfg, p.run_dir, p.data)
        else:
            print(f"== train {p.name}: N={p.data.selection.n}, data seed {p.cfg.data.subsample_seed}", flush=True)
            result = train_one(p.cfg, p.run_dir, p.data, resume=resume)
        if result is not None:
            runs.append(_run_entry(p.name, result))
        if is_main_process():  # after every run: a crash leaves a valid, partial manifest
            write_manifest(base, arms, runs)
    if is_main_process() and runs and base.output.plot:
        plot_matrix(base, runs)
    return manifest(base, arms, runs) | {"path": str(manifest_path(base))}


def plot_matrix(base: TrainConfig, runs: list[dict[str, Any]]) -> Path:
    """Every run's loss curve in one figure: ``<output.dir>/loss_curves.png``."""
    histories = {r["name"]: json.loads(Path(r["log_json"]).read_text(encoding="utf-8"))["log_history"] for r in runs}
    return plot_losses(histories, Path(base.output.dir) / "loss_curves.png", f"SFT loss, N={runs[0]['n_examples']}")


def _run_entry(name: str, result: Any) -> dict[str, Any]:
    entry = {"name": name, **asdict(result)}
    entry["reused"] = entry.pop("skipped")
    entry["serve_dir"] = result.merged_dir or result.model_dir
    return entry


def manifest(base: TrainConfig, arms: Selections, runs: list[dict[str, Any]]) -> dict[str, Any]:
    from training.format import prompt_version
    sizes = {a.selection.n for per_seed in arms.values() for a in per_seed.values()}
    assert len(sizes) == 1, f"arms differ in size: {sizes}"
    pairs = seed_pairs(base)
    return {"schema": MANIFEST_SCHEMA, "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "config": base.source, "base_config": to_dict(base), "release_dir": base.data.release_dir,
            "split": base.data.split, "design": base.data.design, "base_model": base.model.path,
            "full_finetune": base.lora.full_finetune, "prompt": base.data.prompt,
            "prompt_version": prompt_version(base.data.prompt), "n_per_arm": sizes.pop(),
            "seed_pairs": [list(p) for p in pairs],
            "arms": {arm: _arm_entry(arm, [(d, arms[d][arm]) for d in arms]) for arm in base.matrix.arms},
            "seeds": [t for t, _ in pairs], "runs": runs}


_SELECTION_KEYS = ("n", "families", "subsampled", "shared_ids", "identical_examples", "own_answer",
                   "completions_truncated", "families_matched", "filled_from_other_families")


def _arm_entry(arm: str, per_seed: list[tuple[int, ArmData]]) -> dict[str, Any]:
    """Pool facts (the same for every data seed) and one selection summary per data seed."""
    first = per_seed[0][1].selection
    return {"source_config": arm, "design": first.design, "rows": first.rows, "available": first.available,
            "excluded": first.excluded, "n": first.n,
            "selections": [{"data_seed": d, **{k: getattr(a.selection, k) for k in _SELECTION_KEYS},
                            "data_hash": a.hash} for d, a in per_seed]}


def manifest_path(base: TrainConfig) -> Path:
    return Path(base.output.dir) / "manifest.json"


def write_manifest(base: TrainConfig, arms: Selections, runs: list[dict[str, Any]]) -> dict[str, Any]:
    data = manifest(base, arms, runs)
    path = manifest_path(base)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)
    data["path"] = str(path)
    return data

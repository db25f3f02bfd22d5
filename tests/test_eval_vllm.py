"""End to end on the real vLLM CPU server: base model + two LoRA adapters served by ONE server
(--enable-lora), CoT answers for a tiny release's test split, judge, rerun from cache, compare, submit."""
from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path

import pytest
from eval_helpers import ITEMS, make_manifest, make_release

from eval.compare import compare
from eval.config import EvalConfig
from eval.records import JudgeScore, Prediction, read_records
from eval.run import run_eval
from eval.submit import submit
from medcot.config import default_cache_dir, load_config
from medcot.server import CPU_ENV, CPU_EXTRA_ARGS

MODEL = Path(default_cache_dir()) / "models" / "smollm2-135m-instruct"


def _adapter(out: Path, seed: int) -> Path:
    """A LoRA adapter (r=8, q_proj/v_proj) with random, non-zero weights: untrained but really different."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(MODEL), dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                                  init_lora_weights=False, task_type="CAUSAL_LM"))
    peft_model.save_pretrained(str(out))
    return out


@pytest.mark.vllm
def test_eval_end_to_end_with_lora_on_vllm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not (MODEL / "config.json").is_file():
        pytest.fail(f"the converted model {MODEL} is missing: run `make test` (or `make model`)", pytrace=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    adapters = {"validated-s0": str(_adapter(tmp_path / "train" / "v0", 1)),
                "unvalidated-s0": str(_adapter(tmp_path / "train" / "u0", 2))}
    manifest = make_manifest(tmp_path / "train" / "manifest.json", str(MODEL), adapters)
    release = make_release(tmp_path / "release", ITEMS[1:3])  # one en, one zh
    data = {"out_dir": str(tmp_path / "eval"), "release": {"dir": str(release)}, "manifest": str(manifest),
            "models": [{"name": "base", "kind": "base", "path": str(MODEL)}],
            "server": {"managed": True, "port": 0, "max_model_len": 2048, "extra_args": list(CPU_EXTRA_ARGS),
                       "env": dict(CPU_ENV), "startup_timeout_s": 600},
            "llm": {"concurrency": 16, "timeout_s": 300, "max_retries": 1},
            "sampling": {"temperature": 0.0, "max_tokens": 64}, "bootstrap": {"resamples": 500},
            "judge": {"enabled": True, "model": "base", "max_items": 1, "sampling": {"max_tokens": 160}}}
    (tmp_path / "eval.yaml").write_text(json.dumps(data))
    cfg = load_config(tmp_path / "eval.yaml", cls=EvalConfig)

    results = run_eval(cfg, progress=False)
    out = Path(cfg.out_dir)
    assert list(results["models"]) == ["base", "validated-s0", "unvalidated-s0"]
    (server_stats,) = results["llm"].values()                  # ONE server for the base and both adapters
    # 3 models x 2 items + 3 judge calls (two models may write the same CoT: then the judge call is cached)
    assert server_stats["requests"] + server_stats["cache_hits"] == 6 + 3 and server_stats["failures"] == 0
    assert server_stats["by_stage"]["eval"]["requests"] == 6
    log = next((out / "logs").glob("vllm-*.log")).read_text(errors="replace")
    assert "--enable-lora" in log and "validated-s0=" in log
    preds = {m: read_records(out / "predictions" / f"{m}.jsonl", Prediction) for m in results["models"]}
    for m, rows in preds.items():
        assert [r.id for r in rows] == ["q2", "q3"] and all(r.response.strip() for r in rows), m
        assert all((r.prediction is None) == r.matched_by.startswith("none:") for r in rows)
        test = results["models"][m]["sets"]["test"]
        assert 0 <= test["accuracy_ci_low"] <= test["accuracy"] <= test["accuracy_ci_high"] <= 1
        assert 0 <= test["no_answer_rate"] <= 1
    assert [r.response for r in preds["validated-s0"]] != [r.response for r in preds["base"]]  # the adapter is used
    judged = {m: read_records(out / "judge" / f"{m}.jsonl", JudgeScore) for m in results["models"]}
    assert all(len(v) == 1 for v in judged.values())
    assert sum(j.error is None for v in judged.values() for j in v) >= 1   # structured output parses

    start = time.perf_counter()
    again = run_eval(cfg, progress=False)                       # all from the cache: no server start
    assert time.perf_counter() - start < 60
    assert all(s["requests"] == 0 and s["cache_hits"] == 9 for s in again["llm"].values())

    report = compare(str(manifest), str(out), str(out / "comparison"), cfg.bootstrap)
    assert Path(report["report"]).is_file() and (out / "comparison" / "accuracy_ci.png").is_file()
    assert report["sets"][0]["headline"]["a"]["n_items"] == 2 and report["sets"][0]["runs"][0]["n"] == 2
    sub = submit(out / "predictions" / "validated-s0.jsonl", "medbench", out / "sub.zip")
    with zipfile.ZipFile(sub["output"]) as zf:
        assert zf.namelist() == ["test.jsonl"]

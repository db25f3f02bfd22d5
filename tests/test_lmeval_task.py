"""The release's lm-evaluation-harness tasks, run by the real `lm_eval` CLI against the real vLLM CPU server:
generate-until CoT through local-chat-completions (medcot's extractor as the filter, agreeing item by item
with `medcot eval extract`), and the multiple-choice log-likelihood variant through local-completions."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import model_dir

from dataset_builder.build import build_release
from dataset_builder.lmeval_utils import NO_ANSWER
from dataset_builder.synthetic import SyntheticSpec, make_store
from medcot.config import BuildConfig

pytestmark = pytest.mark.vllm
LIMIT = 3


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("lmeval-release")
    store = make_store(str(tmp / "store.db"), SyntheticSpec(items=60, seed=5, zh_share=0.5))
    # a small store has few seed families; a test-heavy split keeps the test split non-empty under hash splits
    splits = {"train": 0.4, "validation": 0.1, "test": 0.5}
    result = build_release(store, BuildConfig(splits=splits), tmp / "release")
    store.close()
    assert result.counts["validated"]["test"] >= LIMIT
    return result.release_dir


def run_lm_eval(tmp_path: Path, release: Path, task: str, model: str, model_args: str, *extra: str) -> dict:
    out = tmp_path / "out"
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "lm_eval", "run", "--include_path", str(release / "lm_eval"), "--tasks", task,
           "--model", model, "--model_args", model_args, "--limit", str(LIMIT), "--output_path", str(out),
           "--log_samples", *extra]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    results = list(out.rglob("results_*.json"))
    samples = list(out.rglob(f"samples_{task}_*.jsonl"))
    assert len(results) == 1 and len(samples) == 1, proc.stderr[-3000:]
    return {"results": json.loads(results[0].read_text(encoding="utf-8")),
            "samples": [json.loads(line) for line in samples[0].read_text(encoding="utf-8").splitlines()]}


def test_cot_task_generates_and_extracts_final_answer_lines(tmp_path: Path, release: Path, vllm_server) -> None:
    args = (f"model={vllm_server.model_name},base_url={vllm_server.base_url}/chat/completions,"
            f"num_concurrent={LIMIT},tokenizer_backend=None,max_retries=2")
    run = run_lm_eval(tmp_path, release, "medcot_cot", "local-chat-completions", args, "--apply_chat_template",
                      "--gen_kwargs", "max_gen_toks=64")
    res = run["results"]["results"]["medcot_cot"]
    assert 0.0 <= res["exact_match,medcot-extractor"] <= 1.0 and 0.0 <= res["no_answer,medcot-extractor"] <= 1.0
    assert run["results"]["n-samples"]["medcot_cot"]["effective"] == LIMIT
    assert len(run["samples"]) == LIMIT
    for s in run["samples"]:
        pred = s["filtered_resps"][0]
        assert pred == NO_ANSWER or pred in "ABCDE" and len(pred) == 1
        assert s["target"] in "ABCDE" and s["resps"][0][0].strip()  # the model really generated text
        no_answer = pred == NO_ANSWER or not s["doc"]["options"].get(pred)
        assert s["exact_match"] == float(pred == s["target"]) and s["no_answer"] == float(no_answer)
        assert s["doc"]["validation"] == "expert"  # the validated config's test split
    # the same responses through `medcot eval extract`: the same answer for every item
    src = tmp_path / "responses.jsonl"
    src.write_text("".join(json.dumps({"id": s["doc_id"], "response": s["resps"][0][0],
                                       "options": {k: v for k, v in s["doc"]["options"].items() if v}},
                                      ensure_ascii=False) + "\n" for s in run["samples"]), encoding="utf-8")
    medcot = str(Path(sys.executable).parent / "medcot")
    done = subprocess.run([medcot, "eval", "extract", "--input", str(src), "--output", str(tmp_path / "x.jsonl")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    ours = {o["id"]: o["answer"] or NO_ANSWER
            for o in map(json.loads, (tmp_path / "x.jsonl").read_text(encoding="utf-8").splitlines())}
    assert ours == {s["doc_id"]: s["filtered_resps"][0] for s in run["samples"]}


def test_multiple_choice_task_scores_option_letters(tmp_path: Path, release: Path, vllm_server) -> None:
    args = (f"model={vllm_server.model_name},base_url={vllm_server.base_url}/completions,num_concurrent=2,"
            f"tokenizer_backend=huggingface,tokenizer={model_dir()},max_retries=2")
    run = run_lm_eval(tmp_path, release, "medcot_mc", "local-completions", args)
    assert 0.0 <= run["results"]["results"]["medcot_mc"]["acc,none"] <= 1.0
    for s in run["samples"]:
        n_options = sum(1 for v in s["doc"]["options"].values() if v)
        loglik = [float(r[0][0]) for r in s["resps"]]  # one log-likelihood per option letter (logged as text)
        assert len(loglik) == n_options and all(x < 0 for x in loglik)

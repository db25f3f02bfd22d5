"""Real training on SmolLM2-135M-Instruct (CPU): a LoRA SFT through the CLI, the label mask of the collated
batch, and the matrix through the pipeline stage. A few steps each, tiny release written here."""
from __future__ import annotations

import asyncio
import json
import math
import os
from dataclasses import asdict
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from conftest import model_dir  # noqa: E402
from training_release import write_release  # noqa: E402

pytestmark = pytest.mark.training
ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "configs" / "train" / "demo.yaml"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    """The converted model (else fail with how to build it), a tiny release, a private datasets cache."""
    import datasets
    model = model_dir()
    if not (model / "config.json").is_file():
        pytest.fail(f"the converted model {model} is missing: run `make model`", pytrace=False)
    root = tmp_path_factory.mktemp("training")
    old = datasets.config.HF_DATASETS_CACHE
    datasets.config.HF_DATASETS_CACHE = root / "hf-datasets"
    try:
        yield {"model": model, "release": write_release(root / "release"), "root": root}
    finally:
        datasets.config.HF_DATASETS_CACHE = old


def _sets(tiny: dict, out: Path, **extra: object) -> list[str]:
    sets = {"data.release_dir": tiny["release"], "model.path": tiny["model"], "output.dir": out, **extra}
    return [x for k, v in sets.items() for x in ("--set", f"{k}={v}")]


@pytest.fixture(scope="module")
def lora_run(tiny: dict) -> dict:
    """`medcot train --config demo.yaml`: 3 real LoRA steps on the validated arm, merged."""
    from click.testing import CliRunner

    from medcot.cli import main
    out = tiny["root"] / "single"
    res = CliRunner().invoke(main, ["train", "--config", str(DEMO), "--json",
                                    *_sets(tiny, out, **{"sft.max_steps": 3, "output.merge": "true"})])
    assert res.exit_code == 0, res.output + repr(res.exception)
    return json.loads(res.output[res.output.index("{\n  \"arm\""):])


def test_lora_sft_trains_and_logs(lora_run: dict) -> None:
    m = lora_run["metrics"]
    assert lora_run["n_examples"] == 8 and m["steps"] == 3
    assert all(math.isfinite(x) for x in (m["train_loss"], m["first_loss"], m["final_loss"]))
    assert m["max_weight_change"] > 0 and m["tokens_trained"] > 0 and m["tokens_per_s"] > 0
    log = json.loads(Path(lora_run["log_json"]).read_text(encoding="utf-8"))
    assert log["status"] == "done" and len([h for h in log["log_history"] if "loss" in h]) == 3
    assert log["prompt_version"].startswith("cot@") and len(log["ids"]) == 8
    assert Path(lora_run["loss_png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_adapter_reloads_with_trained_weights(lora_run: dict, tiny: dict) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    adapter = Path(lora_run["adapter_dir"])
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    base = AutoModelForCausalLM.from_pretrained(tiny["model"], dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(adapter))
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().max().item() > 0 for p in lora_b)  # LoRA B starts at zero: training moved it


def test_merged_model_differs_from_base_and_generates(lora_run: dict, tiny: dict) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    merged_dir = lora_run["merged_dir"]
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32)
    base = AutoModelForCausalLM.from_pretrained(tiny["model"], dtype=torch.float32)
    name = "model.layers.0.self_attn.q_proj.weight"
    delta = (merged.state_dict()[name] - base.state_dict()[name]).abs().max().item()
    assert delta > 0
    assert not any("lora" in k for k in merged.state_dict())
    tok = AutoTokenizer.from_pretrained(merged_dir)
    ids = tok.apply_chat_template([{"role": "user", "content": "Answer: which vitamin prevents scurvy?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = merged.generate(**ids, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]
    assert tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def test_labels_mask_exactly_the_prompt_tokens(tiny: dict) -> None:
    """In the collated batch, labels are -100 on every prompt token and on padding, and equal the input ids
    on every completion token."""
    from training.config import load_train_config
    from training.train import build_trainer, detect_hardware, load_tokenizer, prepare_data
    cfg = load_train_config(DEMO, [f"data.release_dir={tiny['release']}", f"model.path={tiny['model']}"])
    tok = load_tokenizer(cfg)
    data = prepare_data(cfg, tok)
    trainer = build_trainer(cfg, data, tiny["root"] / "mask", detect_hardware(), tok)
    rows = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]  # TRL keeps the order
    batch = trainer.data_collator(rows)
    assert batch["input_ids"].shape[0] == len(data.examples) == 8
    langs = set()
    for i, example in enumerate(data.examples):
        n = int(batch["attention_mask"][i].sum())
        ids, labels = batch["input_ids"][i].tolist(), batch["labels"][i].tolist()
        assert ids[:n] == tok.apply_chat_template(example.prompt + example.completion)["input_ids"]
        p = len(tok.apply_chat_template(example.prompt, add_generation_prompt=True)["input_ids"])
        assert 0 < p < n
        assert labels[:p] == [-100] * p
        assert labels[p:n] == ids[p:n] and -100 not in labels[p:n]
        assert labels[n:] == [-100] * (len(ids) - n)
        assert tok.decode(ids[p:n]).startswith(example.completion[0]["content"][:10])
        langs.add(example.language)
    assert langs == {"zh", "en"}


def test_matrix_via_pipeline_stage(tiny: dict, tmp_path: Path) -> None:
    """The `train` stage on the build stage's release: 2 arms x 2 runs (training and data seeds), matched design,
    equal N, manifest with the arms' overlap; a rerun reuses."""
    from medcot.config import Config
    from medcot.pipeline import STAGES, RunContext, check_stages
    from training.config import load_train_config
    from training.matrix import plan
    cfg_file = tmp_path / "train.yaml"
    text = DEMO.read_text(encoding="utf-8")
    assert "max_steps: 4" in text
    cfg_file.write_text(text.replace("max_steps: 4", "max_steps: 1")
                        .replace("${MEDCOT_CACHE}/models/smollm2-135m-instruct", str(tiny["model"])), encoding="utf-8")
    check_stages(["train"])  # registers the stages of every package
    cfg = Config()
    cfg.train.config = str(cfg_file)
    ctx = RunContext(cfg=cfg, store=None, out_dir=tmp_path / "run",  # type: ignore[arg-type]
                     sections={"build": {"release_dir": str(tiny["release"])}})
    summary = asyncio.run(STAGES["train"][0](ctx))
    manifest = json.loads(Path(summary["manifest"]).read_text(encoding="utf-8"))
    assert manifest["schema"] == "medcot.train.manifest/2" and manifest["n_per_arm"] == 8
    assert manifest["design"] == "matched" and manifest["seed_pairs"] == [[0, 0], [1, 1]]
    assert [(r["arm"], r["seed"], r["data_seed"]) for r in manifest["runs"]] == [
        ("validated", 0, 0), ("validated", 1, 1), ("unvalidated", 0, 0), ("unvalidated", 1, 1)]
    arms = manifest["arms"]
    assert arms["unvalidated"]["rows"] == 12 and arms["unvalidated"]["available"] == 8
    hashes = {(arm, s["data_seed"]): s["data_hash"] for arm in arms for s in arms[arm]["selections"]}
    for run in manifest["runs"]:
        assert run["n_examples"] == 8 and run["data_hash"] == hashes[(run["arm"], run["data_seed"])]
        assert Path(run["adapter_dir"], "adapter_config.json").is_file() and Path(run["log_json"]).is_file()
        assert math.isfinite(run["metrics"]["final_loss"]) and not run["reused"]
    assert hashes[("validated", 0)] != hashes[("unvalidated", 0)]
    sel = arms["unvalidated"]["selections"][0]
    assert sel["identical_examples"] == 4 and sel["own_answer"]["disagree"] == 1
    # matched design: both arms trained on the same item ids, the raw arm on its own text
    logs = [json.loads(Path(r["log_json"]).read_text(encoding="utf-8")) for r in manifest["runs"]]
    assert sorted(logs[0]["ids"]) == sorted(logs[2]["ids"]) and len(logs[2]["ids"]) == 8
    assert logs[2]["config"]["data"]["arm"] == "unvalidated"
    # configs of the runs differ only in arm and seed
    base = load_train_config(cfg_file)
    base.data.release_dir, base.output.dir = str(tiny["release"]), str(tmp_path / "run" / "train")
    assert manifest["base_config"]["sft"] == base.sft and manifest["base_config"]["data"] == asdict(base.data)
    runs = plan(base)
    assert [r.name for r in runs] == [r["name"] for r in manifest["runs"]]
    first = asdict(runs[0].cfg)
    for r in runs[1:]:
        other = asdict(r.cfg)
        changed = {(s, k) for s in first if isinstance(first[s], dict) for k in first[s] if first[s][k] != other[s][k]}
        changed |= {(s,) for s in first if not isinstance(first[s], dict) and first[s] != other[s]}
        assert changed <= {("data", "arm"), ("seed",), ("data", "subsample_seed")} and changed
    # a second run reuses every finished run instead of training again
    again = asyncio.run(STAGES["train"][0](ctx))
    assert all(r["reused"] for r in again["runs"])

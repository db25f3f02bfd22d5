"""`medcot eval run` / judge against a scripted OpenAI-compatible HTTP server (the real client, real HTTP),
plus model resolution from a manifest and the vLLM server arguments for LoRA."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from eval_helpers import make_manifest, make_release

from eval.config import EvalConfig, ModelSpec
from eval.judge import parse_judge
from eval.judge_cmd import judge_release
from eval.models import ManifestError, models_from_manifest, server_groups
from eval.records import RUBRIC_DIMENSIONS, JudgeScore, Prediction, read_records
from eval.run import run_eval_async
from medcot.config import ConfigError, ServerConfig, load_config
from medcot.scripted_server import Reply, ScriptedServer

# what the scripted "model" answers, by question: q1 right, q2 wrong, q3 hedges (no answer), q4 truncated
ANSWERS = {"anaphylaxis": Reply("Epinephrine treats it.\nAnswer: A"), "scurvy": Reply("Answer: B"),
           "缺铁性贫血": Reply("可能是A或者B。"), "心肌梗死": Reply("答案：B", finish_reason="length")}
JUDGE = {d: 2 for d in RUBRIC_DIMENSIONS} | {"rationale": "fine"}


def responder(body: dict) -> Reply:
    if body.get("response_format"):
        scores = dict(JUDGE, clinical_utility=1 if body["model"] == "judge" else 0)
        return Reply(json.dumps(scores))
    text = body["messages"][-1]["content"]
    for key, reply in ANSWERS.items():
        if key in text:
            return reply
    return Reply("Answer: A" if "Answer" in text else "答案：A")


@pytest.fixture(autouse=True)
def _hf_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _cfg(tmp_path: Path, url: str, **extra) -> EvalConfig:
    release = make_release(tmp_path / "release")
    ext = tmp_path / "ext.jsonl"
    ext.write_text("".join(json.dumps({"id": f"x{i}", "question": f"Extra question number {i}?", "options":
                                       {"A": "one", "B": "two", "C": "three", "D": "four"}, "answer": "A",
                                       "language": "en", "subject": "Anatomy"}) + "\n" for i in range(5)))
    data = {"out_dir": str(tmp_path / "out"), "release": {"dir": str(release)},
            "external": [{"name": "ext", "path": str(ext), "offset": 1, "limit": 3}],
            "models": [{"name": "m1", "kind": "base", "path": "served-elsewhere"}],
            "server": {"managed": False}, "llm": {"endpoints": [url], "max_retries": 0},
            "bootstrap": {"resamples": 500}, **extra}
    path = tmp_path / "eval.yaml"
    path.write_text(json.dumps(data))
    return load_config(path, cls=EvalConfig)


async def test_run_scores_predictions_and_reruns_from_cache(tmp_path: Path) -> None:
    async with ScriptedServer(responder) as srv:
        cfg = _cfg(tmp_path, srv.base_url, judge={"enabled": True, "model": "judge", "endpoints": [srv.base_url]})
        results = await run_eval_async(cfg, progress=False)
        first = srv.count
        again = await run_eval_async(cfg, progress=False)
        assert srv.count == first == 7 + 7          # 4 release + 3 external answers, then 7 judge calls
    out = Path(cfg.out_dir)
    preds = {p.id: p for p in read_records(out / "predictions" / "m1.jsonl", Prediction)}
    assert set(preds) == {"q1", "q2", "q3", "q4", "x1", "x2", "x3"}          # offset 1, limit 3
    assert [(preds[k].prediction, preds[k].matched_by) for k in ("q1", "q2", "q3", "q4")] == [
        ("A", "final_line"), ("B", "final_line"), (None, "none:hedge"), (None, "none:truncated")]
    test = results["models"]["m1"]["sets"]["test"]
    assert test["n"] == 4 and test["accuracy"] == 0.25 and test["no_answer_rate"] == 0.5
    assert test["answered_accuracy"] == 0.5
    assert test["per_language"]["en"]["accuracy"] == 0.5 and test["per_language"]["zh"]["accuracy"] == 0.0
    assert set(test["per_specialty"]) == {"emergency", "nutrition", "hematology", "cardiology"}
    assert test["accuracy_ci_low"] <= 0.25 <= test["accuracy_ci_high"]
    assert results["models"]["m1"]["sets"]["ext"]["accuracy"] == 1.0
    assert results["models"]["m1"]["identity"] == "remote:served-elsewhere"
    judged = read_records(out / "judge" / "m1.jsonl", JudgeScore)
    assert len(judged) == 7 and all(j.scores["clinical_utility"] == 1 and j.error is None for j in judged)
    assert results["models"]["m1"]["judge"]["total"]["value"] == 9.0
    assert json.dumps(again["models"]["m1"]["sets"]) == json.dumps(results["models"]["m1"]["sets"])  # NaN-safe
    md = (out / "results.md").read_text()
    assert "no-answer rate" in md and "| m1 | test | 4 | 0.250 [" in md


async def test_judge_against_experts_on_a_release(tmp_path: Path) -> None:
    async with ScriptedServer(responder) as srv:
        cfg = _cfg(tmp_path, srv.base_url, judge={"model": "judge", "endpoints": [srv.base_url]})
        import asyncio

        from eval.config import ReleaseSource
        result = await asyncio.to_thread(judge_release, cfg, ReleaseSource(dir=str(tmp_path / "release"), config="panel"))
    assert result["items"] == 4 and result["failures"] == 0
    agree = result["agreement"]
    # experts: [1,1,2,2,1] and [2,1,1,2,0] (two experts each); judge: 2 everywhere except clinical_utility 1
    assert agree["terminology_clarity"]["exact_agreement"] == 1.0
    assert agree["medical_correctness"]["n"] == 8 and agree["medical_correctness"]["exact_agreement"] == 0.5
    assert agree["clinical_utility"]["exact_agreement"] == 0.5
    assert (Path(cfg.out_dir) / "judge" / "agreement.json").is_file()


def test_parse_judge_never_turns_garbage_into_scores() -> None:
    ok = parse_judge(json.dumps(JUDGE))
    assert ok[0] == {d: 2 for d in RUBRIC_DIMENSIONS} and ok[2] is None
    for bad in ("not json", "[]", json.dumps(dict(JUDGE, medical_correctness=3)),
                json.dumps(dict(JUDGE, reasoning_structure=True)), json.dumps({"rationale": "x"})):
        scores, _, error = parse_judge(bad)
        assert scores == {} and error


def test_manifest_models_and_one_lora_server(tmp_path: Path) -> None:
    base = tmp_path / "base"
    base.mkdir()
    adapters = {}
    for name, r in (("validated-s0", 8), ("unvalidated-s0", 16)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "adapter_config.json").write_text(json.dumps({"r": r}))
        adapters[name] = name                         # relative to the manifest's folder
    manifest = make_manifest(tmp_path / "manifest.json", str(base), adapters)
    models = [ModelSpec(name="base", kind="base", path=str(base))] + models_from_manifest(str(manifest))
    assert [(m.name, m.kind, m.arm, m.seed) for m in models[1:]] == [("validated-s0", "lora", "validated", 0),
                                                                     ("unvalidated-s0", "lora", "unvalidated", 0)]
    (group,) = server_groups(models)
    cfg = group.server_config(ServerConfig(model="ignored", extra_args=["--enforce-eager"]))
    assert cfg.model == str(base.resolve()) and cfg.served_model_name == "base"
    args = cfg.extra_args
    assert args[:2] == ["--enforce-eager", "--enable-lora"]
    assert args[args.index("--max-lora-rank") + 1] == "16"
    assert f"validated-s0={tmp_path / 'validated-s0'}" in args
    assert [group.request_name(m) for m in models] == ["base", "validated-s0", "unvalidated-s0"]


def test_bad_manifests_and_configs_fail_clearly(tmp_path: Path) -> None:
    bad = tmp_path / "m.json"
    bad.write_text(json.dumps({"runs": [{"arm": "other", "seed": 0}]}))
    with pytest.raises(ManifestError, match="arm"):
        models_from_manifest(str(bad))
    bad.write_text(json.dumps({"runs": [{"arm": "validated", "seed": 0, "adapter_dir": "nope", "base_model": "x"}]}))
    with pytest.raises(ManifestError, match="not found"):
        models_from_manifest(str(bad))
    cfg = tmp_path / "c.yaml"
    cfg.write_text("models:\n  - {name: a, kind: lora, path: x}\n")
    with pytest.raises(ConfigError, match="base"):
        load_config(cfg, cls=EvalConfig)
    cfg.write_text("models:\n  - {name: a, path: x, colour: red}\n")
    with pytest.raises(ConfigError, match="colour"):
        load_config(cfg, cls=EvalConfig)


def test_stage_config_takes_the_runs_release_manifest_and_limits(tmp_path: Path) -> None:
    from eval.stages import stage_config
    from medcot.config import Config
    from medcot.pipeline import RunContext
    cfg = Config()
    cfg.eval.config = str(Path(__file__).resolve().parents[1] / "configs" / "eval" / "demo.yaml")
    cfg.eval.max_items, cfg.eval.max_tokens = 3, 128
    ctx = RunContext(cfg=cfg, store=None, out_dir=tmp_path, progress=False)  # type: ignore[arg-type]
    ctx.sections = {"build": {"release_dir": "rel"}, "train": {"manifest": "m.json"}}
    ecfg, notes = stage_config(ctx)
    assert (ecfg.release.dir, ecfg.manifest, ecfg.out_dir) == ("rel", "m.json", str(tmp_path / "eval"))
    assert ecfg.release.limit == 3 and all(e.limit <= 3 for e in ecfg.external)
    assert ecfg.sampling.max_tokens == 128 and ecfg.judge.enabled
    ctx.sections = {}
    ecfg, notes = stage_config(ctx)
    assert ecfg.release.dir == "" and ecfg.manifest == ""
    assert any("external sets only" in n for n in notes) and any("base model only" in n for n in notes)


def test_release_loading_is_never_served_from_a_stale_cache(tmp_path: Path) -> None:
    """datasets' shared cache keys local folders by name: two releases named `release` must not collide."""
    from eval_helpers import ITEMS

    from eval.config import ReleaseSource
    from eval.data import load_release
    a = make_release(tmp_path / "a" / "release")
    b = make_release(tmp_path / "b" / "release", ITEMS[:2])
    assert [len(load_release(ReleaseSource(dir=str(d)))) for d in (a, b, a)] == [4, 2, 4]


def test_judge_command_counts_unparseable_replies_as_failures_not_zeros(tmp_path: Path) -> None:
    """`medcot eval judge` against a real HTTP server (scripted, in its own process) that never sends JSON."""
    import subprocess
    import sys

    from click.testing import CliRunner
    from eval_helpers import prediction

    from eval.records import write_jsonl
    from medcot.cli import main
    out = tmp_path / "out"
    write_jsonl(out / "predictions" / "m.jsonl", [prediction("m", "i1", True), prediction("m", "i2", None)])
    proc = subprocess.Popen([sys.executable, "-m", "medcot.scripted_server", "--port", "0"], stdout=subprocess.PIPE,
                            text=True)
    try:
        url = proc.stdout.readline().split()[1]
        res = CliRunner().invoke(main, ["eval", "judge", "--set", f"out_dir={out}", "--set", "judge.model=j",
                                        "--set", f"judge.endpoints=[{url}]", "--set", "llm.max_retries=0"])
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)["m"]
    assert summary["judged"] == 2 and summary["failures"] == 2 and summary["total"]["n"] == 0
    rows = read_records(out / "judge" / "m.jsonl", JudgeScore)
    assert all(r.scores == {} and "not JSON" in r.error for r in rows)

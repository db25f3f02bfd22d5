"""Several models (issue 14 item 4): `llm.models`, stages naming their model(s), config errors naming them, one
client per model (two scripted servers as two models), five-strike rotation with per-model statistics in the
report and the card, cache entries never shared between models, and the expansion cross-check."""
from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from curation import stages as _stages  # noqa: F401  (registers the curation stages)
from curation.expand import CHECK_EVENT, CROSS_CHECK, funnel
from curation.strikes import strikes_by_model
from dataset_builder.build import build_release
from dataset_builder.synthetic import SyntheticSpec, make_store
from medcot.config import BuildConfig, Config, ConfigError, LLMConfig, ModelConfig, load_config
from medcot.db import AttemptRow, CallRow
from medcot.llm import LLMClient, cache_key
from medcot.pipeline import RunContext, _run_stages, build_report
from medcot.records import ChatRequest, Item
from medcot.report import render_markdown
from medcot.scripted_server import Reply, ScriptedServer
from medcot.store import Store

_MARK = re.compile(r"\(item ([^)\s]+)\)")
_OPTION = re.compile(r"^([A-E])\. (.*)$", re.M)


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return str(tmp_path / "models.db")


def two_models(store_url: str, tmp_path: Path, a: ScriptedServer, b: ScriptedServer, *extra: str) -> Config:
    return load_config(None, [f"store.url={store_url}", f"run.out_dir={tmp_path}", f"llm.endpoints=[{a.base_url}]",
                              "llm.model=model-a", "llm.max_retries=0", "llm.timeout_s=5",
                              f"llm.models.b.endpoints=[{b.base_url}]", "llm.models.b.model=model-b", *extra])


def ctx_of(cfg: Config) -> RunContext:
    return RunContext(cfg=cfg, store=Store(cfg.store.url), out_dir=Path(cfg.run.out_dir), progress=False)


# ---- configuration -----------------------------------------------------------------------------------
@pytest.mark.parametrize("field", ["generate.model", "expand.model", "expand.check_model", "specialty.model"])
def test_a_stage_naming_an_unknown_model_is_an_error_naming_it(field: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{re.escape(field)}: unknown model 'qwen' \(models: default"):
        load_config(None, [f"{field}=qwen"])


def test_unknown_model_in_the_rotation_and_from_yaml(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("llm:\n  models:\n    qwen: {model: Qwen/Qwen2.5-7B-Instruct, endpoints: ['http://q:8000/v1']}\n"
                    "strikes:\n  models: [default, qwen, llama]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"strikes.models\[2\]: unknown model 'llama' \(models: default, qwen"):
        load_config(path)
    path.write_text(path.read_text().replace(", llama", ""), encoding="utf-8")
    cfg = load_config(path)
    assert cfg.strikes.models == ["default", "qwen"]
    assert cfg.llm.models["qwen"] == ModelConfig(model="Qwen/Qwen2.5-7B-Instruct", endpoints=["http://q:8000/v1"])


def test_model_entries_are_checked() -> None:
    ok = ["llm.models.q.model=Q", "llm.models.q.endpoints=[http://q/v1]"]
    with pytest.raises(ConfigError, match=r"unknown key 'llm.models.q.temprature' \(known: api_key_env"):
        load_config(None, [*ok, "llm.models.q.temprature=0.5"])
    with pytest.raises(ConfigError, match=r"unknown key 'llm.models.q.sampling.seed'"):
        load_config(None, [*ok, "llm.models.q.sampling.seed=1"])
    with pytest.raises(ConfigError, match=r"^llm.models.q.endpoints: required"):
        load_config(None, ok[:1])
    with pytest.raises(ConfigError, match=r"^llm.models.q.model: required"):
        load_config(None, ok[1:])
    with pytest.raises(ConfigError, match=r"'default' is not a model name"):
        load_config(None, ["llm.models.default.model=Q", "llm.models.default.endpoints=[http://q/v1]"])
    with pytest.raises(ConfigError, match=r"^llm.models.q.model: 'Q' is also the id of model 'default'"):
        load_config(None, [*ok, "llm.model=Q"])
    with pytest.raises(ConfigError, match=r"^llm.models.q.system_prompt must be keep, merge"):
        load_config(None, [*ok, "llm.models.q.system_prompt=drop"])
    with pytest.raises(ConfigError, match=r"^expand.check_action must be flag or reject"):
        load_config(None, ["expand.check_action=warn"])


def test_a_model_inherits_what_it_does_not_set() -> None:
    cfg = load_config(None, ["llm.model=R1", "llm.system_prompt=merge", "llm.timeout_s=99", "llm.concurrency=7",
                             "llm.models.q.model=Q", "llm.models.q.endpoints=[http://q/v1]",
                             "llm.models.q.system_prompt=keep", "llm.models.q.api_key_env=Q_KEY"])
    q = cfg.llm.for_model("q")
    assert (q.model, q.endpoints, q.system_prompt, q.api_key_env, q.timeout_s, q.concurrency, q.models) == \
        ("Q", ["http://q/v1"], "keep", "Q_KEY", 99.0, 7, {})
    assert cfg.llm.for_model("default").model == cfg.llm.for_model("").model == "R1"
    with pytest.raises(ConfigError, match="unknown model 'x'"):
        cfg.llm.for_model("x")
    assert load_config(None).llm.models == {} and Config().strikes.models == []  # single-model configs unchanged


# ---- cache: two models never share an entry -------------------------------------------------------------
async def test_cache_keys_differ_by_model(store_url: str) -> None:
    req = ChatRequest(messages=[{"role": "user", "content": "Answer: ?"}], model="model-a", params={"seed": 1},
                      stage="strikes", item_id="i1", prompt_version="p@1")
    other = ChatRequest(**{**{k: getattr(req, k) for k in req.__slots__}, "model": "model-b"})  # type: ignore[attr-defined]
    assert cache_key(req) != cache_key(other)
    store = Store(store_url)
    try:
        async with ScriptedServer(responder=lambda _: Reply("Answer: A")) as a, \
                ScriptedServer(responder=lambda _: Reply("Answer: B")) as b:
            for _ in range(2):  # the second pass is all cache hits, each from its own model's entry
                async with LLMClient(LLMConfig(endpoints=[a.base_url], model="model-a"), store) as ca, \
                        LLMClient(LLMConfig(endpoints=[b.base_url], model="model-b"), store) as cb:
                    ra, rb = await ca.chat(req), await cb.chat(other)
                assert (ra.content, rb.content) == ("Answer: A", "Answer: B")
            assert (a.count, b.count) == (1, 1)
        with store.engine.connect() as conn:
            rows = conn.execute(select(CallRow.model, CallRow.cache_key).order_by(CallRow.id)).all()
        assert [m for m, _ in rows] == ["model-a", "model-b"] and rows[0][1] != rows[1][1]
    finally:
        store.close()


# ---- five-strike rotation -----------------------------------------------------------------------------
def items(ids: list[str]) -> list[Item]:
    return [Item(id=i, family_id=i, language="en", question=f"(item {i}) Which drug fits case {i}?",
                 options={"A": f"alpha {i}", "B": f"beta {i}", "C": f"gamma {i}", "D": f"delta {i}"}, answer="C",
                 stage="generated") for i in ids]


def answering(outcomes: dict[str, str]) -> Callable[[dict[str, Any]], Reply]:
    """A model that answers each item right, wrong or not at all (whatever the option order shown)."""
    def reply(body: dict[str, Any]) -> Reply:
        text = body["messages"][-1]["content"]
        item_id = _MARK.search(text).group(1)  # type: ignore[union-attr]
        shown = dict(_OPTION.findall(text))
        right = next(L for L, t in shown.items() if t.startswith("gamma"))
        outcome = outcomes[item_id]
        if outcome == "none":
            return Reply("It could be several of these.")
        return Reply(f"Answer: {right if outcome == 'right' else next(L for L in shown if L != right)}")
    return reply


async def test_rotation_sends_each_attempt_to_its_model_with_per_model_stats(store_url: str, tmp_path: Path) -> None:
    async with ScriptedServer(responder=answering({"x": "wrong", "y": "wrong"})) as a, \
            ScriptedServer(responder=answering({"x": "right", "y": "none"})) as b:
        cfg = two_models(store_url, tmp_path, a, b, "strikes.models=[default, b]", "llm.models.b.sampling.temperature=0.1")
        ctx = ctx_of(cfg)
        ctx.store.add_items(items(["x", "y"]))
        await _run_stages(ctx, ["strikes"], None)
        # x: attempt 1 (a) wrong, 2 (b) right. y: a wrong, b none, a wrong, b none, a wrong -> escalated
        assert (a.count, b.count) == (4, 3)
        assert Counter(body["seed"] for body in a.bodies) == {1: 2, 3: 1, 5: 1}
        assert Counter(body["seed"] for body in b.bodies) == {2: 2, 4: 1}
        assert {body["model"] for body in a.bodies} == {"model-a"} and {body["model"] for body in b.bodies} == {"model-b"}
        assert {body["temperature"] for body in a.bodies} == {0.7}  # the stage's sampling ...
        assert {body["temperature"] for body in b.bodies} == {0.1}  # ... and b's own
        report = build_report(ctx, 1.0)
        ctx.client = None  # rerun: every attempt is stored, no request
        await _run_stages(ctx, ["strikes"], None)
        assert (a.count, b.count) == (4, 3)
    assert {it.id: it.stage for it in ctx.store.items()} == {"x": "strikes_passed", "y": "escalated"}
    section = ctx.sections["strikes"]
    assert section["models"] == ["default", "b"]
    assert section["by_model"] == {
        "model-a": {"attempts": 4, "right": 0, "wrong": 4, "no_answer": 0, "truncated": 0, "strikes": 4, "accuracy": 0.0},
        "model-b": {"attempts": 3, "right": 1, "wrong": 0, "no_answer": 2, "truncated": 0, "strikes": 2,
                    "accuracy": 0.3333}}
    assert "| default (`model-a`) | 4 | 0 | 4 | 0 | 0 | 4 | 0.0 % |" in section["markdown"]
    assert "| b (`model-b`) | 3 | 1 | 0 | 2 | 0 | 2 | 33.3 % |" in section["markdown"]
    assert report["llm"]["requests"] == 7
    assert {n: s["requests"] for n, s in report["llm_by_model"].items()} == {"default": 4, "b": 3}
    md = render_markdown(report)
    assert "LLM usage by model (this run):" in md and "| b | `model-b` | 3 | 0 |" in md
    ctx.store.close()


async def test_one_model_shows_no_per_model_tables(store_url: str, tmp_path: Path) -> None:
    async with ScriptedServer(responder=answering({"x": "right"})) as a, ScriptedServer() as b:
        ctx = ctx_of(two_models(store_url, tmp_path, a, b))
        ctx.store.add_items(items(["x"]))
        await _run_stages(ctx, ["strikes"], None)
        assert (a.count, b.count) == (1, 0)
    assert "Per answerer model" not in ctx.sections["strikes"]["markdown"]
    assert "LLM usage by model" not in render_markdown(build_report(ctx, 1.0))
    ctx.store.close()


# ---- the card: per-model figures when more than one model answered ----------------------------------------
def test_card_shows_strike_figures_per_model_only_with_several(tmp_path: Path) -> None:
    store = make_store(str(tmp_path / "syn.db"), SyntheticSpec(items=40, seed=2))
    try:
        card = (build_release(store, BuildConfig(), tmp_path / "one").release_dir / "README.md").read_text()
        assert "Five-strike attempts by answerer model" not in card
        with store.engine.begin() as conn:
            even = select(AttemptRow.call_id).where(AttemptRow.attempt_no % 2 == 0)
            conn.execute(update(CallRow).where(CallRow.id.in_(even)).values(model="qwen-72b"))
        by_model = strikes_by_model(store, round=None)
        assert set(by_model) == {"deepseek-r1", "qwen-72b"} and all(m.attempts for m in by_model.values())
        card = (build_release(store, BuildConfig(), tmp_path / "two").release_dir / "README.md").read_text()
    finally:
        store.close()
    assert "Five-strike attempts by answerer model" in card
    for model, m in by_model.items():
        acc = "n/a" if m.accuracy is None else f"{m.accuracy:.3f}"
        assert (f"| `{model}` | {m.attempts} | {m.right} | {m.wrong} | {m.no_answer} | {m.truncated} | {acc} |"
                in card)


# ---- expansion cross-check ----------------------------------------------------------------------------
SEED = Item(id="en-1", family_id="en-1", language="en", source="medmcqa dev", licence="MIT",
            question="A 60-year-old man with chest pain has ST elevation in II, III and aVF. Which artery is occluded?",
            options={"A": "Left anterior descending", "B": "Right coronary artery", "C": "Left circumflex",
                     "D": "Left main"}, answer="B")
FACTS = {"facts": ["Inferior leads II, III and aVF face the inferior wall."], "steps": ["Localise the ST elevation."]}
NEW = [{"question": "Which drug is contraindicated in right ventricular infarction with hypotension?",
        "options": {"A": "Nitroglycerin", "B": "Intravenous fluids", "C": "Aspirin", "D": "Heparin"}, "answer": "A"},
       {"question": "An inferior STEMI patient develops a heart rate of 38/min. What is the most likely cause?",
        "options": {"A": "AV nodal ischaemia", "B": "Hyperkalaemia", "C": "Hypothyroidism", "D": "Digoxin toxicity"},
        "answer": "A"}]


def generator(body: dict[str, Any]) -> Reply:
    fmt = body.get("response_format")
    name = fmt["json_schema"]["name"] if fmt else "cot"
    if name == "expand_facts":
        return Reply(json.dumps(FACTS))
    if name == "expand_question":
        return Reply(json.dumps(NEW[int(body["seed"])]))
    return Reply("A. no\nB. yes\nAnswer: B")


def checker(body: dict[str, Any]) -> Reply:
    """Agrees on the first new question (A), answers B to the second (key A)."""
    text = body["messages"][-1]["content"]
    return Reply("Answer: B" if "38/min" in text else "Nitrates drop preload.\nAnswer: A")


@pytest.fixture
def seeded(store_url: str) -> Iterator[None]:
    s = Store(store_url)
    s.add_items([SEED])
    s.close()
    yield


@pytest.mark.parametrize("action", ["flag", "reject"])
async def test_cross_check_records_a_disagreement_with_its_reason(store_url: str, tmp_path: Path, seeded: None,
                                                                  action: str) -> None:
    async with ScriptedServer(responder=generator) as a, ScriptedServer(responder=checker) as b:
        ctx = ctx_of(two_models(store_url, tmp_path, a, b, "expand.factor=2", "expand.check_model=b",
                                f"expand.check_action={action}", "expand.generate_cot=false"))
        await _run_stages(ctx, ["generate", "expand"], None)
        assert b.count == 2 and {body["model"] for body in b.bodies} == {"model-b"}
        assert all(not body.get("response_format") for body in b.bodies)  # the answerer prompt, not JSON
    store = ctx.store
    reason = "check model disagrees with the key: model-b answered B, key A"
    flags = store.events(kind=CHECK_EVENT)
    rejected = [c for c in store.rejected_candidates() if c.check == CROSS_CHECK]
    ids = {it.id for it in store.items()}
    # the agreeing question: accepted, no check recorded, its expanded event names the check call
    assert "en-1~x0" in ids and not [e for e in flags if e.item_id == "en-1~x0"]
    x0 = store.events(item_id="en-1~x0", kind="expanded")[0].payload["cross_check"]
    assert x0["model"] == "model-b" and x0["agrees"] is True and x0["call_id"] is not None
    if action == "flag":
        assert "en-1~x1" in ids and not rejected
        assert [(e.item_id, e.payload["check"], e.payload["reason"], e.payload["answer"], e.payload["key"])
                for e in flags] == [("en-1~x1", CROSS_CHECK, reason, "B", "A")]
    else:
        assert "en-1~x1" not in ids and not flags
        assert [(c.slot, c.reason, c.payload["cross_check"]["answer"]) for c in rejected] == [(1, reason, "B")]
    section = ctx.sections["expand"]
    assert (section["cross_checked"], section["cross_check_disagreed"]) == (2, 1)
    assert section["check_model"] == "b (model-b)" and section["model"] == "model-a"
    f = funnel(store)
    assert (f["cross_check_flagged"], f["cross_check_rejected"]) == ((1, 0) if action == "flag" else (0, 1))
    assert "kept, flagged by the cross-check" in section["markdown"]
    with store.engine.connect() as conn:
        stages = dict(conn.execute(select(CallRow.model, CallRow.stage).where(CallRow.stage == "expand_check")).all())
    assert stages == {"model-b": "expand_check"}
    store.close()


async def test_no_answer_from_the_check_model_is_a_disagreement(store_url: str, tmp_path: Path, seeded: None) -> None:
    async with ScriptedServer(responder=generator) as a, \
            ScriptedServer(responder=lambda _: Reply("I cannot tell.")) as b:
        ctx = ctx_of(two_models(store_url, tmp_path, a, b, "expand.factor=1", "expand.check_model=b",
                                "expand.generate_cot=false"))
        await _run_stages(ctx, ["generate", "expand"], None)
    [flag] = ctx.store.events(kind=CHECK_EVENT)
    assert flag.item_id == "en-1~x0" and flag.payload["answer"] is None
    assert flag.payload["reason"].startswith("check model gives no answer: model-b (none")
    ctx.store.close()


async def test_stages_use_the_model_they_name(store_url: str, tmp_path: Path, seeded: None) -> None:
    """generate on b, expansion on the default model: each server sees only its stage's requests."""
    async with ScriptedServer(responder=generator) as a, ScriptedServer(responder=generator) as b:
        ctx = ctx_of(two_models(store_url, tmp_path, a, b, "generate.model=b", "expand.factor=1"))
        await _run_stages(ctx, ["generate", "expand"], None)
        kinds_a = Counter((body.get("response_format") or {}).get("json_schema", {}).get("name", "cot")
                          for body in a.bodies)
        kinds_b = Counter((body.get("response_format") or {}).get("json_schema", {}).get("name", "cot")
                          for body in b.bodies)
    assert kinds_a == {"expand_facts": 1, "expand_question": 1}
    assert kinds_b == {"cot": 2}  # the seed's CoT, then the new item's (expand.generate_cot uses generate.model)
    assert ctx.sections["generate"]["model"] == "b (model-b)"
    ctx.store.close()


def test_the_commented_example_in_the_production_config_loads(tmp_path: Path) -> None:
    text = (Path(__file__).resolve().parents[1] / "configs" / "deepseek-r1.yaml").read_text(encoding="utf-8")
    start, end = text.index("  # models:\n"), text.index("\nseeds:")
    text = text[:start] + re.sub(r"^  # ?", "  ", text[start:end], flags=re.M) + text[end:]
    for line in ("check_model: qwen", "check_action: flag", "models: [default, qwen]"):
        assert text.count(f"  # {line}") == 1
        text = text.replace(f"  # {line}", f"  {line}")
    path = tmp_path / "r1-and-qwen.yaml"
    path.write_text(text, encoding="utf-8")
    cfg = load_config(path)
    assert cfg.strikes.models == ["default", "qwen"] and cfg.expand.check_model == "qwen"
    qwen = cfg.llm.for_model("qwen")
    assert (qwen.model, qwen.system_prompt, qwen.timeout_s) == ("Qwen/Qwen2.5-72B-Instruct", "keep", 1800.0)
    assert cfg.llm.models["qwen"].sampling.temperature == 0.7

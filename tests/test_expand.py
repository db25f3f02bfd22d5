"""Expansion against the scripted OpenAI-compatible server: facts -> questions -> checks with reasons,
lineage, CoT for new items, bad JSON as a rejected candidate, per-family resume, the CLI and the report."""
from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from curation.expand import ExistingItems, FamilyChecker, funnel, run_expand, structure_problem
from curation.generate import run_generate
from medcot.config import Config, ConfigError, ExpandConfig, GenerateConfig, LLMConfig, load_config
from medcot.llm import LLMClient, LLMUnavailable
from medcot.records import Item
from medcot.scripted_server import Reply, ScriptedServer, Status
from medcot.store import Store

MODEL = "scripted"
SEED_EN = Item(id="en-1", family_id="en-1", language="en", source="medmcqa dev", licence="MIT", subject="Medicine",
               question="A 60-year-old man with chest pain has ST elevation in II, III and aVF. Which artery is occluded?",
               options={"A": "Left anterior descending", "B": "Right coronary artery", "C": "Left circumflex",
                        "D": "Left main"}, answer="B")
SEED_ZH = Item(id="zh-1", family_id="zh-1", language="zh", source="cmexam", licence="Apache-2.0",
               question="患者男，60岁，胸痛2小时，心电图示II、III、aVF导联ST段抬高，最可能闭塞的血管是",
               options={"A": "左前降支", "B": "右冠状动脉", "C": "左回旋支", "D": "左主干", "E": "对角支"}, answer="B")
FACTS = {"facts": ["Inferior leads II, III and aVF face the inferior wall.", "The RCA supplies the inferior wall."],
         "steps": ["Localise the ST elevation.", "Map the wall to its artery."]}


def q(question: str, options: dict[str, str], answer: str) -> str:
    return json.dumps({"question": question, "options": options, "answer": answer}, ensure_ascii=False)


GOOD = [q("Which drug is contraindicated in right ventricular infarction with hypotension?",
          {"A": "Nitroglycerin", "B": "Intravenous fluids", "C": "Aspirin", "D": "Heparin"}, "A"),
        q("An inferior STEMI patient develops a heart rate of 38/min. What is the most likely cause?",
          {"A": "AV nodal ischaemia", "B": "Hyperkalaemia", "C": "Hypothyroidism", "D": "Digoxin toxicity",
           "E": "Sick sinus syndrome"}, "A")]


def kind(body: dict[str, Any]) -> str:
    fmt = body.get("response_format")
    return fmt["json_schema"]["name"] if fmt else "cot"


def slot_of(body: dict[str, Any]) -> int:
    return int(body["seed"])  # questions_sampling.seed = 0 -> slot k uses seed k


def cot_reply(body: dict[str, Any]) -> Reply:
    return Reply("A. wrong\nB. right\nAnswer: A", completion_tokens=30)


def responder(slots: dict[int, str], facts: str | None = None) -> Callable[[dict[str, Any]], Any]:
    def answer(body: dict[str, Any]) -> Any:
        k = kind(body)
        if k == "expand_facts":
            return Reply(facts if facts is not None else json.dumps(FACTS))
        if k == "expand_question":
            return Reply(slots[slot_of(body)])
        return cot_reply(body)
    return answer


def llm(url: str) -> LLMConfig:
    return LLMConfig(endpoints=[url], model=MODEL, concurrency=8, timeout_s=5.0, max_retries=0, backoff_base_s=0.01)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(str(tmp_path / "expand.db"))
    yield s
    s.close()


async def seeded(store: Store, srv: ScriptedServer, *seeds: Item) -> None:
    """Seeds with an initial CoT (the generate stage), answered by the scripted server."""
    store.add_items(list(seeds))
    async with LLMClient(llm(srv.base_url), store) as client:
        await run_generate(store, client, GenerateConfig(), MODEL, progress=False)


async def expand(store: Store, srv: ScriptedServer, cfg: ExpandConfig, cot: bool = True):
    async with LLMClient(llm(srv.base_url), store) as client:
        summary = await run_expand(store, client, cfg, MODEL)
        if cot:
            await run_generate(store, client, GenerateConfig(), MODEL, progress=False)
    return summary


# ---- checks keep their reasons -------------------------------------------------------------------------
async def test_candidates_checked_with_reasons_and_lineage(store: Store) -> None:
    slots = {0: GOOD[0],
             1: '{"question": "Which artery', # malformed JSON
             2: json.dumps({"question": "What is missing?", "answer": "A"}),  # missing key
             3: q("Which of these is a beta blocker used after MI?", {"A": "Metoprolol", "B": "Metoprolol",
                                                                     "C": "Amlodipine", "D": "Digoxin"}, "A"),
             4: q(SEED_EN.question, {"A": "LAD", "B": "RCA", "C": "LCx", "D": "LM"}, "B"),  # stem copy
             5: q("Which drug is contraindicated in right ventricular infarction with severe hypotension?",
                  {"A": "Nitroglycerin", "B": "Intravenous fluids", "C": "Aspirin", "D": "Clopidogrel"},
                  "A"),  # near-duplicate of slot 0 (n-gram Jaccard 0.79)
             6: q("Which ECG lead set shows the inferior wall?", {"A": "I, aVL", "B": "V1-V2", "C": "V3-V4",
                                                                 "D": "II, III, aVF", "E": "V5-V6"}, "F"),
             7: q("心电图下壁导联是哪些？", {"A": "I", "B": "II", "C": "V1", "D": "V5"}, "B"),  # wrong language
             8: GOOD[1]}
    async with ScriptedServer(responder=responder(slots)) as srv:
        await seeded(store, srv, SEED_EN)
        summary = await expand(store, srv, ExpandConfig(factor=9))
    assert summary.families_expanded == 1 and summary.candidates == 9 and summary.accepted == 2
    rejects = {c.slot: c for c in store.rejected_candidates()}
    assert {k: rejects[k].check for k in rejects} == {1: "json", 2: "missing_key", 3: "structure", 4: "copy",
                                                      5: "near_duplicate", 6: "structure", 7: "structure"}
    assert rejects[1].reason.startswith("invalid JSON") and rejects[1].payload["raw"] == slots[1]
    assert "options" in rejects[2].reason and "not unique" in rejects[3].reason
    assert "near-duplicate of a sibling: en-1~x0" in rejects[5].reason and "answer not among" in rejects[6].reason
    assert "language" in rejects[7].reason and all(c.call_id for c in rejects.values())
    new = {it.id: it for it in store.items() if it.origin == "expanded"}
    assert set(new) == {"en-1~x0", "en-1~x8"}
    x8 = new["en-1~x8"]
    assert (x8.family_id, x8.parent_id, x8.aspect, x8.licence, x8.subject) == ("en-1", "en-1", "adverse_effect",
                                                                              "MIT", "Medicine")
    assert x8.source.startswith("medmcqa dev") and "LLM-derived" in x8.source and set(x8.options) == set("ABCDE")
    assert x8.stage == "generated"  # answered with a CoT through the generate stage, like seeds
    ev = store.events(item_id="en-1~x8", kind="expanded")[0].payload
    assert ev["facts_call_id"] and ev["question_call_id"] and ev["aspect"] == "adverse_effect"
    assert ev["prompt_versions"] == {"facts": "expand_facts@1", "question": "expand_questions@1"}
    done = store.events(item_id="en-1", kind="expansion_done")[0].payload
    assert (done["accepted"], done["rejected"]) == (2, 7)
    f = funnel(store)
    assert f["candidates_generated"] == 9 and f["accepted"] == 2 and f["near_duplicates_removed"] == 1
    assert f["rejected_by_check"] == {"copy": 1, "json": 1, "missing_key": 1, "near_duplicate": 1, "structure": 3}


async def test_malformed_facts_json_is_a_rejected_candidate_and_stage_completes(store: Store) -> None:
    async with ScriptedServer(responder=responder({0: GOOD[0]}, facts='{"facts": ["x", ')) as srv:
        await seeded(store, srv, SEED_EN, SEED_ZH)
        srv.reset()
        summary = await expand(store, srv, ExpandConfig(factor=1), cot=False)
        assert srv.count == 2  # one facts call per family; no question calls after unusable facts
    assert summary.families_expanded == 2 and summary.families_facts_unusable == 2
    rejects = store.rejected_candidates()
    assert [(c.slot, c.check) for c in rejects] == [(-1, "facts_json"), (-1, "facts_json")]
    assert all(c.reason and c.payload["raw"] for c in rejects)
    assert store.expanded_families() == {"en-1", "zh-1"}


async def test_facts_missing_key(store: Store) -> None:
    async with ScriptedServer(responder=responder({0: GOOD[0]}, facts='{"facts": ["a fact"]}')) as srv:
        await seeded(store, srv, SEED_EN)
        await expand(store, srv, ExpandConfig(factor=1), cot=False)
    [bad] = store.rejected_candidates()
    assert (bad.slot, bad.check) == (-1, "facts_missing_key") and "'steps'" in bad.reason


async def test_same_options_and_key_as_seed_is_a_duplicate(store: Store) -> None:
    same = q("Occlusion of which vessel explains inferior ST elevation?",
             {"A": "Left main", "B": "Right coronary artery", "C": "Left circumflex", "D": "Left anterior descending"}, "B")
    async with ScriptedServer(responder=responder({0: same})) as srv:
        await seeded(store, srv, SEED_EN)
        await expand(store, srv, ExpandConfig(factor=1), cot=False)
    [bad] = store.rejected_candidates()
    assert bad.check == "near_duplicate" and "same options and same correct option" in bad.reason


# ---- resume --------------------------------------------------------------------------------------------
async def test_rerun_costs_nothing_and_interrupted_family_is_redone_from_cache(store: Store) -> None:
    state = {"down": True}
    slots = {0: GOOD[0], 1: GOOD[1]}

    def answer(body: dict[str, Any]) -> Any:
        if state["down"] and kind(body) == "expand_question" and slot_of(body) == 1:
            return Status(503)
        return responder(slots)(body)

    async with ScriptedServer(responder=answer) as srv:
        await seeded(store, srv, SEED_EN)
        srv.reset()
        with pytest.raises(LLMUnavailable):
            await expand(store, srv, ExpandConfig(factor=2), cot=False)
        assert store.expanded_families() == set() and not [i for i in store.items() if i.origin == "expanded"]
        state["down"] = False
        srv.reset()
        await expand(store, srv, ExpandConfig(factor=2), cot=False)
        assert srv.count == 1  # only the failed question call: facts and slot 0 came from the cache
        srv.reset()
        again = await expand(store, srv, ExpandConfig(factor=2))
        assert srv.count == 2  # only the two new items' CoTs
        srv.reset()
        third = await expand(store, srv, ExpandConfig(factor=2))
        assert srv.count == 0 and third.families_done_before == 1 and again.families_expanded == 0
    assert len([i for i in store.items() if i.origin == "expanded"]) == 2


async def test_seed_without_cot_is_skipped(store: Store) -> None:
    store.add_items([SEED_EN])
    async with ScriptedServer(responder=responder({0: GOOD[0]})) as srv:
        summary = await expand(store, srv, ExpandConfig(factor=1), cot=False)
        assert srv.count == 0
    assert summary.families_without_cot == 1 and summary.families_expanded == 0


# ---- unit checks ---------------------------------------------------------------------------------------
def test_structure_problems() -> None:
    ok = {"question": "Which one is right here?", "options": {"A": "a1", "B": "b1", "C": "c1", "D": "d1"}, "answer": "B"}
    assert structure_problem(ok, "en") == ("", "")
    cases = [({**ok, "options": {"A": "a", "B": "b", "C": "c"}}, "A-D or A-E"),
             ({**ok, "options": {"A": "a", "B": "b", "C": "c", "E": "e"}}, "A-D or A-E"),
             ({**ok, "options": {"A": "a", "B": " ", "C": "c", "D": "d"}}, "empty"),
             ({**ok, "options": {"A": "Same", "B": "same ", "C": "c", "D": "d"}}, "not unique"),
             ({**ok, "answer": "E"}, "not among"), ({**ok, "question": "Why?"}, "too short"),
             ({**ok, "question": "这是一道中文题目吗？请选择"}, "language")]
    for obj, why in cases:
        assert why in structure_problem(obj, "en")[1], obj
    assert structure_problem({"question": "x", "options": ["a"], "answer": "A"}, "en")[0] == "missing_key"
    assert structure_problem({**ok, "question": "下列哪项是正确的治疗方法"}, "zh") == ("", "")


def cand(question: str, options: dict[str, str], answer: str = "A") -> dict[str, Any]:
    return {"question": question, "options": options, "answer": answer}


OTHER_ZH = Item(id="zh-2", family_id="zh-2", language="zh", source="cmexam", licence="Apache-2.0",
                question="患者女，35岁，多饮多尿3个月，空腹血糖8.2mmol/L，首选的降糖药物是",
                options={"A": "二甲双胍", "B": "格列本脲", "C": "胰岛素", "D": "阿卡波糖", "E": "罗格列酮"}, answer="A")


def test_copy_of_the_seed_stem_by_the_one_rule() -> None:
    checker = FamilyChecker(SEED_ZH, ExistingItems.of([SEED_ZH]))
    other_opts = {"A": "甲", "B": "乙", "C": "丙", "D": "丁"}
    for stem in ("患者男，60岁，胸痛2小时，心电图示II、III、aVF导联ST段抬高，最可能闭塞的血管是哪支",  # a longer copy
                 "患者男，60岁，胸痛2小时，心電圖示II、III、aVF導聯ST段抬高，最可能閉塞的血管是",  # traditional script
                 "患者男，70岁，胸痛2小时，心电图示II、III、aVF导联ST段抬高，最可能闭塞的血管是"):  # one character
        kind, reason = checker.check(cand(stem, other_opts), "zh-1~x0")
        assert kind == "copy" and "neardup@1 stem similarity" in reason, stem
    fresh = cand("下壁心肌梗死患者出现三度房室传导阻滞，首选的处理是", other_opts)
    assert checker.check(fresh, "zh-1~x0") == ("", "")


def test_near_duplicates_of_the_seed_siblings_and_other_families() -> None:
    generic = Item(id="zh-3", family_id="zh-3", language="zh", question="下列关于胰岛素的叙述，正确的是",
                   options={"A": "由胰岛A细胞分泌", "B": "促进糖原分解", "C": "降低血糖", "D": "抑制蛋白质合成"}, answer="C")
    existing = ExistingItems.of([SEED_ZH, OTHER_ZH, generic])
    checker = FamilyChecker(SEED_ZH, existing)
    sibling = cand("下壁心肌梗死患者出现三度房室传导阻滞，此时首选的处理措施是",
                   {"A": "临时起搏", "B": "静脉滴注多巴胺", "C": "口服美托洛尔", "D": "静脉注射胺碘酮"})
    assert checker.check(sibling, "zh-1~x0") == ("", "")
    checker.accept(Item(id="zh-1~x0", family_id="zh-1", language="zh", question=sibling["question"],
                        options=sibling["options"], answer="A", origin="expanded", parent_id="zh-1"))
    # the sibling again: options reordered and re-lettered, one character changed (and another key)
    again = cand("下壁心肌梗死患者出现三度房室传导阻滞，此时首选的处理方法是",
                 {"A": "静脉注射胺碘酮", "B": "口服美托洛尔", "C": "静脉滴注多巴胺", "D": "临时起搏"}, "C")
    kind, reason = checker.check(again, "zh-1~x1")
    assert kind == "near_duplicate" and reason.startswith("near-duplicate of a sibling: zh-1~x0, neardup@1")
    # another family's seed, in traditional script with its options shuffled
    theirs = cand("患者女，35歲，多飲多尿3個月，空腹血糖8.2mmol/L，首選的降糖藥物是",
                  {"A": "羅格列酮", "B": "阿卡波糖", "C": "胰島素", "D": "格列本脲", "E": "二甲雙胍"}, "E")
    kind, reason = checker.check(theirs, "zh-1~x2")
    assert kind == "near_duplicate" and "near-duplicate of an existing item: zh-2" in reason
    # another family's generic stem with entirely different options is a new question
    assert checker.check(cand("下列关于胰岛素的叙述，正确的是", {"A": "可以口服", "B": "属于糖皮质激素",
                                                         "C": "由肝脏合成", "D": "促进葡萄糖进入细胞"}), "zh-1~x3") == ("", "")


def test_config_validation() -> None:
    with pytest.raises(ConfigError):
        ExpandConfig(factor=0)
    with pytest.raises(ConfigError):
        ExpandConfig(aspects=["diagnosis", "diagnosis"])
    with pytest.raises(ConfigError):
        ExpandConfig(max_facts=0)
    for removed in ("ngram", "near_duplicate_threshold", "copy_threshold"):  # the rule owns its thresholds
        with pytest.raises(ConfigError, match=f"unknown key 'expand.{removed}'"):
            load_config(None, [f"expand.{removed}=0.5"], Config)


async def test_unknown_aspect_is_a_config_error(store: Store) -> None:
    async with ScriptedServer(responder=responder({})) as srv:
        await seeded(store, srv, SEED_EN)
        with pytest.raises(ConfigError, match="unknown"):
            await expand(store, srv, ExpandConfig(aspects=["astrology"]), cot=False)


# ---- the command line and the run report -----------------------------------------------------------------
class ThreadedServer:
    """The scripted server on its own event loop in a thread, for code that runs asyncio.run itself."""

    def __init__(self, answer: Callable[[dict[str, Any]], Any]):
        self.server = ScriptedServer(responder=answer)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> ScriptedServer:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        return self.server

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def test_cli_expand_and_report(tmp_path: Path) -> None:
    from medcot.cli import main
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(json.dumps({"id": "en-1", "question": SEED_EN.question, "options": SEED_EN.options,
                                 "answer": "B", "language": "en", "subject": "Medicine"}) + "\n")
    slots = {0: GOOD[0], 1: '{"question": "broken'}
    with ThreadedServer(responder(slots)) as srv:
        args = ["--set", f"store.url={tmp_path / 'm.db'}", "--set", f"run.out_dir={tmp_path / 'out'}",
                "--set", f"llm.endpoints=[{srv.base_url}]", "--set", "llm.model=scripted",
                "--set", f"seeds.files=[{seeds}]", "--set", "expand.factor=2", "--set", "llm.max_retries=0"]
        runner = CliRunner()
        result = runner.invoke(main, ["run", *args, "--no-progress", "--set",
                                      "run.stages=[seeds, generate, expand, specialty, strikes]"])
        assert result.exit_code == 0, result.output
        report = (tmp_path / "out" / "report.md").read_text()
        assert "candidate questions generated | 2 |" in report and "dropped by check `json` | 1 |" in report
        assert "invalid JSON" in report and "first correct at attempt" in report and "escalation rate" in report
        assert "internal_medicine" in report  # the subject map: MedMCQA "Medicine"
        again = runner.invoke(main, ["curate", "expand", *args])
        assert again.exit_code == 0, again.output
        out = json.loads(again.stdout.strip().splitlines()[-1])  # progress bars go to stderr
        assert out["families_done_before"] == 1 and out["funnel"]["accepted"] == 1
    assert "expand" in runner.invoke(main, ["curate", "--help"]).output

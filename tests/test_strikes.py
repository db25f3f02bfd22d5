"""Five-strike waves against the scripted OpenAI-compatible server with known per-item answer patterns:
calls == theoretical minimum, permutations mapped back, escalation after 5, unparseable answers, resume."""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks.five_strike import PatternResponder, make_items, min_calls
from curation.strikes import Attempt, map_back, permutation, run_strikes, shown_options, strike_request, strikes_stats
from medcot.config import ConfigError, LLMConfig, StrikeSampling, StrikesConfig, load_config
from medcot.llm import LLMClient, LLMUnavailable
from medcot.records import Item
from medcot.scripted_server import Reply, ScriptedServer, Status
from medcot.store import Store

MODEL = "scripted"


def llm(url: str, **kw: Any) -> LLMConfig:
    base: dict[str, Any] = dict(model=MODEL, concurrency=16, timeout_s=5.0, max_retries=0, backoff_base_s=0.01)
    base.update(kw)
    return LLMConfig(endpoints=[url], **base)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(str(tmp_path / "strikes.db"))
    yield s
    s.close()


def fixed_items(patterns: dict[str, list[str]], stage: str = "generated") -> list[Item]:
    return [Item(id=iid, family_id=iid, language="en", question=f"(item {iid}) Which drug fits case {iid}?",
                 options={"A": f"alpha {iid}", "B": f"beta {iid}", "C": f"gamma {iid}", "D": f"delta {iid}"},
                 answer="C", stage=stage) for iid in patterns]


async def run(store: Store, srv: ScriptedServer, cfg: StrikesConfig | None = None):
    async with LLMClient(llm(srv.base_url), store) as client:
        return await run_strikes(store, client, cfg or StrikesConfig(), MODEL, progress=False)


# ---- waves, minimum calls, escalation ------------------------------------------------------------------
async def test_calls_equal_theoretical_minimum(store: Store) -> None:
    items, patterns = make_items(60, seed=3)
    store.add_items(items)
    async with ScriptedServer(responder=PatternResponder(items, patterns)) as srv:
        summary = await run(store, srv)
        assert srv.count == min_calls(patterns) == summary.attempts_made
        # wave k carries exactly the items still unresolved after k-1 attempts, all sent together
        per_wave = Counter(int(b["seed"]) for b in srv.bodies)
    expected = Counter()
    for p in patterns.values():
        n = p.index("right") + 1 if "right" in p else 5
        for k in range(1, n + 1):
            expected[k] += 1
    assert per_wave == expected
    assert summary.waves == max(expected)
    stages = store.stage_counts()
    n_escalated = sum("right" not in p for p in patterns.values())
    assert stages.get("escalated", 0) == n_escalated == summary.escalated
    assert stages.get("strikes_passed", 0) == len(items) - n_escalated == summary.passed


async def test_escalation_after_five_with_history(store: Store) -> None:
    patterns = {"esc": ["wrong", "none", "wrong", "none", "wrong"], "late": ["none", "wrong", "wrong", "wrong", "right"]}
    items = fixed_items(patterns)
    store.add_items(items)
    async with ScriptedServer(responder=PatternResponder(items, patterns)) as srv:
        await run(store, srv)
        assert srv.count == 10
    assert {it.id: it.stage for it in store.items()} == {"esc": "escalated", "late": "strikes_passed"}
    ev = store.events(item_id="esc", kind="escalated")
    assert len(ev) == 1 and [h["attempt_no"] for h in ev[0].payload["history"]] == [1, 2, 3, 4, 5]
    assert [h["matched_by"].startswith("none") for h in ev[0].payload["history"]] == [False, True, False, True, False]
    atts = [a for a in store.attempts() if a.item_id == "esc"]
    assert [a.correct for a in atts] == [False] * 5
    assert sum(a.letter is None for a in atts) == 2  # unparseable = failed attempt, counted on its own
    assert len({a.template for a in atts[:3]}) == 3  # three templates rotate
    assert [a.seed for a in atts] == [1, 2, 3, 4, 5]  # the sampling seed varies per attempt
    passed = store.events(item_id="late", kind="strikes_passed")
    assert len(passed) == 1 and passed[0].payload["attempts"] == 5


async def test_permutation_mapped_back_before_scoring(store: Store) -> None:
    patterns = {"p1": ["wrong", "right"], "p2": ["wrong", "wrong", "wrong", "right"]}
    items = fixed_items(patterns)
    store.add_items(items)
    async with ScriptedServer(responder=PatternResponder(items, patterns)) as srv:
        await run(store, srv)
        bodies = srv.bodies
    for a in store.attempts():
        assert sorted(a.permutation) == ["A", "B", "C", "D"]
        if a.attempt_no == 1:
            assert a.permutation == ["A", "B", "C", "D"]
        else:
            assert a.permutation != ["A", "B", "C", "D"]
        assert a.letter == map_back(a.shown_letter, a.permutation)
        assert a.correct == (a.letter == "C")
    final = [a for a in store.attempts() if a.correct]
    assert len(final) == 2 and all(a.letter == "C" for a in final)
    assert any(a.shown_letter != "C" for a in final)  # the shown letter differed: mapping mattered
    # the text shown at the correct letter is the key's text
    p1 = next(a for a in final if a.item_id == "p1")
    body = next(b for b in bodies if "(item p1)" in b["messages"][-1]["content"] and b["seed"] == 2)
    assert f"{p1.shown_letter}. gamma p1" in body["messages"][-1]["content"]


def test_permutation_is_deterministic_and_recorded() -> None:
    first = permutation("x", list("ABCDE"), 3)
    assert first == permutation("x", list("EDCBA"), 3)
    assert first != permutation("x", list("ABCDE"), 4) or first != permutation("y", list("ABCDE"), 3)
    assert permutation("x", list("ABCD"), 1) == list("ABCD")
    assert permutation("x", list("ABCD"), 2, shuffle=False) == list("ABCD")
    item = Item(id="x", family_id="x", language="en", question="q?", options={"A": "a", "B": "b", "C": "c"}, answer="B")
    perm = permutation("x", list(item.options), 2)
    shown = shown_options(item, perm)
    assert {shown[L]: map_back(L, perm) for L in shown} == {"a": "A", "b": "B", "c": "C"}


def test_requests_carry_no_explanation() -> None:
    item = Item(id="e1", family_id="e1", language="zh", question="高血压首选？", options={"A": "甲", "B": "乙", "C": "丙", "D": "丁"},
                answer="A", explanation="SECRET EXPLANATION")
    for k in range(1, 6):
        req, _ = strike_request(item, k, StrikesConfig(), MODEL)
        text = "".join(m["content"] for m in req.messages)
        assert "SECRET" not in text and "高血压首选" in text and "答案" in text
        assert req.stage == "strikes" and req.params["seed"] == k


# ---- eligibility, resume, faults ---------------------------------------------------------------------
async def test_only_eligible_stages(store: Store) -> None:
    patterns = {"rev": ["right"], "gen": ["right"], "imp": ["right"]}
    items = fixed_items(patterns)
    items[0].stage, items[2].stage = "reviewed", "imported"
    store.add_items(items)
    async with ScriptedServer(responder=PatternResponder(items, patterns)) as srv:
        await run(store, srv, StrikesConfig(eligible_stages=["reviewed"]))
        assert srv.count == 1
        await run(store, srv)  # default: reviewed and generated
        assert srv.count == 2
    assert {it.id: it.stage for it in store.items()} == {"rev": "strikes_passed", "gen": "strikes_passed",
                                                         "imp": "imported"}


async def test_rerun_makes_no_calls(store: Store) -> None:
    items, patterns = make_items(20, seed=5)
    store.add_items(items)
    async with ScriptedServer(responder=PatternResponder(items, patterns)) as srv:
        await run(store, srv)
        n = srv.count
        again = await run(store, srv)
        assert srv.count == n and again.attempts_made == 0 and again.eligible == 0


async def test_interrupted_run_resumes_without_redoing_attempts(store: Store) -> None:
    items, patterns = make_items(30, seed=7)
    store.add_items(items)
    responder = PatternResponder(items, patterns)
    state = {"fail": True}

    def flaky(body: dict[str, Any]) -> Any:
        if state["fail"] and int(body["seed"]) == 3:
            return Status(503)  # the server dies during wave 3
        return responder(body)

    async with ScriptedServer(responder=flaky) as srv:
        with pytest.raises(LLMUnavailable):
            await run(store, srv)
        stored = len(store.attempts())
        assert 0 < stored < min_calls(patterns)
        assert all(a.attempt_no <= 3 for a in store.attempts())
        state["fail"] = False
        before = srv.count
        summary = await run(store, srv)
        assert summary.resumed > 0
        assert summary.attempts_made == min_calls(patterns) - stored  # nothing already stored is redone
        assert srv.count - before == summary.attempts_made  # and each of those is one request
    assert len(store.attempts()) == min_calls(patterns)


async def test_unparseable_reply_counts_as_failed_attempt(store: Store) -> None:
    items = fixed_items({"u": []})
    store.add_items(items)
    async with ScriptedServer(responder=lambda body: Reply("I'm not able to answer medical questions.")) as srv:
        summary = await run(store, srv, StrikesConfig(max_attempts=3))
        assert srv.count == 3
    assert summary.escalated == 1 and summary.no_answer_attempts == 3
    assert {a.matched_by for a in store.attempts()} == {"none:refusal"}


async def test_truncated_reply_is_retried_once_and_never_a_strike(store: Store) -> None:
    """A reply cut at max_tokens: retried once with twice the budget. Complete then, it is the attempt;
    still cut, it is stored as truncated, is never a strike, and an item that only truncates is held, never
    escalated to the panel."""
    store.add_items(fixed_items({"long": [], "fits": []}))

    def reply(body: dict) -> Reply:
        text = body["messages"][-1]["content"]
        if "(item fits)" in text and body["max_tokens"] > 100:  # the retry's larger budget is enough
            return Reply("Answer: " + next(k for k, v in _shown(text).items() if v == "gamma fits"))
        return Reply("Let me think step by step about each option and", finish_reason="length")

    async with ScriptedServer(responder=reply) as srv:
        summary = await run(store, srv, StrikesConfig(max_attempts=2, max_truncated=3,
                                                      sampling=StrikeSampling(max_tokens=100)))
        budgets = [(b["messages"][-1]["content"].split(")")[0][-4:], b["max_tokens"]) for b in srv.bodies]
    assert summary.passed == 1 and summary.escalated == 0 and summary.held_truncated == 1
    assert Counter(budgets) == Counter({("fits", 100): 1, ("fits", 200): 1, ("long", 100): 3, ("long", 200): 3})
    long = [a for a in store.attempts() if a.item_id == "long"]
    assert len(long) == 3 and all(a.matched_by == "none:truncated" and a.letter is None for a in long)
    assert _stage(store, "long") == "generated" and _stage(store, "fits") == "strikes_passed"
    st = strikes_stats(store.attempts(), 2)
    assert st.escalated == 0 and st.truncated_attempts == 3 and st.no_answer_attempts == 0 and st.unresolved == 1
    # held means held: a rerun makes no call; raising max_truncated tries it again, and a wrong answer IS a strike
    def wrong(body: dict) -> Reply:
        shown = _shown(body["messages"][-1]["content"])
        return Reply("Answer: " + next(k for k, v in shown.items() if v != "gamma long"))

    async with ScriptedServer(responder=wrong) as srv:
        rerun = await run(store, srv, StrikesConfig(max_attempts=2, max_truncated=3,
                                                    sampling=StrikeSampling(max_tokens=100)))
        assert srv.count == 0 and rerun.held_truncated == 1
        again = await run(store, srv, StrikesConfig(max_attempts=2, max_truncated=4,
                                                    sampling=StrikeSampling(max_tokens=100)))
        assert srv.count == 2
    assert again.escalated == 1 and _stage(store, "long") == "escalated"


def _stage(store: Store, item_id: str) -> str:
    return store.items(ids=[item_id])[0].stage


def _shown(prompt: str) -> dict[str, str]:
    """Letter -> option text as a strike prompt shows them (lines 'A. text')."""
    return {line[0]: line[3:].strip() for line in prompt.splitlines() if len(line) > 3 and line[1:3] == ". "}


# ---- report numbers ----------------------------------------------------------------------------------
def _att(item: str, no: int, correct: bool, tokens: int, letter: str | None = "A") -> Attempt:
    return Attempt(item_id=item, round=0, attempt_no=no, template="t@1", permutation=["A", "B"], seed=no, call_id=None,
                   raw="", reasoning=None, shown_letter=letter, letter=letter, matched_by="final_line" if letter else "none:x",
                   correct=correct, prompt_tokens=tokens - 10, completion_tokens=10)


def test_stats_histogram_escalation_and_always5_estimate() -> None:
    atts = [_att("a", 1, True, 100),
            _att("b", 1, False, 50, None), _att("b", 2, True, 70),
            *[_att("c", k, False, 40) for k in range(1, 6)]]
    st = strikes_stats(atts, 5)
    assert st.passed_at == {1: 1, 2: 1, 3: 0, 4: 0, 5: 0}
    assert st.escalated == 1 and st.escalation_rate == round(1 / 3, 4)
    assert st.no_answer_attempts == 1 and st.attempts == 8
    assert st.tokens_spent == 100 + 120 + 200
    assert st.tokens_always5_estimate == 500 + 300 + 200  # 5 x each item's mean tokens per attempt
    assert st.token_ratio_vs_always5 == round(420 / 1000, 4)


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="eligible_stages"):
        StrikesConfig(eligible_stages=["nonsense"])
    with pytest.raises(ConfigError, match="max_attempts"):
        StrikesConfig(max_attempts=0)
    cfg = load_config(None, ["strikes.sampling.max_tokens=128", "strikes.eligible_stages=[reviewed]"])
    assert cfg.strikes.sampling.max_tokens == 128 and cfg.strikes.sampling.temperature == 0.7
    assert cfg.strikes.eligible_stages == ["reviewed"]


@pytest.mark.postgres
async def test_waves_on_postgresql(pg_url: str) -> None:
    import uuid

    from sqlalchemy import create_engine, text
    name = f"strikes_{uuid.uuid4().hex[:8]}"  # an own database: the server is shared by the session
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    pg = Store(pg_url.rsplit("/", 1)[0] + "/" + name)
    items, patterns = make_items(25, seed=11)
    pg.add_items(items)
    async with ScriptedServer(responder=PatternResponder(items, patterns)) as srv:
        await run(pg, srv)
        assert srv.count == min_calls(patterns)
    st = strikes_stats(pg.attempts(), 5)
    assert st.attempts == min_calls(patterns) and st.tokens_spent > 0
    assert sum(st.passed_at.values()) + st.escalated == 25
    pg.close()

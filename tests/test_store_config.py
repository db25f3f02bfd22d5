"""The store on SQLite and on a real PostgreSQL; the strict config loader."""
from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from medcot.config import Config, ConfigError, load_config
from medcot.records import CallRecord, Event, Generation, Item
from medcot.store import Store


def call(key: str, item: str = "i1") -> CallRecord:
    return CallRecord(cache_key=key, stage="generate", item_id=item, model="m", endpoint="http://x/v1",
                      messages=[{"role": "user", "content": "问题"}], params={"seed": 1, "temperature": 0.6},
                      response_format=None, prompt_version="cot@1", content="答案：B", reasoning="想一想",
                      finish_reason="stop", prompt_tokens=10, completion_tokens=5, latency_s=0.1)


def exercise(store: Store) -> None:
    items = [Item(id=f"i{n}", family_id=f"i{n}", language="zh", question=f"问题{n}",
                  options={"A": "甲", "B": "乙", "C": "丙", "D": "丁"}, answer="B") for n in (1, 2)]
    assert store.add_items(items) == 2
    assert store.count_items() == 2 and store.stage_counts() == {"imported": 2}
    cid = store.record_call(call("k1"))
    assert store.record_call(call("k1")) == cid  # same cache key -> same row, no duplicate
    found = store.get_call("k1")
    assert found is not None and found[0] == cid and found[1].reasoning == "想一想"
    assert found[1].messages[0]["content"] == "问题" and found[1].params["seed"] == 1
    gen = Generation(item_id="i1", call_id=cid, prompt_version="cot@1", cot="答案：B", reasoning=None,
                     answer="B", matched_by="final_line", option_explanations={"A": "错"}, agrees_with_key=True)
    assert store.save_generation(gen) is True
    assert store.save_generation(gen) is False  # exactly once per item
    assert store.stage_counts() == {"generated": 1, "imported": 1}
    assert store.generated_item_ids() == {"i1"}
    store.log_event(Event(kind="note", item_id="i2", payload={"x": 1}))
    assert [e.kind for e in store.events("i1")] == ["imported", "generated"]
    assert store.call_totals() == {"calls": 1, "prompt_tokens": 10, "completion_tokens": 5}


def test_store_sqlite_wal(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "s.db"))
    exercise(store)
    with store.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"


def test_add_items_is_all_or_nothing(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "s.db"))
    item = Item(id="dup", family_id="dup", language="en", question="q", options={"A": "a", "B": "b",
                "C": "c", "D": "d"}, answer="A")
    with pytest.raises(IntegrityError):
        store.add_items([item, item])
    assert store.count_items() == 0 and store.events() == []


@pytest.mark.postgres
def test_store_postgres(pg_url: str) -> None:
    store = Store(pg_url)
    with store.engine.begin() as conn:  # a clean schema per run of this test
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    store = Store(pg_url)
    assert store.engine.dialect.name == "postgresql"
    exercise(store)


def test_config_precedence_and_errors(tmp_path: Path) -> None:
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("llm:\n  concurrency: 4\n  model: m\nstore:\n  url: ${MEDCOT_TEST_DIR:-/tmp/x}/s.db\n")
    assert load_config(None).llm.concurrency == Config().llm.concurrency
    cfg = load_config(cfg_file)
    assert cfg.llm.concurrency == 4 and cfg.store.url == "/tmp/x/s.db"
    assert load_config(cfg_file, ["llm.concurrency=9"]).llm.concurrency == 9  # command line wins
    cfg_file.write_text("llm:\n  concurency: 4\n")
    with pytest.raises(ConfigError, match=r"c.yaml: unknown key 'llm.concurency'"):
        load_config(cfg_file)
    with pytest.raises(ConfigError, match="unknown key 'nope'"):
        load_config(None, ["nope=1"])
    with pytest.raises(ConfigError, match="must be a number"):
        load_config(None, ["llm.concurrency=many"])
    with pytest.raises(ConfigError, match="least-busy or round-robin"):
        load_config(None, ["llm.strategy=random"])


def test_shipped_configs_load() -> None:
    root = Path(__file__).resolve().parent.parent
    for name in ("demo.yaml", "deepseek-r1.yaml"):
        cfg = load_config(root / "configs" / name)
        assert cfg.run.stages
        for f in cfg.seeds.files:  # seed files live in the repository, never outside it
            path = (root / f).resolve()
            assert not Path(f).is_absolute() and path.is_relative_to(root) and path.is_file(), f
    assert load_config(root / "configs" / "deepseek-r1.yaml").llm.model == "deepseek-ai/DeepSeek-R1"

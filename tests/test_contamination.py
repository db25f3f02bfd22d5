"""Clean evaluation (issue 13, item 1): `medcot eval contamination`, the check `eval run` makes before it serves
any model, the seeds' `exclude` option and the held-out eval files carved from the shared seed data."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from eval_helpers import ITEMS, make_release
from sqlalchemy import insert, update

from eval import contamination as con
from eval import heldout
from eval.config import EvalConfig
from eval.data import load_eval_sets, load_external
from eval.run import run_eval_async
from medcot.cli import main
from medcot.config import load_config
from medcot.db import ItemRow
from medcot.neardup import normalize
from medcot.review_tables import RevisionRow
from medcot.scripted_server import Reply, ScriptedServer
from medcot.seeds import SeedError, excluded_ids, import_seeds, load_seeds, read_id_list
from medcot.store import Store

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "data" / "seeds"
SHARED = REPO / "data" / "seeds"  # the bundled full seed files


@pytest.fixture(autouse=True)
def _hf_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _lines(name: str) -> list[dict]:
    return [json.loads(line) for line in (DEMO / name).read_text(encoding="utf-8").splitlines() if line.strip()]


def _write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def _store_with_demo_seeds(tmp_path: Path, n: int = 10) -> tuple[str, list[dict], list[dict]]:
    """A store holding the first n demo seeds of each language; returns its path and the zh / en records."""
    zh, en = _lines("demo_zh.jsonl"), _lines("demo_en.jsonl")
    url = str(tmp_path / "curation.db")
    store = Store(url)
    import_seeds(_write(tmp_path / "seeds_zh.jsonl", zh[:n]), store)
    import_seeds(_write(tmp_path / "seeds_en.jsonl", en[:n]), store)
    store.close()
    return url, zh, en


def _one_char_changed(record: dict) -> dict:
    """The seed's stem with ONE Chinese character replaced (in the middle), under a new id."""
    q = record["question"]
    i = next(k for k in range(len(q) // 2, len(q)) if "\u4e00" <= q[k] <= "\u9fff")
    new = "甲" if q[i] != "甲" else "乙"
    return dict(record, id="eval-onechar", question=q[:i] + new + q[i + 1:])


def _options_reordered(record: dict) -> dict:
    """The same question with its options in reverse order, re-lettered, the key following its text."""
    letters = sorted(record["options"])
    texts = [record["options"][k] for k in reversed(letters)]
    key_text = record["options"][record["answer"]]
    options = dict(zip(letters, texts))
    return dict(record, id="eval-reordered", options=options,
                answer=next(k for k, v in options.items() if v == key_text))


def _long_zh(records: list[dict], n: int) -> dict:
    return next(r for r in records[:n] if len(normalize(r["question"])) >= 20)


def _contaminated_file(tmp_path: Path, zh: list[dict], en: list[dict], n: int = 10) -> Path:
    clean = dict(en[n + 1], id="eval-clean")  # a demo seed the store never imported
    return _write(tmp_path / "contaminated.jsonl",
                  [_one_char_changed(_long_zh(zh, n)), _options_reordered(en[2]), clean])


def _cli(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, ["eval", "contamination", *args])
    return res.exit_code, res.stdout if "--json" in args else res.output  # --json: stdout is ONE object


# ---- `medcot eval contamination` ------------------------------------------------------------------------------
def test_one_changed_character_and_reordered_options_are_both_listed(tmp_path: Path) -> None:
    url, zh, en = _store_with_demo_seeds(tmp_path)
    path = _contaminated_file(tmp_path, zh, en)
    code, out = _cli("--eval", str(path), "--store", url, "--json")
    assert code == 2
    report = json.loads(out)
    assert report["rule"] == con.RULE_VERSION and report["clean"] is False
    assert report["eval_file"] == str(path)
    assert report["compared"]["eval_items"] == 3 and report["compared"]["store_items"] == 20
    got = {(o["eval_id"], o["matched_id"], o["kind"]) for o in report["overlaps"]}
    assert got == {("eval-onechar", _long_zh(zh, 10)["id"], "near_duplicate"),
                   ("eval-reordered", en[2]["id"], "same_stem")}
    sims = {o["eval_id"]: o["similarity"] for o in report["overlaps"]}
    assert 0.75 <= sims["eval-onechar"] < 1.0 and sims["eval-reordered"] == 1.0  # option order ignored
    assert report["overlapping_eval_ids"] == ["eval-onechar", "eval-reordered"]


def test_a_clean_file_exits_0_and_the_table_says_so(tmp_path: Path) -> None:
    url, zh, en = _store_with_demo_seeds(tmp_path)
    path = _write(tmp_path / "clean.jsonl", zh[12:15] + en[12:15])
    code, out = _cli("--eval", str(path), "--store", url, "--json")
    assert code == 0 and json.loads(out)["overlaps"] == [] and json.loads(out)["clean"] is True
    code, out = _cli("--eval", str(path), "--store", url)
    assert code == 0 and "clean: no overlap" in out and "eval_items 6" in out


def test_the_same_id_and_the_readable_table(tmp_path: Path) -> None:
    url, zh, _ = _store_with_demo_seeds(tmp_path)
    renamed = dict(zh[20], id=zh[0]["id"])  # another question under a stored id
    code, out = _cli("--eval", str(_write(tmp_path / "e.jsonl", [renamed])), "--store", url)
    assert code == 2
    row = next(line for line in out.splitlines() if line.startswith(zh[0]["id"]))
    assert row.split()[:3] == [zh[0]["id"], zh[0]["id"], "same_id"] and row.split()[-1] == "store"
    assert "NOT clean: 1 eval item(s) overlap" in out


def test_the_original_wording_of_a_revised_item_counts(tmp_path: Path) -> None:
    url, zh, _ = _store_with_demo_seeds(tmp_path)
    store = Store(url)
    target = zh[3]
    with store.transaction() as conn:  # a reviewer rewrote the stem: the store now holds other words
        conn.execute(update(ItemRow).where(ItemRow.id == target["id"]).values(question="完全不同的题干：以下哪项正确描述了该病"))
        conn.execute(insert(RevisionRow).values(item_id=target["id"], field="question", old=target["question"],
                                                new="完全不同的题干：以下哪项正确描述了该病"))
    store.close()
    original = dict(target, id="eval-original")
    code, out = _cli("--eval", str(_write(tmp_path / "e.jsonl", [original])), "--store", url, "--json")
    assert code == 2
    (o,) = json.loads(out)["overlaps"]
    assert (o["matched_id"], o["kind"], o["source"]) == (target["id"], "same_stem", "store (original wording)")


def test_bad_input_exits_2_naming_file_line_and_field(tmp_path: Path) -> None:
    url, zh, _ = _store_with_demo_seeds(tmp_path, n=2)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(zh[5]) + "\n" + json.dumps({k: v for k, v in zh[6].items() if k != "answer"}) + "\n")
    code, out = _cli("--eval", str(bad), "--store", url)
    assert code == 2 and "bad.jsonl:2: field 'answer': missing" in out
    code, out = _cli("--eval", str(bad), "--store", str(tmp_path / "nowhere.db"))
    assert code == 2 and "nowhere.db" in out and "no such SQLite file" in out
    code, out = _cli("--eval", str(bad))
    assert code == 2 and "nothing to compare with" in out
    code, out = _cli("--store", url)
    assert code == 2 and "exactly one of --eval" in out


def test_release_rows_and_the_releases_own_split(tmp_path: Path) -> None:
    # the test split holds a copy of the train row t1 (another family): its own split must flag it
    copy_of_train = ("q5", "en", "Train only question?", {"A": "y", "B": "x", "C": "w", "D": "z"}, "A", "misc")
    release = make_release(tmp_path / "release", [*ITEMS, copy_of_train])
    code, out = _cli("--release", str(release), "--release-split", "test", "--json")
    report = json.loads(out)
    assert code == 2 and [(o["eval_id"], o["matched_id"], o["kind"]) for o in report["overlaps"]] == [
        ("q5", "t1", "same_stem")]
    assert report["overlaps"][0]["source"] == "release validated/train"
    assert report["compared"]["release_rows"] == 1 + 5 + 5          # validated train + test, panel test
    clean = make_release(tmp_path / "clean-release")
    code, out = _cli("--release", str(clean), "--release-split", "test", "--json")
    assert code == 0 and json.loads(out)["compared"]["references"] == 1  # only the train row is compared
    # an external file is compared with EVERY split: q1 reworded a little is caught in the test split
    q1 = {"id": "ext-q1", "question": "Which drug is first line for anaphylaxis ?", "language": "en",
          "options": {"A": "Salbutamol", "B": "Epinephrine", "C": "Prednisone", "D": "Diphenhydramine"}, "answer": "B"}
    code, out = _cli("--eval", str(_write(tmp_path / "e.jsonl", [q1])), "--release", str(clean), "--json")
    assert code == 2 and {(o["matched_id"], o["source"]) for o in json.loads(out)["overlaps"]} == {
        ("q1", "release validated/test")}


# ---- `medcot eval run` ---------------------------------------------------------------------------------------
def _eval_cfg(tmp_path: Path, ext: Path, store_url: str, url: str = "http://127.0.0.1:9/v1", **extra) -> Path:
    data = {"out_dir": str(tmp_path / "out"), "external": [{"name": "ext", "path": str(ext)}],
            "models": [{"name": "m1", "kind": "base", "path": "served-elsewhere"}],
            "server": {"managed": False}, "llm": {"endpoints": [url], "max_retries": 0},
            "bootstrap": {"resamples": 200}, "contamination": {"store": store_url}, **extra}
    path = tmp_path / "eval.yaml"
    path.write_text(json.dumps(data))
    return path


def _no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to serve a model or open an LLM client fails the test."""
    def refuse(*_a, **_k):
        raise AssertionError("a model was served or an LLM client was opened before the contamination check")
    monkeypatch.setattr("eval.run.VLLMServer", refuse)
    monkeypatch.setattr("eval.run.LLMClient", refuse)
    monkeypatch.setattr("eval.run.serve_group", refuse)


def test_eval_run_refuses_overlaps_before_serving_any_model(tmp_path: Path, monkeypatch) -> None:
    url, zh, en = _store_with_demo_seeds(tmp_path)
    cfg_path = _eval_cfg(tmp_path, _contaminated_file(tmp_path, zh, en), url)
    _no_model(monkeypatch)
    res = CliRunner().invoke(main, ["eval", "run", "--config", str(cfg_path), "--no-progress"])
    assert res.exit_code == 2, res.output
    assert "2 eval item(s) overlap training data" in res.output
    assert "ext/eval-onechar" in res.output and "ext/eval-reordered" in res.output
    assert not (tmp_path / "out" / "results.json").exists() and not (tmp_path / "out" / "cache.db").exists()


async def test_allow_overlap_reports_contaminated_items_apart(tmp_path: Path) -> None:
    url, zh, en = _store_with_demo_seeds(tmp_path)
    path = _contaminated_file(tmp_path, zh, en)
    keys = {r["id"]: r["answer"] for r in map(json.loads, path.read_text().splitlines())}

    def responder(body: dict) -> Reply:  # right on the clean item, wrong on both contaminated ones
        text = body["messages"][-1]["content"]
        right = en[11]["question"] in text
        answer = keys["eval-clean"] if right else "E" if "E." in text or "E)" in text else "D"
        return Reply(f"Answer: {answer}" if "Answer" in text or right else f"答案：{answer}")

    async with ScriptedServer(responder) as srv:
        cfg = load_config(_eval_cfg(tmp_path, path, url, srv.base_url,
                                    contamination={"store": url, "allow_overlap": True}), cls=EvalConfig)
        results = await run_eval_async(cfg, progress=False)
    record = results["contamination"]
    assert record["checked"] and record["allow_overlap"] and record["rule"] == con.RULE_VERSION
    assert record["overlapping_eval_ids"] == ["eval-onechar", "eval-reordered"]
    assert record["compared"]["eval_items"] == 3 and record["compared"]["overlapping_eval_items"] == 2
    split = results["models"]["m1"]["contamination"]
    assert split["clean"]["ext"]["n"] == 1 and split["contaminated"]["ext"]["n"] == 2
    assert split["clean"]["ext"]["accuracy"] == 1.0
    on_disk = json.loads((Path(cfg.out_dir) / "results.json").read_text())
    assert on_disk["contamination"]["overlapping_eval_ids"] == ["eval-onechar", "eval-reordered"]
    md = (Path(cfg.out_dir) / "results.md").read_text()
    assert "## Contamination check" in md and "**2 overlapping**" in md and "`eval-onechar`" in md


async def test_every_results_file_records_the_check_even_when_clean(tmp_path: Path) -> None:
    url, _, en = _store_with_demo_seeds(tmp_path)
    path = _write(tmp_path / "clean.jsonl", en[15:17])
    async with ScriptedServer(lambda body: Reply("Answer: A")) as srv:
        cfg = load_config(_eval_cfg(tmp_path, path, url, srv.base_url), cls=EvalConfig)
        results = await run_eval_async(cfg, progress=False)
    record = json.loads((Path(cfg.out_dir) / "results.json").read_text())["contamination"]
    assert record["checked"] and record["clean"] and record["overlaps"] == [] and not record["allow_overlap"]
    assert record["compared"]["store_items"] == 20 and "contamination" not in results["models"]["m1"]
    assert "**0 overlapping**" in (Path(cfg.out_dir) / "results.md").read_text()


# ---- seeds.exclude ---------------------------------------------------------------------------------------------
def test_excluded_seeds_are_never_imported_and_the_limit_counts_the_rest(tmp_path: Path) -> None:
    zh = _lines("demo_zh.jsonl")
    ids = tmp_path / "ids.txt"
    ids.write_text(f"# held out\n{zh[0]['id']}\n\n{zh[2]['id']}  # a comment\n")
    assert read_id_list(ids) == {zh[0]["id"], zh[2]["id"]}
    assert read_id_list(_write(tmp_path / "held.jsonl", zh[5:7])) == {zh[5]["id"], zh[6]["id"]}
    skip = excluded_ids([ids, tmp_path / "held.jsonl"])
    seeds = load_seeds(DEMO / "demo_zh.jsonl", None, limit=3, exclude=skip)
    assert [s.id for s in seeds] == [zh[1]["id"], zh[3]["id"], zh[4]["id"]]
    store = Store(str(tmp_path / "s.db"))
    assert import_seeds(DEMO / "demo_zh.jsonl", store, exclude=skip) == 26
    assert not skip & store.existing_ids()
    store.close()
    with pytest.raises(SeedError, match="no such file"):
        excluded_ids([tmp_path / "missing.txt"])
    cfg = load_config(None, ["seeds.exclude=[data/eval/heldout_ids.txt]"])
    assert cfg.seeds.exclude == ["data/eval/heldout_ids.txt"]


# ---- the held-out split and the production / demo configs -------------------------------------------------------


def test_the_committed_heldout_files_follow_the_rule() -> None:
    files, counts = heldout.expected_files()
    for name, text in files.items():
        assert (REPO / "data" / "eval" / name).read_text(encoding="utf-8") == text, name
    assert counts == {"zh": {"source": 1000, "held_out": 185, "dropped_overlapping": 0, "eval_items": 185},
                      "en": {"source": 500, "held_out": 85, "dropped_overlapping": 0, "eval_items": 85}}
    held = read_id_list(REPO / "data" / "eval" / heldout.IDS_FILE)
    assert len(held) == 270 and all(heldout.is_heldout(i) for i in held)


def test_the_production_eval_files_do_not_overlap_the_production_curation_seeds(monkeypatch) -> None:
    monkeypatch.chdir(REPO)
    cfg = load_config("configs/eval/production.yaml", cls=EvalConfig)
    assert cfg.contamination.seeds_from == ["configs/deepseek-r1.yaml"]
    items = [it for ext in cfg.external for it in load_external(ext)]
    assert len(items) == 270
    refs = con.load_references(seeds_from=cfg.contamination.seeds_from)
    result = con.check([(items, None)], "production", refs)
    assert result.clean, result.overlaps[:5]
    assert result.compared["curation_seeds"] == 1500 - 270
    # the same check without the exclusion: every eval item is a curated seed (what production did before)
    every_seed = con.References(seeds=[con.Reference(s.id, s.question, s.options, s.language, "all seeds", s.id)
                                       for f in ("seed_zh.jsonl", "seed_en.jsonl")
                                       for s in load_seeds(SHARED / f, None)], sources=["all"])
    leaky = con.check([(items, None)], "production", every_seed)
    assert leaky.compared["overlapping_eval_items"] == 270 and {o.kind for o in leaky.overlaps} == {"same_id"}


def test_the_demo_eval_sets_are_clean_against_the_demo_curation(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.chdir(REPO)
    cfg = load_config("configs/eval/demo.yaml", cls=EvalConfig)
    cfg.contamination.seeds_from = ["configs/demo.yaml"]
    cfg.release.dir = str(make_release(tmp_path / "release"))  # what the demo's build stage fills in
    items = load_eval_sets(cfg)
    result = con.check_eval_config(cfg, items)
    assert result.clean and result.compared["curation_seeds"] == 8
    assert result.compared["eval_items"] == 4 + 2   # release test (limit 4) + one held-out seed per language


def test_the_seeds_stage_of_medcot_run_honours_seeds_exclude(tmp_path: Path) -> None:
    from medcot.pipeline import run_pipeline
    zh = _lines("demo_zh.jsonl")
    ids = tmp_path / "held.txt"
    ids.write_text(f"{zh[0]['id']}\n{zh[1]['id']}\n")
    cfg = load_config(None, [f"store.url={tmp_path / 's.db'}", f"run.out_dir={tmp_path / 'run'}", "run.stages=[seeds]",
                             f"seeds.files=[{DEMO / 'demo_zh.jsonl'}]", f"seeds.exclude=[{ids}]",
                             "seeds.per_file_limit=3"])
    run_pipeline(cfg, progress=False)
    store = Store(cfg.store.url)
    assert store.existing_ids() == {zh[2]["id"], zh[3]["id"], zh[4]["id"]}
    store.close()

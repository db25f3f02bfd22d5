"""The release builder end to end on synthetic stores filled through the real tables: load_dataset round
trip with the declared features, family splits, integrity failures, determinism, the card, stages, CLI."""
from __future__ import annotations

import json
from pathlib import Path

import click
import datasets
import pytest
from click.testing import CliRunner
from sqlalchemy import insert, select, update

from dataset_builder.build import BuildError, build_release, file_hashes
from dataset_builder.features import CONFIGS, FEATURES, SPLITS
from dataset_builder.integrity import ReleaseIntegrityError
from dataset_builder.synthetic import SyntheticSpec, make_store
from medcot.cli import main
from medcot.config import BuildConfig, load_config
from medcot.db import ItemRow
from medcot.review_tables import DecisionRow, ReviewRow, RubricScoreRow, UserRow
from medcot.revision import content_hash


@pytest.fixture(autouse=True)
def hf_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf" / "datasets"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def load(release: Path, config: str, tmp_path: Path) -> datasets.DatasetDict:
    return datasets.load_dataset(str(release), config, cache_dir=str(tmp_path / "hf" / "datasets"))


def first_item(store, language: str | None = None) -> str:
    query = select(ItemRow.id).order_by(ItemRow.id)
    if language:
        query = query.where(ItemRow.language == language)
    with store.engine.connect() as conn:
        return conn.scalars(query).first()


@pytest.fixture
def store(tmp_path: Path):
    s = make_store(str(tmp_path / "store.db"), SyntheticSpec(items=240, seed=1))
    yield s
    s.close()


def test_round_trip_every_config_with_features(store, tmp_path: Path) -> None:
    result = build_release(store, BuildConfig(), tmp_path / "rel")
    for config in CONFIGS:
        ds = load(result.release_dir, config, tmp_path)
        assert set(ds) == set(SPLITS)
        for split in SPLITS:
            assert ds[split].features == FEATURES, (config, split)
            assert ds[split].num_rows == result.counts[config][split] > 0
    train = load(result.release_dir, "validated", tmp_path)["train"]
    assert train.features["answer"].names == ["A", "B", "C", "D", "E"]
    assert all(r["options"][train.features["answer"].int2str(r["answer"])] for r in train)
    four = [r for r in train if r["options"]["D"] and r["options"]["E"] is None]
    assert four, "4-option items keep E as null"
    panel = [r for s in SPLITS for r in load(result.release_dir, "panel", tmp_path)[s]]
    assert all(r["rubric"] for r in panel)
    item = panel[0]  # its rubric: every score given to the released text (question, options, key, CoT)
    released = content_hash(item["question"], item["options"], "ABCDE"[item["answer"]], item["cot"])
    with store.engine.connect() as conn:
        n = len(conn.execute(select(RubricScoreRow).where(RubricScoreRow.item_id == item["id"],
                                                          RubricScoreRow.revision_hash == released)).all())
    assert n > 0 and len(item["rubric"]) == n and {"dimension", "score", "rater_kind", "rater_id_hash", "round"} <= set(
        item["rubric"][0])
    assert all(r["validation"] == "expert" and r["consensus"]["expert_validated"] for r in train)


def test_splits_by_family_no_leakage_and_consistent_across_configs(store, tmp_path: Path) -> None:
    result = build_release(store, BuildConfig(seed=7), tmp_path / "rel")
    where: dict[str, set[str]] = {}
    for config in CONFIGS:
        ds = load(result.release_dir, config, tmp_path)
        for split in SPLITS:
            for fam in ds[split]["family_id"]:
                where.setdefault(fam, set()).add(split)
    assert where and all(len(splits) == 1 for splits in where.values())
    assert sum(1 for s in where.values() if s == {"test"}) >= 1


def test_unvalidated_is_the_raw_output_and_validated_the_revised(store, tmp_path: Path) -> None:
    result = build_release(store, BuildConfig(), tmp_path / "rel")
    unval = {r["id"]: r for s in SPLITS for r in load(result.release_dir, "unvalidated", tmp_path)[s]}
    val = {r["id"]: r for s in SPLITS for r in load(result.release_dir, "validated", tmp_path)[s]}
    assert set(val) <= set(unval) and len(unval) == 240
    edited = [i for i, r in val.items() if r["question"] != unval[i]["question"]]
    regenerated = [i for i, r in val.items() if r["revision_status"] == "regenerated"]
    assert edited and regenerated
    for i in edited:
        assert val[i]["revision_status"] in ("modified", "regenerated")
        assert unval[i]["revision_status"] == "unchanged" and unval[i]["validation"] == "none"
    for i in regenerated:
        assert val[i]["cot"] != unval[i]["cot"]
    assert all(not r["reviews"] and not r["rubric"] and r["five_strike"]["escalated"] is None for r in unval.values())
    assert all(r["provenance"]["model"] == "deepseek-r1" for r in unval.values())


def test_integrity_failure_names_the_item_and_writes_nothing(store, tmp_path: Path) -> None:
    wrong_key = first_item(store, "en")
    with store.transaction() as conn:  # an approved item whose human reviews are in fact both rejections
        panel_items = select(DecisionRow.item_id).where(DecisionRow.user_id.is_not(None))
        bad = conn.execute(select(DecisionRow.item_id).where(DecisionRow.kind == "approved",
                                                             DecisionRow.item_id != wrong_key,
                                                             DecisionRow.item_id.not_in(panel_items))).scalars().first()
        conn.execute(update(ReviewRow).where(ReviewRow.item_id == bad).values(approve=False))
        conn.execute(update(ItemRow).where(ItemRow.id == wrong_key).values(answer="E"))  # en items have A-D
    out = tmp_path / "out" / "rel"
    with pytest.raises(ReleaseIntegrityError) as err:
        build_release(store, BuildConfig(), out)
    text = str(err.value)
    assert f"[validated] {bad}: invariant" in text and "raw votes hold 0 human approval(s)" in text
    assert f"{wrong_key}: answer_in_options" in text
    assert not out.exists() and (not out.parent.exists() or not any(out.parent.iterdir()))


def test_failed_build_leaves_the_previous_release_untouched(store, tmp_path: Path) -> None:
    out = tmp_path / "rel"
    build_release(store, BuildConfig(), out)
    before = file_hashes(out)
    victim = first_item(store)
    with store.transaction() as conn:
        conn.execute(update(ItemRow).where(ItemRow.id == victim).values(language="fr"))
    with pytest.raises(ReleaseIntegrityError, match=f"{victim}: schema: language 'fr'"):
        build_release(store, BuildConfig(), out)
    assert file_hashes(out) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".rel")) == []


def test_refuses_to_replace_a_folder_that_is_not_a_release(store, tmp_path: Path) -> None:
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    with pytest.raises(BuildError, match="not a medcot release"):
        build_release(store, BuildConfig(), tmp_path / "precious")
    assert (tmp_path / "precious" / "notes.txt").read_text() == "keep me"


def test_identical_store_gives_byte_identical_files(store, tmp_path: Path) -> None:
    a = build_release(store, BuildConfig(), tmp_path / "a")
    b = build_release(store, BuildConfig(), tmp_path / "b")
    ha, hb = file_hashes(a.release_dir), file_hashes(b.release_dir)
    assert ha == hb and len(ha) >= 17
    assert any(k.endswith(".png") for k in ha) and any(k.endswith(".parquet") for k in ha)
    build_release(store, BuildConfig(), tmp_path / "a")  # rebuilt in place: same bytes
    assert file_hashes(tmp_path / "a") == ha
    c = build_release(store, BuildConfig(seed=99), tmp_path / "c")
    assert file_hashes(c.release_dir) != ha


def test_card_has_yaml_funnel_figures_and_honest_labels(store, tmp_path: Path) -> None:
    result = build_release(store, BuildConfig(repo_id="org/medcot"), tmp_path / "rel")
    card = (result.release_dir / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\n") and "dataset_info:" in card and "config_name: validated" in card
    assert "default: true" in card and 'load_dataset("org/medcot", "validated")' in card
    for hub_field in ("annotations_creators:", "task_ids:", "multiple-choice-qa", "source_datasets:",
                      "license_name: medcot-seed-licences", "license_link: LICENSE.md"):
        assert hub_field in card.split("\n---\n", 1)[0], hub_field
    assert "eprint        = {2505.06912}" in card and "Ding, Chao" in card and "howpublished = {org/medcot}" in card
    licence = (result.release_dir / "LICENSE.md").read_text(encoding="utf-8")
    assert "seed questions" in licence and "research use only" in licence
    for step in ("seed questions imported | 24", "QA pairs constructed (seeds + expanded) | 240",
                 "flagged: failed five-strike", "reviewed by the expert panel", "released as validated"):
        assert step in card
    assert "![Items per clinical specialty](figures/specialty_distribution.png)" in card
    assert "![Rubric score distribution](figures/rubric_scores.png)" in card
    for png in ("figures/specialty_distribution.png", "figures/rubric_scores.png"):
        assert (result.release_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Krippendorff's alpha" in card and "Fleiss' kappa" in card
    assert "kyre-99/CMExam-Dataset@303a45e | Apache-2.0" in card and "| MIT |" in card
    assert "NOT expert-validated." not in card.split("## Configs")[0]  # no automated banner: all expert
    assert "## Intended use" in card and "## Bias, risks and limitations" in card and "## Citation" in card
    stats = json.loads((result.release_dir / "release_stats.json").read_text(encoding="utf-8"))
    assert stats["near_duplicates"]["counts"]["validated"] == {"validation": 0, "test": 0}


def test_card_example_is_a_released_row_and_its_accuracy_snippet_runs(store, tmp_path: Path) -> None:
    """The card's example instance is a real row, and its Python snippet, run as printed against the local
    release, scores with the shipped extractor exactly as medcot's own extractor does."""
    from medcot.extract import extract_answer
    rel = build_release(store, BuildConfig(), tmp_path / "rel").release_dir
    card = (rel / "README.md").read_text(encoding="utf-8")
    assert (rel / "lm_eval" / "medcot_extract.py").read_bytes() == Path(extract_answer.__code__.co_filename).read_bytes()
    example = json.loads(card.split("```json\n", 1)[1].split("\n```", 1)[0])
    row = next(r for r in load(rel, "validated", tmp_path)["train"] if r["id"] == example["id"])
    assert example["answer"] == row["answer"] and example["answer_letter"] == row["answer_letter"]
    assert example["question"] == row["question"] and row["cot"].startswith(example["cot"].split(" … [")[0])
    code = card.split("```python\nimport os\n", 1)[1].split("\n```", 1)[0]
    code = "import os\n" + code.replace('RELEASE = "PATH/TO/RELEASE"', f"RELEASE = {str(rel)!r}")
    scope: dict = {}
    exec(compile(code, "card-snippet", "exec"), scope)  # noqa: S102 - the card's own snippet, as a user runs it
    rows = scope["rows"]
    responses = [r["cot"] for r in rows][:-1] + ["no final answer here"]
    got = scope["accuracy"](responses)
    letters = [extract_answer(t, {k: v for k, v in r["options"].items() if v}).letter for t, r in zip(responses, rows)]
    assert got["accuracy"] == sum(a == r["answer_letter"] for a, r in zip(letters, rows)) / len(rows)
    assert got["no_answer_rate"] == letters.count(None) / len(rows) > 0
    with pytest.raises(ValueError):  # one response per row, or an error: never a silently shorter score
        scope["accuracy"](responses[:-1])


def test_reasoning_column_carries_the_generators_thinking_never_validated(store, tmp_path: Path) -> None:
    from medcot.db import GenerationRow
    with store.transaction() as conn:
        rows = conn.execute(select(GenerationRow.id, GenerationRow.item_id, GenerationRow.purpose)).all()
        thinking = {r.id: f"<thinking about {r.item_id} ({r.purpose})>" for r in rows}
        for gid, text in thinking.items():
            conn.execute(update(GenerationRow).where(GenerationRow.id == gid).values(reasoning=text))
    rel = build_release(store, BuildConfig(), tmp_path / "rel").release_dir
    assert FEATURES["reasoning"].dtype == "string"
    raw = [r for split in load(rel, "unvalidated", tmp_path).values() for r in split]
    assert raw and all(r["reasoning"] == f"<thinking about {r['id']} (initial)>" for r in raw)
    validated = [r for split in load(rel, "validated", tmp_path).values() for r in split]
    assert validated and all(r["reasoning"] is None or r["reasoning"].startswith(f"<thinking about {r['id']} (")
                             for r in validated)
    card = (rel / "README.md").read_text(encoding="utf-8")
    assert "never reviewed" in card and "NEVER expert-validated" in card


def test_partial_store_says_what_is_absent(tmp_path: Path) -> None:
    store = make_store(str(tmp_path / "s.db"), SyntheticSpec(items=60, reviewed=0.0, seed=2))
    result = build_release(store, BuildConfig(), tmp_path / "rel")
    card = (result.release_dir / "README.md").read_text(encoding="utf-8")
    assert "no reviews recorded" in card and "five-strike re-answering has not run" in card
    assert "No rubric scores are recorded in this build" in card and "rubric_scores.png" not in card
    assert "`validated` has no rows in this build" in card and "default: true" not in card
    assert any("no reviews recorded" in a for a in result.absent)
    assert load(result.release_dir, "unvalidated", tmp_path)["train"].num_rows > 0
    with pytest.raises(ValueError, match="validated"):
        load(result.release_dir, "validated", tmp_path)


def test_automated_reviewers_only_when_allowed_and_labelled(tmp_path: Path) -> None:
    store = make_store(str(tmp_path / "s.db"), SyntheticSpec(items=80, reviewers="llm", seed=3))
    strict = build_release(store, BuildConfig(), tmp_path / "strict")
    assert sum(strict.counts["validated"].values()) == 0
    assert "approved by automated reviewers only" in (strict.release_dir / "README.md").read_text(encoding="utf-8")
    demo = build_release(store, BuildConfig(allow_automated_reviewers=True), tmp_path / "demo")
    validated = load(demo.release_dir, "validated", tmp_path)  # 8 families: a split may be empty (hash rule)
    rows = [r for s in validated for r in validated[s]]
    assert rows and all(r["validation"] == "automated" and "NOT expert-validated" in r["validation_note"]
                        and not r["consensus"]["expert_validated"] for r in rows)
    card = (demo.release_dir / "README.md").read_text(encoding="utf-8")
    assert "**Automated, NOT expert-validated.**" in card and "all raters, automated reviewers included" in card


def test_expert_label_needs_two_human_users_on_record(tmp_path: Path) -> None:
    store = make_store(str(tmp_path / "s.db"), SyntheticSpec(items=20, reviewers="llm", seed=4))
    item = first_item(store)
    with store.transaction() as conn:  # a decision claiming two human approvals nobody human gave
        conn.execute(insert(DecisionRow).values(item_id=item, user_id=None, kind="approved",
                                                human_approvals=2, automated_approvals=0, expert_validated=True,
                                                details={}))
    with pytest.raises(ReleaseIntegrityError, match=f"{item}: invariant: .*claims 2 human .*raw votes hold 0 human"):
        build_release(store, BuildConfig(), tmp_path / "rel")


def test_build_and_push_commands(store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)  # no login on this machine either
    runner = CliRunner()
    assert {"build", "push"} <= set(main.list_commands(click.Context(main)))
    out = tmp_path / "rel"
    res = runner.invoke(main, ["build", "--store", store.url, "--out", str(out), "--json",
                               "--set", "build.splits={train: 0.6, validation: 0.2, test: 0.2}"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["release_dir"] == str(out.resolve()) and summary["counts"]["validated"]["test"] > 0
    res = runner.invoke(main, ["push", str(out), "--repo-id", "org/medcot", "--private", "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "create_repo(repo_id='org/medcot', repo_type='dataset', private=True" in res.output
    assert "upload README.md" in res.output and "upload data/validated/test-00000-of-00001.parquet" in res.output
    res = runner.invoke(main, ["push", str(out), "--repo-id", "org/medcot"])
    assert res.exit_code == 2 and "HF_TOKEN" in res.output and "hf auth login" in res.output
    res = runner.invoke(main, ["push", str(tmp_path), "--repo-id", "org/medcot", "--dry-run"])
    assert res.exit_code == 2 and "not a medcot release" in res.output
    for bad in ("org/med cot", "org//x", "-org/x", "org/x/y", "org/x..y"):
        res = runner.invoke(main, ["push", str(out), "--repo-id", bad, "--dry-run"])
        assert res.exit_code == 2 and "ORG/NAME" in res.output, bad


def test_dry_run_lists_the_deletions_of_a_re_push_with_fewer_shards(store, tmp_path: Path) -> None:
    from dataset_builder.push import plan_push, record_push
    out = tmp_path / "rel"
    build_release(store, BuildConfig(shard_rows=20, version="1.0.0"), out)
    many = sorted(p.name for p in (out / "data" / "unvalidated").glob("train-*.parquet"))
    assert len(many) > 1
    first = plan_push(out, "org/medcot")
    assert first.deletions == [] and first.tag == "v1.0.0"
    record_push(first, "abc123")  # as a completed upload leaves it
    build_release(store, BuildConfig(shard_rows=50000, version="1.1.0"), out)  # one shard per split now
    res = CliRunner().invoke(main, ["push", str(out), "--repo-id", "org/medcot", "--dry-run"])
    assert res.exit_code == 0, res.output
    for name in many:
        assert f"delete data/unvalidated/{name} (in the last push, not in this release)" in res.output
    assert "upload data/unvalidated/train-00000-of-00001.parquet" in res.output
    assert "create_tag(repo_id='org/medcot', tag='v1.1.0'" in res.output
    assert "upload .medcot-push.json" not in res.output  # the record itself is never uploaded
    other = plan_push(out, "org/another")  # deletions are per repository
    assert other.deletions == []


def test_push_writes_the_repo_id_into_the_card_snippets(store, tmp_path: Path) -> None:
    from dataset_builder.push import CARD_PLACEHOLDER, PushError, plan_push, write_repo_into_card
    out = tmp_path / "rel"
    build_release(store, BuildConfig(), out)  # no build.repo_id: the card names the placeholder
    assert f'load_dataset("{CARD_PLACEHOLDER}"' in (out / "README.md").read_text(encoding="utf-8")
    res = CliRunner().invoke(main, ["push", str(out), "--repo-id", "org/medcot", "--dry-run"])
    assert res.exit_code == 0 and "written as 'org/medcot'" in res.output
    plan = plan_push(out, "org/medcot")
    assert plan.card_rewrite
    write_repo_into_card(plan)  # what `push` does before the upload
    card = (out / "README.md").read_text(encoding="utf-8")
    assert CARD_PLACEHOLDER not in card and 'load_dataset("org/medcot", "validated")' in card
    assert 'RELEASE = "org/medcot"' in card and not plan_push(out, "org/medcot").card_rewrite
    with pytest.raises(PushError, match="rebuild with `build.repo_id=org/other`"):
        plan_push(out, "org/other")  # the card names org/medcot now: never pushed elsewhere in silence


def test_private_never_goes_out_public_in_silence() -> None:
    from types import SimpleNamespace

    from dataset_builder.push import PushError, PushPlan, _check_visibility
    calls: list[str] = []
    api = SimpleNamespace(repo_info=lambda repo_id, repo_type: SimpleNamespace(private=False),
                          update_repo_settings=lambda repo_id, private, repo_type: calls.append(f"{repo_id} {private}"))
    with pytest.raises(PushError, match="PUBLIC"):
        _check_visibility(api, PushPlan("org/x", private=True, folder=Path(".")))
    assert calls == []
    _check_visibility(api, PushPlan("org/x", private=True, folder=Path("."), make_private=True))
    assert calls == ["org/x True"]
    _check_visibility(api, PushPlan("org/x", private=False, folder=Path(".")))  # public push: nothing to check


def test_pipeline_build_and_export_stages(store, tmp_path: Path) -> None:
    from medcot.pipeline import run_pipeline
    for name in ("build", "export"):
        cfg = load_config(None, [f"store.url={store.url}", f"run.out_dir={tmp_path / name}", f"run.stages=[{name}]"])
        report = run_pipeline(cfg, progress=False)
        release = Path(report["sections"][name]["release_dir"])
        assert release == (tmp_path / name / "release").resolve() and (release / "README.md").is_file()
        assert "released as validated" in (tmp_path / name / "report.md").read_text(encoding="utf-8")


def test_demo_config_builds_with_automated_reviewers() -> None:
    cfg = load_config(Path(__file__).resolve().parent.parent / "configs" / "demo.yaml")
    assert cfg.build.allow_automated_reviewers is True
    assert cfg.run.stages.index("build") > cfg.run.stages.index("consensus")
    assert "export" not in cfg.run.stages


def test_build_config_is_validated() -> None:
    from medcot.config import ConfigError
    with pytest.raises(ConfigError, match="build.splits"):
        load_config(None, ["build.splits={train: 0.5, test: 0.5}"])
    with pytest.raises(ConfigError, match="summing to 1"):
        load_config(None, ["build.splits={train: 0.5, validation: 0.1, test: 0.1}"])
    with pytest.raises(ConfigError, match="unknown key 'build.colour'"):
        load_config(None, ["build.colour=red"])
    with pytest.raises(ConfigError, match="repo_id"):
        load_config(None, ["build.repo_id=nope"])


def test_reviewers_are_hashed_not_named(store, tmp_path: Path) -> None:
    with store.engine.connect() as conn:
        names = list(conn.scalars(select(UserRow.name)))
    result = build_release(store, BuildConfig(), tmp_path / "rel")
    for path in result.release_dir.rglob("*"):
        if path.is_file() and path.suffix in (".md", ".json"):
            assert not any(n in path.read_text(encoding="utf-8") for n in names), path
    rows = [r for s in SPLITS for r in load(result.release_dir, "panel", tmp_path)[s]]
    ids = {x["rater_id_hash"] for r in rows for x in r["rubric"]} | {x["reviewer_id_hash"] for r in rows
                                                                      for x in r["reviews"]}
    assert ids and all(len(i) == 16 and int(i, 16) >= 0 for i in ids) and not ids & set(names)

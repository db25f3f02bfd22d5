"""Fast training tests (no model training): formatting, config, equal-N selection, CLI wiring."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from medcot.config import ConfigError, load_config  # noqa: E402
from training.config import TrainConfig, load_train_config, run_config, to_dict  # noqa: E402
from training.data import (  # noqa: E402
    ArmPool,
    common_size,
    equal_selections,
    family_sizes,
    pick_families,
    reachable,
    select_arms,
)
from training.format import (  # noqa: E402
    FormatError,
    SFTExample,
    build_completion,
    data_hash,
    example_hash,
    format_row,
    strip_final_answer_lines,
)
from training.train import Hardware, precision_args, weights_dtype  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ZH = {"id": "z1", "family_id": "f1", "language": "zh", "question": "下列哪种病变引起的胸痛常沿一侧肋间神经分布",
      "options": {"A": "胸肌劳损", "B": "流行性胸痛", "C": "颈椎病", "D": "带状疱疹", "E": None},
      "answer": 3, "cot": "带状疱疹沿神经分布。\nA. 错误\n答案：D"}
EN = {"id": "e1", "family_id": "f2", "language": "en", "question": "Which drug is not used in CPCR?",
      "options": {"A": "Adrenalin", "B": "Vasopressin", "C": "Atropine", "D": "Amiodarone", "E": None},
      "answer": "C", "cot": "Atropine was removed from the algorithm.\n\n**Final answer:** C"}


# --- formatting ------------------------------------------------------------------------------------
@pytest.mark.parametrize("line", ["答案：D", "答案: D", "最终答案：(D)", "**答案：** D", "Answer: D", "answer - D.",
                                  "**Final answer:** (D)", "Correct answer is D", "  Answer：Ｄ", "答案：【D】。"])
def test_final_answer_lines_are_stripped(line: str) -> None:
    assert strip_final_answer_lines(f"Reasoning line.\n{line}\nMore text.") == "Reasoning line.\nMore text."


@pytest.mark.parametrize("text", ["Answer: D is wrong because of X.", "答案：D项的解释见下文，带状疱疹",
                                  "A. Adrenalin: used in CPCR", "The answer depends on the rhythm."])
def test_reasoning_lines_are_kept(text: str) -> None:
    assert strip_final_answer_lines(text) == text


def test_zh_row_prompt_and_completion() -> None:
    """A validated CoT that already ends on the key is kept as written."""
    ex = format_row(ZH)
    assert [m["role"] for m in ex.prompt] == ["system", "user"]
    user = ex.prompt[-1]["content"]
    assert ZH["question"] in user and "A. 胸肌劳损" in user and "D. 带状疱疹" in user and "E." not in user
    text = ex.completion[0]["content"]
    assert ex.completion[0]["role"] == "assistant"
    assert text == ZH["cot"] and (ex.key, ex.stated) == ("D", "D")


def test_validated_cot_without_the_key_line_gets_one_fixed_line() -> None:
    ex = format_row({**EN, "cot": "Atropine was removed from the algorithm."})
    text = ex.completion[0]["content"]
    assert text == "Atropine was removed from the algorithm.\n\nAnswer: C" and ex.stated == "C"
    assert "Question: Which drug" in ex.prompt[-1]["content"] and "C. Atropine" in ex.prompt[-1]["content"]
    # a validated CoT whose final line states another letter: that line goes, the key's line is appended
    other = format_row({**EN, "cot": "Reasoning.\nAnswer: B"}).completion[0]["content"]
    assert other == "Reasoning.\n\nAnswer: C"


def test_raw_cot_arguing_for_another_letter_keeps_its_own_answer() -> None:
    """The unvalidated arm: the raw CoT verbatim, its own final answer B, never replaced by the key D."""
    raw = {**ZH, "cot": "胸肌劳损最常见，故选B。\n答案：B"}
    ex = format_row(raw, keep_own_answer=True)
    assert ex.completion[0]["content"] == raw["cot"] and (ex.key, ex.stated) == ("D", "B")
    assert "答案：D" not in ex.completion[0]["content"]
    assert format_row(raw).completion[0]["content"].endswith("答案：D")  # the validated treatment would fix it
    none = format_row({**EN, "cot": "  I am not sure.  "}, keep_own_answer=True)
    assert none.completion[0]["content"] == "I am not sure." and none.stated is None


def test_unchanged_cot_gives_the_identical_example_in_both_arms() -> None:
    assert example_hash(format_row(EN)) == example_hash(format_row(EN, keep_own_answer=True))
    assert example_hash(format_row(EN)) != example_hash(format_row({**EN, "cot": "Other."}, keep_own_answer=True))


def test_empty_cot_gives_only_the_final_line() -> None:
    assert build_completion("Answer: B", "en", "B") == "Answer: B"
    assert build_completion("", "zh", "B") == "答案：B"


@pytest.mark.parametrize("change,match", [({"answer": 4}, "not one of the options"), ({"answer": "AB"}, "letter"),
                                          ({"language": "fr"}, "language"), ({"answer": True}, "letter")])
def test_bad_rows_are_rejected_with_their_id(change: dict, match: str) -> None:
    with pytest.raises(FormatError, match=match) as err:
        format_row({**ZH, **change})
    assert "row z1" in str(err.value)


def test_data_hash_depends_on_content_not_order() -> None:
    a, b = format_row(ZH), format_row(EN)
    assert data_hash([a, b]) == data_hash([b, a])
    other = format_row({**EN, "cot": "Different reasoning."})
    assert data_hash([a, other]) != data_hash([a, b])


# --- config ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["demo", "qwen7b-lora", "qwen7b-full"])
def test_shipped_configs_load(name: str) -> None:
    cfg = load_train_config(ROOT / "configs" / "train" / f"{name}.yaml")
    assert cfg.matrix.arms == ["validated", "unvalidated"] and cfg.data.design == "matched"
    pairs = cfg.matrix.pairs(cfg.seed, cfg.data.subsample_seed)
    assert len(pairs) == (2 if name == "demo" else 5)  # production default: 5 runs per arm
    assert len({t for t, _ in pairs}) == len({d for _, d in pairs}) == len(pairs)  # both seeds vary
    assert cfg.lora.full_finetune == (name == "qwen7b-full")


def test_matrix_seed_pairs() -> None:
    assert load_config(None, ["matrix.runs=3", "seed=7", "data.subsample_seed=100"], cls=TrainConfig).matrix.pairs(
        7, 100) == [(7, 100), (8, 101), (9, 102)]
    assert TrainConfig().matrix.pairs(0, 0) == [(r, r) for r in range(5)]
    cfg = load_config(None, ["matrix.seeds=[0, [5, 9]]", "data.subsample_seed=10"], cls=TrainConfig)
    assert cfg.matrix.pairs(cfg.seed, cfg.data.subsample_seed) == [(0, 10), (5, 9)]
    for sets, match in ((["matrix.runs=3", "matrix.seeds=[1, 2]"], "disagree"), (["matrix.runs=0"], ">= 1"),
                        (["matrix.seeds=[[1, 2], [1, 3]]"], "distinct"), (["matrix.seeds=[[1]]"], "pairs"),
                        (["data.design=random"], "data.design")):
        with pytest.raises(ConfigError, match=match):
            load_config(None, sets, cls=TrainConfig)


def test_overrides_beat_yaml_and_unknown_keys_fail(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("data: {arm: validated}\nsft: {max_steps: 5}\n", encoding="utf-8")
    cfg = load_train_config(path, ["data.arm=unvalidated", "sft.max_steps=7", "seed=3"])
    assert (cfg.data.arm, cfg.sft["max_steps"], cfg.seed) == ("unvalidated", 7, 3)
    with pytest.raises(ConfigError, match="sft.max_stepz"):
        load_train_config(path, ["sft.max_stepz=1"])
    with pytest.raises(ConfigError, match="lora.rank"):
        load_train_config(path, ["lora.rank=8"])


@pytest.mark.parametrize("sets,match", [(["sft.seed=1"], "top-level `seed`"), (["sft.output_dir=x"], "output.dir"),
                                        (["sft.completion_only_loss=false"], "completion"),
                                        (["data.arm=panel"], "data.arm"), (["matrix.seeds=[1, 1]"], "distinct"),
                                        (["model.dtype=fp8"], "model.dtype")])
def test_invalid_values_fail(sets: list[str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(None, sets, cls=TrainConfig)


def test_matrix_run_configs_differ_only_in_arm_and_seeds() -> None:
    base = load_train_config(ROOT / "configs" / "train" / "demo.yaml")
    a, b = to_dict(run_config(base, "validated", 0, 0)), to_dict(run_config(base, "unvalidated", 1, 1))
    diff = {(s, k) for s in a if isinstance(a[s], dict) for k in a[s] if a[s][k] != b[s][k]}
    diff |= {(s,) for s in a if not isinstance(a[s], dict) and a[s] != b[s]}
    assert diff == {("data", "arm"), ("seed",), ("data", "subsample_seed")}
    assert base.data.arm == "validated" and base.seed == 0 and base.data.subsample_seed == 0  # base not mutated


def test_precision_follows_the_hardware() -> None:
    cpu, gpu, old_gpu = Hardware("cpu", 0, False), Hardware("cuda", 8, True), Hardware("cuda", 2, False)
    assert precision_args({}, cpu) == {"bf16": False, "fp16": False, "use_cpu": True}
    assert precision_args({}, gpu) == {"bf16": True, "fp16": False}
    assert precision_args({}, old_gpu) == {"bf16": False, "fp16": True}
    assert precision_args({"bf16": False}, gpu) == {}
    cfg = TrainConfig()
    assert weights_dtype(cfg, cpu) == "float32" and weights_dtype(cfg, gpu) == "bfloat16"
    cfg.lora.full_finetune = True
    assert weights_dtype(cfg, gpu) == "float32"


# --- equal N with whole families -------------------------------------------------------------------
def _pool(arm: str, fams: list[tuple[str, int]], too_long: set[str] = frozenset()) -> ArmPool:
    examples = [SFTExample(f"{fam}-{k}", fam, "en", [], []) for fam, size in fams for k in range(size)]
    reasons = ["prompt_fills_max_length" if ex.id in too_long else None for ex in examples]
    return ArmPool(arm, examples, reasons, total_tokens=[10] * len(examples), max_length=100)


def test_pick_families_is_exact_seeded_and_whole() -> None:
    sizes = {f"f{i}": 1 + i % 4 for i in range(40)}
    picks = {seed: pick_families(sizes, 37, seed) for seed in range(5)}
    for chosen in picks.values():
        assert sum(sizes[f] for f in chosen) == 37 and len(set(chosen)) == len(chosen)
    assert picks[0] == pick_families(sizes, 37, 0)
    assert len({tuple(sorted(c)) for c in picks.values()}) > 1


def test_common_size_uses_what_every_arm_reaches() -> None:
    assert common_size({"a": {"x": 3, "y": 5}, "b": {"p": 4, "q": 4, "r": 4}}, None) == 8
    assert common_size({"a": {"x": 10}, "b": {"p": 6, "q": 6}}, None) == 0
    assert common_size({"a": {"x": 2, "y": 2, "z": 2}}, 5) == 4
    assert reachable([2, 3], 10) == 0b101101


def test_equal_selections_subsample_the_larger_arm_only() -> None:
    pools = {"validated": _pool("validated", [("a", 3), ("b", 2), ("c", 3)]),
             "unvalidated": _pool("unvalidated", [("a", 3), ("b", 2), ("c", 3), ("d", 2), ("e", 1), ("f", 4)])}
    arms = equal_selections(pools, None, seed=7)
    v, u = arms["validated"].selection, arms["unvalidated"].selection
    assert v.n == u.n == 8 and not v.subsampled and u.subsampled and u.available == 15
    picked = [ex.family_id for ex in arms["unvalidated"].examples]
    assert all(picked.count(f) == dict(family_sizes([e.family_id for e in pools["unvalidated"].examples]))[f]
               for f in set(picked))
    again = equal_selections(pools, None, seed=7)
    assert again["unvalidated"].hash == arms["unvalidated"].hash


def test_rows_whose_prompt_fills_max_length_are_excluded_and_counted() -> None:
    pools = {"validated": _pool("validated", [("a", 3), ("b", 2)], too_long={"b-1"}),
             "unvalidated": _pool("unvalidated", [("a", 3), ("b", 2), ("c", 2)])}
    arms = equal_selections(pools, None, seed=0)
    v = arms["validated"].selection
    assert v.rows == 5 and v.available == 4 and v.excluded == {"prompt_fills_max_length": 1}
    assert arms["unvalidated"].selection.n == 4
    assert "b-1" not in [ex.id for ex in arms["validated"].examples]


def test_no_common_size_is_an_error() -> None:
    with pytest.raises(ConfigError, match="no training examples"):
        equal_selections({"validated": _pool("validated", [("a", 5)]),
                          "unvalidated": _pool("unvalidated", [("b", 3)])}, None, 0)


# --- wiring ----------------------------------------------------------------------------------------
def test_cli_train_help_lists_matrix() -> None:
    from click.testing import CliRunner

    from medcot.cli import main
    out = CliRunner().invoke(main, ["train", "--help"])
    assert out.exit_code == 0 and "matrix" in out.output
    bad = CliRunner().invoke(main, ["train", "matrix", "--config", str(ROOT / "configs/train/demo.yaml"),
                                    "--set", "sft.nope=1"])
    assert bad.exit_code == 2 and "sft.nope" in bad.output


def test_train_stage_is_registered_and_needs_a_release(tmp_path: Path) -> None:
    import asyncio

    from medcot.config import Config
    from medcot.pipeline import STAGES, RunContext, check_stages
    check_stages(["train"])
    ctx = RunContext(cfg=Config(), store=None, out_dir=tmp_path)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="build"):
        asyncio.run(STAGES["train"][0](ctx))


def test_demo_pipeline_config_trains_after_build() -> None:
    cfg = load_config(ROOT / "configs" / "demo.yaml")
    stages = cfg.run.stages
    assert stages[-1] == "train" or stages.index("train") < stages.index("eval")
    if "build" in stages:  # the builder adds `build` to the demo list; train must come after it
        assert stages.index("build") < stages.index("train")
    assert cfg.train.config == "configs/train/demo.yaml" and cfg.train.matrix


def test_format_pool_sets_apart_rows_without_cot_or_room(tmp_path: Path) -> None:
    """With the real SmolLM2 tokenizer: a row without CoT and a row whose prompt fills max_length are
    excluded with their reasons; a long completion is counted as truncated, not excluded."""
    import datasets
    from conftest import model_dir
    from transformers import AutoTokenizer

    from training.data import format_pool, select
    tok = AutoTokenizer.from_pretrained(str(model_dir()))
    rows = [{**EN, "id": "ok", "family_id": "a"}, {**EN, "id": "nocot", "family_id": "a", "cot": None},
            {**EN, "id": "long", "family_id": "b", "question": "word " * 400},
            {**EN, "id": "cut", "family_id": "c", "cot": "reason " * 400}]
    pool = format_pool("validated", datasets.Dataset.from_list(rows), "cot", tok, max_length=300)
    assert pool.reasons == [None, "no_cot", "prompt_fills_max_length", None]
    sel = select(pool, 2, seed=0)
    assert sel.excluded == {"no_cot": 1, "prompt_fills_max_length": 1} and sel.available == 2
    assert sel.indices == (0, 3) and sel.completions_truncated == 1 and not sel.subsampled


# --- the two designs of the matrix ------------------------------------------------------------------
def _ex(rid: str, text: str = "", stated: str | None = "A") -> SFTExample:
    fam = rid.rsplit("-", 1)[0]
    return SFTExample(rid, fam, "en", [{"role": "user", "content": f"question {rid}"}],
                      [{"role": "assistant", "content": text or f"reasoning {rid}"}], key="A", stated=stated)


def _rows_pool(arm: str, examples: list[SFTExample], unusable: set[str] = frozenset()) -> ArmPool:
    return ArmPool(arm, examples, ["no_cot" if ex.id in unusable else None for ex in examples])


def test_matched_arms_share_ids_and_report_overlap() -> None:
    same = _ex("a-0", "the unchanged reasoning")
    v = _rows_pool("validated", [same, _ex("a-1"), _ex("a-2"), _ex("b-0"), _ex("b-1"), _ex("c-0")])
    u = _rows_pool("unvalidated", [same, _ex("a-1", "raw draft", stated="B"), _ex("a-2", "raw 2"), _ex("a-3"),
                                   _ex("b-0", "raw b", stated=None), _ex("b-1"), _ex("d-0"), _ex("d-1")],
                   unusable={"b-1"})
    arms = select_arms({"validated": v, "unvalidated": u}, "matched", None, seed=0)
    va, ua = arms["validated"], arms["unvalidated"]
    assert [e.id for e in va.examples] == [e.id for e in ua.examples] == ["a-0", "a-1", "a-2", "b-0"]
    assert va.selection.n == ua.selection.n == 4 and va.selection.families == 2
    assert va.selection.excluded == {"no_usable_raw_row": 2}  # b-1 (raw unusable), c-0 (no raw row)
    assert ua.selection.excluded == {"no_cot": 1, "not_in_validated_arm": 3}  # b-1; a-3, d-0, d-1
    assert ua.selection.rows == ua.selection.available + sum(ua.selection.excluded.values())
    assert va.selection.shared_ids == ua.selection.shared_ids == 4
    assert va.selection.identical_examples == ua.selection.identical_examples == 1  # a-0 only
    assert va.selection.own_answer == {"agree": 4, "disagree": 0, "none": 0, "rate": 1.0}
    assert ua.selection.own_answer == {"agree": 2, "disagree": 1, "none": 1, "rate": 0.5}
    assert va.selection.design == "matched" and not va.selection.subsampled


def test_matched_cap_keeps_whole_families_and_the_same_ids_per_data_seed() -> None:
    ids = [f"f{i}-{k}" for i in range(10) for k in range(2)]
    pools = {"validated": _rows_pool("validated", [_ex(i) for i in ids]),
             "unvalidated": _rows_pool("unvalidated", [_ex(i, "raw") for i in ids])}
    picked = set()
    for seed in range(5):
        arms = select_arms(pools, "matched", 6, seed)
        v_ids = [e.id for e in arms["validated"].examples]
        assert v_ids == [e.id for e in arms["unvalidated"].examples] and len(v_ids) == 6
        assert arms["validated"].selection.families == 3 and arms["unvalidated"].selection.subsampled
        picked.add(tuple(v_ids))
    assert len(picked) > 1  # the data seed changes the subsample


def test_pipeline_matches_counts_per_family_and_includes_removed_items() -> None:
    v = _rows_pool("validated", [_ex("a-0"), _ex("a-1"), _ex("b-0")])
    u = _rows_pool("unvalidated", [_ex("a-0", "raw"), _ex("a-1", "raw"), _ex("a-2", "removed"), _ex("a-3"),
                                   _ex("b-0", "raw"), _ex("c-0"), _ex("c-1"), _ex("c-2")])
    seen = set()
    for seed in range(6):
        ua = select_arms({"validated": v, "unvalidated": u}, "pipeline", None, seed)["unvalidated"]
        fams = [e.family_id for e in ua.examples]
        assert sorted(fams) == ["a", "a", "b"] and ua.selection.families_matched == 2
        assert ua.selection.filled_from_other_families == 0 and ua.selection.subsampled
        seen |= {e.id for e in ua.examples}
    assert {"a-2", "a-3"} & seen  # raw rows of items the validated arm does not have are drawn
    # family b has no usable raw row: the shortfall is filled from the chosen families first
    u2 = _rows_pool("unvalidated", [_ex("a-0"), _ex("a-1"), _ex("a-2"), _ex("b-0"), _ex("c-0")], unusable={"b-0"})
    ua = select_arms({"validated": v, "unvalidated": u2}, "pipeline", None, 0)["unvalidated"]
    assert sorted(e.id for e in ua.examples) == ["a-0", "a-1", "a-2"]
    assert ua.selection.families_matched == 1 and ua.selection.filled_from_other_families == 1
    with pytest.raises(ConfigError, match="data.design"):
        select_arms({"validated": v, "unvalidated": u}, "random", None, 0)


def test_manifest_numbers_on_a_small_release(tmp_path: Path) -> None:
    """The tiny release (tests/training_release.py): selection and overlap figures, without training."""
    from conftest import model_dir
    from training_release import write_release

    from training.matrix import load_arms, manifest
    release = write_release(tmp_path / "release")
    for design, u_excluded in (("matched", {"not_in_validated_arm": 4}), ("pipeline", {})):
        base = load_train_config(ROOT / "configs" / "train" / "demo.yaml",
                                 [f"data.release_dir={release}", f"model.path={model_dir()}", f"data.design={design}"])
        m = manifest(base, load_arms(base), [])
        assert m["design"] == design and m["n_per_arm"] == 8 and m["seed_pairs"] == [[0, 0], [1, 1]]
        v, u = m["arms"]["validated"], m["arms"]["unvalidated"]
        assert u["excluded"] == u_excluded and u["rows"] == 12 and v["rows"] == 8
        assert [s["data_seed"] for s in v["selections"]] == [0, 1]
        for vs, us in zip(v["selections"], u["selections"]):
            assert vs["n"] == us["n"] == 8 and vs["families"] == 4 and us["families"] == 4
            assert vs["own_answer"] == {"agree": 8, "disagree": 0, "none": 0, "rate": 1.0}
            if design == "matched":  # same ids; the 4 unchanged rows are identical, fam0-1 argues for another letter
                assert vs["shared_ids"] == us["shared_ids"] == 8
                assert vs["identical_examples"] == us["identical_examples"] == 4
                assert us["own_answer"] == {"agree": 7, "disagree": 1, "none": 0, "rate": 0.875}
            else:  # families 0-3 hold 3/2/2/1 rows in both configs: every family's count is matched exactly
                assert us["families_matched"] == 4 and us["filled_from_other_families"] == 0


def test_reasoning_and_cot_target_puts_the_raw_thinking_first() -> None:
    from training.data import format_pool
    thinking = "The patient is 65... option C is the one removed from the algorithm."
    row = {**EN, "reasoning": thinking}
    ex = format_row(row, target="reasoning_and_cot")
    text = ex.completion[0]["content"]
    assert text == f"<think>\n{thinking}\n</think>\n\n" + format_row(EN).completion[0]["content"]
    assert ex.stated == "C" == ex.key  # the answer is read outside the thinking
    assert format_row(row).completion == format_row(EN).completion  # target cot ignores the reasoning
    pool = format_pool("validated", [row, {**ZH, "reasoning": None}], "cot", target="reasoning_and_cot")
    assert pool.reasons == [None, "no_reasoning"] and pool.excluded() == {"no_reasoning": 1}
    assert format_pool("validated", [row, {**ZH, "reasoning": None}], "cot").reasons == [None, None]
    with pytest.raises(ConfigError, match="data.target"):
        load_train_config(None, ["data.target=thinking"])

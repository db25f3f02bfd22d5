"""`medcot eval compare` on synthetic predictions: per-seed and pooled McNemar and CIs, judge scores, report."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from eval_helpers import make_manifest, write_predictions
from scipy import stats as sps

from eval.compare import CompareError, compare
from eval.config import BootstrapConfig
from eval.stats import paired_bootstrap_diff
from medcot.cli import main

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path]:
    """Seed 0: validated right on 8 items unvalidated misses (b=8, c=1); seed 1: b=3, c=3; base: reference."""
    edir = tmp_path / "eval"
    s0_v = [True] * 8 + [False] + [True] * 6 + [False] * 5
    s0_u = [False] * 8 + [True] + [True] * 6 + [False] * 5
    s1_v = [True] * 3 + [False] * 3 + [True] * 10 + [None] * 4
    s1_u = [False] * 3 + [True] * 3 + [True] * 10 + [False] * 4
    write_predictions(edir, "validated-s0", s0_v, judge=[2] * 10 + [1] * 10)
    write_predictions(edir, "unvalidated-s0", s0_u, judge=[1] * 10 + [1] * 10)
    write_predictions(edir, "validated-s1", s1_v, judge=[2] * 20)
    write_predictions(edir, "unvalidated-s1", s1_u, judge=[2] * 5 + [0] * 15)
    write_predictions(edir, "base", [True, False] * 10)
    adapters = {f"{a}-s{s}": "unused" for a in ("validated", "unvalidated") for s in (0, 1)}
    manifest = make_manifest(tmp_path / "train" / "manifest.json", "unused", adapters, seeds=[0, 1])
    return manifest, edir


def test_per_seed_and_pooled_statistics(setup, tmp_path: Path) -> None:
    manifest, edir = setup
    r = compare(str(manifest), str(edir), str(tmp_path / "report"), BootstrapConfig(resamples=2000, seed=0))
    assert r["seeds"] == [0, 1] and r["references"] == ["base"]
    (test,) = r["sets"]
    s0, s1, pooled = test["accuracy"]
    assert (s0["mcnemar"]["b"], s0["mcnemar"]["c"]) == (8, 1)
    assert s0["mcnemar"]["p_value"] == pytest.approx(sps.binomtest(1, 9, 0.5).pvalue)
    assert (s1["mcnemar"]["b"], s1["mcnemar"]["c"]) == (3, 3) and s1["mcnemar"]["p_value"] == pytest.approx(1.0)
    assert s0["validated"]["value"] == pytest.approx(14 / 20) and s0["unvalidated"]["value"] == pytest.approx(7 / 20)
    assert s0["diff"]["value"] == pytest.approx(7 / 20)
    assert s0["diff"]["low"] < s0["diff"]["value"] < s0["diff"]["high"]
    assert s1["no_answer"]["validated"] == pytest.approx(4 / 20) and s1["no_answer"]["unvalidated"] == 0
    assert pooled["label"].startswith("pooled") and pooled["n"] == 40
    # pairs of both seeds: b = 8 + 3, c = 1 + 3 (no answer vs wrong is concordant: both count as wrong)
    assert (pooled["mcnemar"]["b"], pooled["mcnemar"]["c"]) == (11, 4)
    assert pooled["mcnemar"]["p_value"] == pytest.approx(sps.binomtest(4, 15, 0.5).pvalue)
    # pooled CI resamples items (both seeds of an item together)
    a = [1.0] * 8 + [0] + [1] * 6 + [0] * 5 + [1] * 3 + [0] * 3 + [1] * 10 + [0] * 4
    b = [0.0] * 8 + [1] + [1] * 6 + [0] * 5 + [0] * 3 + [1] * 3 + [1] * 10 + [0] * 4
    ref = paired_bootstrap_diff(a, b, clusters=[f"i{i}" for i in range(20)] * 2, resamples=2000, seed=0)
    assert pooled["diff"] == ref.as_dict()


def test_judge_scores_are_compared_the_same_way(setup, tmp_path: Path) -> None:
    manifest, edir = setup
    r = compare(str(manifest), str(edir), str(tmp_path / "report"))
    j0, j1, pooled = r["sets"][0]["judge"]
    assert j0["n"] == 20 and j0["total"]["value"] == pytest.approx(2.5)   # 10 items +5 (2 vs 1 on 5 dims)
    assert (j0["sign_test"]["b"], j0["sign_test"]["c"]) == (10, 0)
    assert j0["sign_test"]["p_value"] == pytest.approx(sps.binomtest(10, 10, 0.5).pvalue)
    assert j1["dimensions"]["medical_correctness"]["value"] == pytest.approx(15 * 2 / 20)
    assert pooled["n"] == 40


def test_report_files_and_plots(setup, tmp_path: Path) -> None:
    manifest, edir = setup
    r = compare(str(manifest), str(edir), str(tmp_path / "report"))
    out = tmp_path / "report"
    md = (out / "comparison.md").read_text()
    html = (out / "comparison.html").read_text()
    assert "McNemar" in md and "seed 0" in md and "pooled (2 seeds)" in md and "95% CI" in md
    assert "<table>" in html and "rubric_radar.png" in html and "<img" in html
    for name in ("accuracy_ci.png", "specialty.png", "rubric_radar.png"):
        assert (out / name).read_bytes()[:8] == PNG and f"]({name})" in md
    assert set(r["models"]) >= {"base", "validated (all seeds)", "unvalidated (all seeds)", "validated-s0"}
    assert json.loads((out / "comparison.json").read_text())["seeds"] == [0, 1]


def test_missing_predictions_and_unpaired_items_are_errors(setup, tmp_path: Path) -> None:
    manifest, edir = setup
    (edir / "predictions" / "unvalidated-s1.jsonl").unlink()
    with pytest.raises(CompareError, match="unvalidated-s1"):
        compare(str(manifest), str(edir), str(tmp_path / "r"))
    write_predictions(edir, "unvalidated-s1", [True] * 5)
    with pytest.raises(CompareError, match="different items"):
        compare(str(manifest), str(edir), str(tmp_path / "r"))


def test_compare_command(setup, tmp_path: Path) -> None:
    manifest, edir = setup
    res = CliRunner().invoke(main, ["eval", "compare", "--manifest", str(manifest), "--eval-dir", str(edir),
                                    "--set", "bootstrap.resamples=500"])
    assert res.exit_code == 0, res.output
    assert (edir / "comparison" / "comparison.html").is_file() and "McNemar" in res.output

"""`medcot eval compare --manifest M --eval-dir E`: validated vs unvalidated arms, two levels of uncertainty.

Each arm was fine-tuned several times (runs vary the training seed and the data-subsample seed) and every run
answered the same eval items, which come in families. The headline, per eval set, is ``eval.inference``'s:
per-run accuracy of each arm (mean and sd over runs), and the difference of the arms' mean accuracies with a
95% CI and a p-value that respect both the test families and the training runs. Single proportions (one run
on one set, a reference model) carry Wilson intervals. Per-run McNemar tests are a secondary, descriptive
table; nothing pools (item, run) pairs into one test. Where judge scores exist, the rubric total is compared
the same way. Predictions without ``family_id`` (files written before it existed) count each item as its own
family, and the report says so. Writes comparison.{md,html,json} and PNGs.
"""
from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eval.config import BootstrapConfig
from eval.inference import InferenceError, Outcome, compare_arms, per_run_mcnemar, wilson
from eval.models import ManifestRun, manifest_design, manifest_runs
from eval.records import RUBRIC_DIMENSIONS, JudgeScore, Prediction, read_records
from eval.report import Block, plot_accuracy, plot_radar, plot_specialty, to_html, to_markdown
from eval.run import JUDGE_DIR, PRED_DIR

ARMS = ("validated", "unvalidated")
Key = tuple[str, str]
READING = ("if the study were repeated with new test families and new training runs, 95% of intervals built "
           "this way would contain the true difference")


class CompareError(ValueError):
    """Predictions missing or not pairable (names the model and the file)."""


def _load(eval_dir: Path, sub: str, name: str, cls: type) -> list[Any] | None:
    path = eval_dir / sub / f"{name}.jsonl"
    return read_records(path, cls) if path.is_file() else None


def _family(p: Prediction) -> str:
    return p.family_id or p.id


def _outcomes(runs: list[ManifestRun], preds: dict[str, dict[Key, Prediction]]) -> list[Outcome]:
    return [Outcome(r.arm, r.name, p.id, _family(p), p.correct) for r in runs for p in preds[r.name].values()]


def _rate(preds: list[Prediction]) -> float:
    return sum(p.prediction is None for p in preds) / len(preds) if preds else float("nan")


def _run_rows(runs: list[ManifestRun], preds: dict[str, dict[Key, Prediction]], confidence: float) -> list[dict]:
    rows = []
    for r in runs:
        ps = list(preds[r.name].values())
        k = sum(p.correct for p in ps)
        rows.append({"arm": r.arm, "run": r.name, "seed": r.seed, "data_seed": r.data_seed, "n": len(ps),
                     "correct": k, "accuracy_wilson": wilson(k, len(ps), confidence).as_dict(),
                     "no_answer": _rate(ps)})
    return rows


def _judge(set_name: str, runs: list[ManifestRun], preds: dict[str, dict[Key, Prediction]],
           judged: dict[str, dict[Key, JudgeScore]], boot: BootstrapConfig) -> dict[str, Any] | None:
    """The rubric total compared like accuracy, on the items every run's judge scored without error."""
    if not all(r.name in judged and judged[r.name] for r in runs):
        return None
    keys = set.intersection(*({k for k, j in judged[r.name].items() if j.error is None and k in preds[r.name]}
                              for r in runs))
    if not keys:
        return None
    outcomes = [Outcome(r.arm, r.name, k[1], _family(preds[r.name][k]), float(judged[r.name][k].total))
                for r in runs for k in sorted(keys)]
    cmp = compare_arms(outcomes, ARMS[0], ARMS[1], confidence=boot.confidence, resamples=boot.resamples,
                       seed=boot.seed, measure="LLM-judge rubric total (0-10)", scale=1.0, unit="rubric points")
    dims = {arm: {d: _mean([_mean([judged[r.name][k].scores[d] for k in keys]) for r in runs if r.arm == arm])
                  for d in RUBRIC_DIMENSIONS} for arm in ARMS}
    return {"set": set_name, "n_items": len(keys), "total": cmp.as_dict(), "dimension_means": dims}


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def compare_set(set_name: str, runs: list[ManifestRun], preds: dict[str, dict[Key, Prediction]],
                judged: dict[str, dict[Key, JudgeScore]], boot: BootstrapConfig) -> dict[str, Any]:
    """The two-level comparison of the arms on one eval set (see the module doc)."""
    outcomes = _outcomes(runs, preds)
    if not outcomes:
        raise CompareError(f"set {set_name!r}: no predictions")
    try:
        headline = compare_arms(outcomes, ARMS[0], ARMS[1], confidence=boot.confidence,
                                resamples=boot.resamples, seed=boot.seed)
        mcnemar = per_run_mcnemar(outcomes, ARMS[0], ARMS[1])
    except InferenceError as exc:
        raise CompareError(f"set {set_name!r}: {exc}; evaluate every run on the same items") from exc
    without_family = sorted({p.id for r in runs for p in preds[r.name].values() if not p.family_id})
    return {"set": set_name, "headline": headline.as_dict(), "runs": _run_rows(runs, preds, boot.confidence),
            "items_without_family": len(without_family),
            "per_run_mcnemar": [{"run_a": m.run_a, "run_b": m.run_b, "a_only": m.a_only, "b_only": m.b_only,
                                 "p_value": m.p_value} for m in mcnemar],
            "judge": _judge(set_name, runs, preds, judged, boot)}


def compare(manifest: str, eval_dir: str, out_dir: str, boot: BootstrapConfig | None = None) -> dict[str, Any]:
    boot = boot or BootstrapConfig()
    edir, odir = Path(eval_dir), Path(out_dir)
    runs = manifest_runs(manifest)
    lacking = [arm for arm in ARMS if not any(r.arm == arm for r in runs)]
    if lacking:
        raise CompareError(f"{manifest}: no run of arm(s) {lacking}, nothing to compare")
    preds, judged = _load_all(edir, [r.name for r in runs])
    refs = sorted(p.stem for p in (edir / PRED_DIR).glob("*.jsonl") if p.stem not in preds)
    for name in refs:
        preds[name] = {p.key: p for p in read_records(edir / PRED_DIR / f"{name}.jsonl", Prediction)}
        jr = _load(edir, JUDGE_DIR, name, JudgeScore)
        if jr is not None:
            judged[name] = {j.key: j for j in jr}
    unlabelled = sorted({p.set for rows in preds.values() for p in rows.values() if not p.labelled})
    preds = {m: {k: p for k, p in rows.items() if p.labelled} for m, rows in preds.items()}
    sets = sorted({k[0] for r in runs for k in preds[r.name]})
    if not sets:
        raise CompareError(f"{eval_dir}: no predictions on a set with answers"
                           + (f" (sets without answers, submission only: {unlabelled})" if unlabelled else ""))
    result = {"manifest": manifest, "eval_dir": eval_dir, "training": manifest_design(manifest),
              "runs": [{"arm": r.arm, "seed": r.seed, "data_seed": r.data_seed, "name": r.name} for r in runs],
              "references": refs,
              "unlabelled_sets": unlabelled,  # sets without answers: no accuracy, left out of the comparison
              "inference": {"confidence": boot.confidence, "bootstrap_resamples": boot.resamples,
                            "bootstrap_seed": boot.seed, "reading": READING},
              "contamination": _contamination(edir),
              "sets": [compare_set(s, runs, _only(preds, s), _only(judged, s), boot) for s in sets],
              "models": _model_table(preds, judged, boot, runs)}
    odir.mkdir(parents=True, exist_ok=True)
    result["figures"] = _figures(result, odir)
    (odir / "comparison.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    blocks = render_blocks(result)
    (odir / "comparison.md").write_text(to_markdown(blocks), encoding="utf-8")
    (odir / "comparison.html").write_text(to_html(blocks, "medcot: validated vs unvalidated"), encoding="utf-8")
    result["markdown"] = to_markdown(blocks)
    result["report"] = str(odir / "comparison.md")
    result["html"] = str(odir / "comparison.html")
    return result


def _contamination(edir: Path) -> dict[str, Any] | None:
    """The contamination check `eval run` recorded in results.json (None: no results file or no record)."""
    path = edir / "results.json"
    if not path.is_file():
        return None
    record = json.loads(path.read_text(encoding="utf-8")).get("contamination")
    return record if isinstance(record, dict) else None


def _contamination_text(record: dict[str, Any] | None) -> str:
    if record is None:
        return "Contamination check: no record in the eval run's results.json (run `medcot eval run` again)."
    if not record.get("checked"):
        return f"Contamination check: not performed ({record.get('note', 'nothing to compare with')})."
    ids = record.get("overlapping_eval_ids") or []
    where = ", ".join(record.get("sources") or []) or "the configured references"
    if not ids:
        return f"Contamination check ({record.get('rule')}): 0 eval items overlap {where}."
    return (f"Contamination check ({record.get('rule')}): {len(ids)} eval items overlap {where} "
            f"(evaluated with allow_overlap; results.md reports them apart): {', '.join(ids[:10])}"
            + (" ..." if len(ids) > 10 else "") + ".")


def _load_all(edir: Path, names: list[str]) -> tuple[dict[str, dict[Key, Prediction]], dict[str, dict[Key, JudgeScore]]]:
    preds, judged = {}, {}
    for name in names:
        p = _load(edir, PRED_DIR, name, Prediction)
        if p is None:
            raise CompareError(f"no predictions for run {name!r}: {edir / PRED_DIR / (name + '.jsonl')} is missing "
                               "(run `medcot eval run` with this manifest first)")
        preds[name] = {x.key: x for x in p}
        j = _load(edir, JUDGE_DIR, name, JudgeScore)
        if j is not None:
            judged[name] = {x.key: x for x in j}
    return preds, judged


def _only(table: dict[str, dict[Key, Any]], set_name: str) -> dict[str, dict[Key, Any]]:
    return {m: {k: v for k, v in rows.items() if k[0] == set_name} for m, rows in table.items()}


def _model_table(preds: dict[str, dict[Key, Prediction]], judged: dict[str, dict[Key, JudgeScore]],
                 boot: BootstrapConfig, runs: list[ManifestRun]) -> dict[str, Any]:
    """Per run and reference model (all sets): accuracy with a Wilson CI, per specialty, judge means. The arms'
    rows (``<arm> (all runs)``) pool their runs for the per-specialty and judge plots only: descriptive."""
    groups: dict[str, list[str]] = {f"{arm} (all runs)": [r.name for r in runs if r.arm == arm] for arm in ARMS}
    groups |= {r.name: [r.name] for r in runs} | {n: [n] for n in preds if n not in {r.name for r in runs}}
    out = {}
    for label, names in groups.items():
        ps = [p for n in names for p in preds[n].values()]
        js = [j for n in names for j in judged.get(n, {}).values() if j.error is None]
        spec: dict[str, list[bool]] = defaultdict(list)
        for p in ps:
            spec[p.specialty or "(none)"].append(p.correct)
        k = sum(p.correct for p in ps)
        out[label] = {"pooled_runs": len(names) > 1 or label.endswith("(all runs)"),
                      "n": len(ps), "accuracy": wilson(k, len(ps), boot.confidence).as_dict() if ps else None,
                      "no_answer_rate": _rate(ps),
                      "per_specialty": {s: sum(v) / len(v) for s, v in sorted(spec.items())},
                      "judge": {d: sum(j.scores[d] for j in js) / len(js) for d in RUBRIC_DIMENSIONS} if js else None}
    return out


def _figures(result: dict[str, Any], odir: Path) -> dict[str, str]:
    models = {m: v for m, v in result["models"].items() if not v["pooled_runs"] and v["accuracy"]}
    rows = [(m, v["accuracy"]["estimate"], v["accuracy"]["low"], v["accuracy"]["high"]) for m, v in models.items()]
    figs = {"accuracy": plot_accuracy(rows, odir / "accuracy_ci.png",
                                      "Accuracy per run / model, all sets (Wilson CI)").name}
    groups = {m: v for m, v in result["models"].items() if m.endswith("(all runs)") or m in result["references"]}
    figs["specialty"] = plot_specialty({m: v["per_specialty"] for m, v in groups.items()}, odir / "specialty.png").name
    radar = {m: v["judge"] for m, v in groups.items() if v["judge"]}
    if radar:
        figs["rubric_radar"] = plot_radar(radar, odir / "rubric_radar.png").name
    return figs


def _pts(x: float | None, scale: float = 100.0) -> str:
    return "n/a" if x is None else f"{scale * x:+.1f}"


def _iv(e: dict[str, Any] | None, fmt: Callable[[float | None], str]) -> str:
    return "n/a" if e is None else f"{fmt(e['estimate'])} [{fmt(e['low'])}, {fmt(e['high'])}]"


def _prop(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _p(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def headline_lines(result: dict[str, Any]) -> list[str]:
    """One line per eval set: the difference with its CI and p-value (for the pipeline's summary)."""
    conf = f"{result['inference']['confidence']:.0%}"
    out = []
    for s in result["sets"]:
        h = s["headline"]
        out.append(f"- `{s['set']}`: accuracy validated - unvalidated = {_iv(h['difference'], _pts)} points "
                   f"({conf} CI over test families and training runs; {h['a']['n_runs']} vs {h['b']['n_runs']} "
                   f"runs, {h['a']['n_items']} items in {h['a']['n_families']} families), p = {_p(h['p_value'])}")
    return out


def _arm_table(training: dict[str, Any]) -> list[list[str]]:
    head = ["arm", "data seed", "N", "families", "same item ids in the other arm",
            "identical examples (prompt + completion)", "own answer = key"]
    rows = [head]
    for arm, info in (training.get("arms") or {}).items():
        for sel in info.get("selections") or [info]:
            agree = sel.get("own_answer") or {}
            rate = agree.get("rate")
            rows.append([arm, str(sel.get("data_seed", sel.get("subsample_seed", "?"))), str(sel.get("n", "?")),
                         str(sel.get("families", "?")), str(sel.get("shared_ids", "n/a")),
                         str(sel.get("identical_examples", "n/a")),
                         "n/a" if rate is None else f"{agree.get('agree')}/{sel.get('n')} ({rate:.1%})"])
    return rows


def _set_blocks(s: dict[str, Any], conf: str) -> list[Block]:
    h = s["headline"]
    a, b = h["a"], h["b"]
    blocks = [Block("h2", f"Accuracy on `{s['set']}`"),
              Block("p", f"Headline: accuracy validated - unvalidated = {_iv(h['difference'], _pts)} points "
                         f"({conf} CI), p = {_p(h['p_value'])}; {a['n_items']} items in {a['n_families']} "
                         "test families."),
              Block("p", h["interpretation"]),
              Block("table", rows=[["arm", "runs", "mean accuracy", "sd over runs", "per-run accuracy"]] + [
                  [x["arm"], str(x["n_runs"]), _prop(x["mean"]), _prop(x["sd"]),
                   ", ".join(f"{r}: {v:.3f}" for r, v in x["run_accuracy"].items())] for x in (a, b)]),
              Block("table", rows=[["run", "arm", "training seed", "data seed", f"accuracy [{conf} Wilson]",
                                    "no-answer"]] + [
                  [r["run"], r["arm"], str(r["seed"]), str(r["data_seed"]), _iv(r["accuracy_wilson"], _prop),
                   f"{r['no_answer']:.3f}"] for r in s["runs"]]),
              Block("p", f"Method: {h['method']} Secondary check, a two-level percentile bootstrap (families, "
                         f"then runs within arm): {_iv(h['bootstrap_secondary'], _pts)} points.")]
    if s["items_without_family"]:
        blocks.append(Block("p", f"{s['items_without_family']} items carry no family_id (predictions written "
                                 "before it was recorded): each counts as its own family."))
    rows = [["run (validated)", "run (unvalidated)", "only validated right", "only unvalidated right", "p"]]
    rows += [[m["run_a"], m["run_b"], str(m["a_only"]), str(m["b_only"]), _p(m["p_value"])]
             for m in s["per_run_mcnemar"]]
    blocks += [Block("h2", f"Secondary: per-run McNemar on `{s['set']}`"),
               Block("p", "Descriptive only: each exact McNemar test compares ONE validated run with ONE "
                          "unvalidated run, treats items as independent and the runs as fixed, so it ignores "
                          "family clustering and run-to-run variance. Do not count or combine them; the "
                          "headline above is the test."),
               Block("table", rows=rows)]
    j = s["judge"]
    if j:
        t = j["total"]
        blocks += [Block("h2", f"LLM-judge rubric on `{s['set']}` ({j['n_items']} items judged in every run)"),
                   Block("p", f"Rubric total (0-10) validated - unvalidated = "
                              f"{_iv(t['difference'], lambda x: _pts(x, 1.0))} ({conf} CI), p = "
                              f"{_p(t['p_value'])}. {t['interpretation']}"),
                   Block("table", rows=[["arm", *RUBRIC_DIMENSIONS]] + [
                       [arm, *(f"{j['dimension_means'][arm][d]:.2f}" for d in RUBRIC_DIMENSIONS)]
                       for arm in ARMS])]
    return blocks


def render_blocks(r: dict[str, Any]) -> list[Block]:
    conf = f"{r['inference']['confidence']:.0%}"
    training = r["training"]
    per_arm = {arm: [f"{x['name']} (training seed {x['seed']}, data seed {x['data_seed']})"
                     for x in r["runs"] if x["arm"] == arm] for arm in ARMS}
    b = [Block("h1", "Validated vs unvalidated: comparison over test families and training runs"),
         Block("p", f"Manifest `{r['manifest']}` (arm design: {training.get('design') or 'not recorded'}); "
                    f"predictions from `{r['eval_dir']}`. Runs: "
                    + "; ".join(f"{arm}: {', '.join(v)}" for arm, v in per_arm.items()) + "."),
         Block("p", f"How to read the {conf} interval of a difference: {READING}. It accounts for which test "
                    "families happened to be drawn and for run-to-run training variance. Single proportions "
                    f"(one run, one model) carry {conf} Wilson intervals. No test pools (item, run) pairs; "
                    "per-run McNemar tests are a secondary, descriptive table. No-answer counts as wrong and "
                    "is shown on its own."),
         Block("p", _contamination_text(r["contamination"]))]
    if r.get("unlabelled_sets"):
        b.append(Block("p", "Left out (no answers, submission only): " + ", ".join(r["unlabelled_sets"]) + "."))
    if training.get("arms"):
        b += [Block("h2", "Training arms (from the manifest)"), Block("table", rows=_arm_table(training))]
    for s in r["sets"]:
        b += _set_blocks(s, conf)
    b.append(Block("h2", "Runs and models (all sets)"))
    b.append(Block("table", rows=[["model / run", "n", f"accuracy [{conf} Wilson]", "no-answer rate",
                                   "judge mean (0-2)"]] +
                   [[m, str(v["n"]), _iv(v["accuracy"], _prop), f"{v['no_answer_rate']:.3f}",
                     "n/a" if not v["judge"] else f"{sum(v['judge'].values()) / len(v['judge']):.2f}"]
                    for m, v in r["models"].items() if not v["pooled_runs"]]))
    captions = {"accuracy": "Accuracy with Wilson CI per run and model", "specialty": "Accuracy per specialty",
                "rubric_radar": "LLM-judge rubric radar"}
    for key, name in r["figures"].items():
        b.append(Block("image", captions[key], rows=[[name]]))
    return b

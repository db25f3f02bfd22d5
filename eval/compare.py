"""`medcot eval compare --manifest M --eval-dir E`: validated vs unvalidated arms, per seed and pooled.

For each eval set and each seed trained in both arms, the two models' predictions are paired by item:
accuracy of each arm (bootstrap CI), the paired difference validated - unvalidated (bootstrap CI), and the
exact McNemar test on the discordant pairs. Pooled over seeds, the difference's CI resamples whole items
(all seeds of an item together) and McNemar counts every (item, seed) pair. Where judge scores exist, the
same per rubric dimension: paired mean difference (bootstrap CI) and an exact sign test on the total.
Other models in E (e.g. the base model) appear as references. Writes comparison.{md,html,json} and PNGs.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from eval.config import BootstrapConfig
from eval.models import manifest_arms
from eval.records import RUBRIC_DIMENSIONS, JudgeScore, Prediction, read_records
from eval.report import Block, plot_accuracy, plot_radar, plot_specialty, to_html, to_markdown
from eval.run import JUDGE_DIR, PRED_DIR
from eval.stats import bootstrap_mean, mcnemar_exact, paired_bootstrap_diff, sign_test

ARMS = ("validated", "unvalidated")
Key = tuple[str, str]


class CompareError(ValueError):
    """Predictions missing or not pairable (names the model and the file)."""


def _load(eval_dir: Path, sub: str, name: str, cls: type) -> list[Any] | None:
    path = eval_dir / sub / f"{name}.jsonl"
    return read_records(path, cls) if path.is_file() else None


def _pairs(a: dict[Key, Any], b: dict[Key, Any], what: str) -> list[Key]:
    common = sorted(set(a) & set(b))
    if not common:
        raise CompareError(f"{what}: no items in common")
    if len(common) != len(a) or len(common) != len(b):
        raise CompareError(f"{what}: the arms answered different items ({len(a)} vs {len(b)}, {len(common)} "
                           "shared); evaluate both on the same sets")
    return common


def _acc_row(label: str, a: list[bool], b: list[bool], clusters: list[str] | None, boot: BootstrapConfig,
             na: tuple[float, float]) -> dict[str, Any]:
    kw = {"resamples": boot.resamples, "seed": boot.seed, "confidence": boot.confidence}
    return {"label": label, "n": len(a), "validated": bootstrap_mean(a, **kw).as_dict(),
            "unvalidated": bootstrap_mean(b, **kw).as_dict(),
            "diff": paired_bootstrap_diff(a, b, clusters=clusters, **kw).as_dict(),
            "mcnemar": mcnemar_exact(a, b).as_dict(), "no_answer": {"validated": na[0], "unvalidated": na[1]}}


def _judge_row(label: str, a: list[JudgeScore], b: list[JudgeScore], clusters: list[str] | None,
               boot: BootstrapConfig) -> dict[str, Any]:
    kw = {"resamples": boot.resamples, "seed": boot.seed, "confidence": boot.confidence}
    dims = {d: paired_bootstrap_diff([x.scores[d] for x in a], [y.scores[d] for y in b], clusters=clusters,
                                     **kw).as_dict() for d in RUBRIC_DIMENSIONS}
    totals_a, totals_b = [x.total for x in a], [y.total for y in b]
    return {"label": label, "n": len(a), "dimensions": dims,
            "total": paired_bootstrap_diff(totals_a, totals_b, clusters=clusters, **kw).as_dict(),
            "sign_test": sign_test(totals_a, totals_b).as_dict()}


def compare_set(set_name: str, seeds: list[int], preds: dict[str, dict[Key, Prediction]],
                judged: dict[str, dict[Key, JudgeScore]], boot: BootstrapConfig) -> dict[str, Any]:
    """Per-seed and pooled comparison of the two arms on one eval set."""
    acc_rows, judge_rows = [], []
    pooled: dict[str, list[Any]] = defaultdict(list)
    for seed in seeds:
        va, un = preds[f"validated-s{seed}"], preds[f"unvalidated-s{seed}"]
        keys = _pairs(va, un, f"set {set_name!r}, seed {seed}")
        a, b = [va[k].correct for k in keys], [un[k].correct for k in keys]
        na = (_rate([va[k] for k in keys]), _rate([un[k] for k in keys]))
        acc_rows.append(_acc_row(f"seed {seed}", a, b, None, boot, na))
        pooled["a"] += a
        pooled["b"] += b
        pooled["pa"] += [va[k] for k in keys]
        pooled["pb"] += [un[k] for k in keys]
        pooled["clusters"] += [k[1] for k in keys]
        jv, ju = judged.get(f"validated-s{seed}"), judged.get(f"unvalidated-s{seed}")
        if jv and ju:
            jk = [k for k in keys if k in jv and k in ju and jv[k].error is None and ju[k].error is None]
            if jk:
                judge_rows.append(_judge_row(f"seed {seed}", [jv[k] for k in jk], [ju[k] for k in jk], None, boot))
                pooled["ja"] += [jv[k] for k in jk]
                pooled["jb"] += [ju[k] for k in jk]
                pooled["jclusters"] += [k[1] for k in jk]
    if len(seeds) > 1:
        na = (_rate(pooled["pa"]), _rate(pooled["pb"]))
        acc_rows.append(_acc_row(f"pooled ({len(seeds)} seeds)", pooled["a"], pooled["b"], pooled["clusters"], boot, na))
        if len(judge_rows) > 1:
            judge_rows.append(_judge_row(f"pooled ({len(judge_rows)} seeds)", pooled["ja"], pooled["jb"],
                                         pooled["jclusters"], boot))
    return {"set": set_name, "accuracy": acc_rows, "judge": judge_rows}


def _rate(preds: list[Prediction]) -> float:
    return sum(p.prediction is None for p in preds) / len(preds) if preds else float("nan")


def compare(manifest: str, eval_dir: str, out_dir: str, boot: BootstrapConfig | None = None) -> dict[str, Any]:
    boot = boot or BootstrapConfig()
    edir, odir = Path(eval_dir), Path(out_dir)
    runs = manifest_arms(manifest)
    preds, judged = _load_all(edir, [n for _, _, n in runs])
    seeds = sorted({s for arm, s, _ in runs if arm == "validated"} & {s for arm, s, _ in runs if arm == "unvalidated"})
    unpaired = sorted(n for arm, s, n in runs if s not in seeds)
    if not seeds:
        raise CompareError(f"{manifest}: no seed was trained in both arms, nothing to pair")
    refs = sorted(p.stem for p in (edir / PRED_DIR).glob("*.jsonl") if p.stem not in preds)
    for name in refs:
        preds[name] = {p.key: p for p in read_records(edir / PRED_DIR / f"{name}.jsonl", Prediction)}
        jr = _load(edir, JUDGE_DIR, name, JudgeScore)
        if jr is not None:
            judged[name] = {j.key: j for j in jr}
    sets = sorted({k[0] for v in preds.values() for k in v})
    result = {"manifest": manifest, "eval_dir": eval_dir, "seeds": seeds, "unpaired_runs": unpaired,
              "references": refs, "bootstrap": {"resamples": boot.resamples, "seed": boot.seed,
                                                "confidence": boot.confidence},
              "sets": [compare_set(s, seeds, _only(preds, s), _only(judged, s), boot) for s in sets],
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
                 boot: BootstrapConfig, runs: list[tuple[str, int, str]]) -> dict[str, Any]:
    """Per model and per arm (seeds pooled): accuracy with CI, per specialty, judge means per dimension."""
    run_names = [n for _, _, n in runs]
    groups: dict[str, list[str]] = {f"{arm} (all seeds)": [n for a, _, n in runs if a == arm] for arm in ARMS}
    groups |= {n: [n] for n in sorted(run_names)} | {n: [n] for n in preds if n not in run_names}
    out = {}
    for label, names in groups.items():
        ps = [p for n in names for p in preds[n].values()]
        js = [j for n in names for j in judged.get(n, {}).values() if j.error is None]
        spec: dict[str, list[bool]] = defaultdict(list)
        for p in ps:
            spec[p.specialty or "(none)"].append(p.correct)
        out[label] = {"accuracy": bootstrap_mean([p.correct for p in ps], boot.resamples, boot.seed,
                                                 boot.confidence).as_dict(),
                      "no_answer_rate": _rate(ps),
                      "per_specialty": {s: sum(v) / len(v) for s, v in sorted(spec.items())},
                      "judge": {d: sum(j.scores[d] for j in js) / len(js) for d in RUBRIC_DIMENSIONS} if js else None}
    return out


def _figures(result: dict[str, Any], odir: Path) -> dict[str, str]:
    models = result["models"]
    rows = [(m, v["accuracy"]["value"], v["accuracy"]["low"], v["accuracy"]["high"]) for m, v in models.items()]
    figs = {"accuracy": plot_accuracy(rows, odir / "accuracy_ci.png", "Accuracy per model / arm (all sets)").name}
    pooled = {m: v for m, v in models.items() if m.endswith("(all seeds)") or m in result["references"]}
    figs["specialty"] = plot_specialty({m: v["per_specialty"] for m, v in (pooled or models).items()},
                                       odir / "specialty.png").name
    radar = {m: v["judge"] for m, v in (pooled or models).items() if v["judge"]}
    if radar:
        figs["rubric_radar"] = plot_radar(radar, odir / "rubric_radar.png").name
    return figs


def _est(e: dict[str, Any], digits: int = 3) -> str:
    return f"{e['value']:+.{digits}f} [{e['low']:+.{digits}f}, {e['high']:+.{digits}f}]"


def _acc(e: dict[str, Any]) -> str:
    return f"{e['value']:.3f} [{e['low']:.3f}, {e['high']:.3f}]"


def render_blocks(r: dict[str, Any]) -> list[Block]:
    conf = int(round(100 * r["bootstrap"]["confidence"]))
    b = [Block("h1", "Validated vs unvalidated: paired comparison"),
         Block("p", f"Manifest `{r['manifest']}`; predictions from `{r['eval_dir']}`. Seeds paired: "
                    f"{', '.join(map(str, r['seeds']))}. CIs are {conf}% percentile bootstrap "
                    f"({r['bootstrap']['resamples']} resamples); pooled CIs resample whole items. McNemar: exact "
                    "binomial test on discordant pairs (b = only validated right, c = only unvalidated right). "
                    "No-answer counts as wrong and is shown on its own.")]
    if r["unpaired_runs"]:
        b.append(Block("p", f"Runs without a partner seed (left out of the paired tests): {', '.join(r['unpaired_runs'])}."))
    for s in r["sets"]:
        b.append(Block("h2", f"Accuracy on `{s['set']}`"))
        head = ["seeds", "n", "validated", "unvalidated", "diff (val - unval)", "McNemar b / c", "p", "no-answer val / unval"]
        b.append(Block("table", rows=[head] + [[x["label"], str(x["n"]), _acc(x["validated"]), _acc(x["unvalidated"]),
                                               _est(x["diff"]), f"{x['mcnemar']['b']} / {x['mcnemar']['c']}",
                                               f"{x['mcnemar']['p_value']:.4f}",
                                               f"{x['no_answer']['validated']:.3f} / {x['no_answer']['unvalidated']:.3f}"]
                                              for x in s["accuracy"]]))
        if s["judge"]:
            b.append(Block("h2", f"LLM-judge rubric on `{s['set']}` (paired diff val - unval, 0-2 per dimension)"))
            head = ["seeds", "n", *RUBRIC_DIMENSIONS, "total (0-10)", "sign test wins / losses, p"]
            b.append(Block("table", rows=[head] + [[x["label"], str(x["n"]),
                                                    *(_est(x["dimensions"][d], 2) for d in RUBRIC_DIMENSIONS),
                                                    _est(x["total"], 2), f"{x['sign_test']['b']} / {x['sign_test']['c']}, "
                                                                         f"p={x['sign_test']['p_value']:.4f}"]
                                                   for x in s["judge"]]))
    b.append(Block("h2", "Models and arms (all sets)"))
    b.append(Block("table", rows=[["model / arm", f"accuracy [{conf}% CI]", "no-answer rate", "judge mean (0-2)"]] +
                   [[m, _acc(v["accuracy"]), f"{v['no_answer_rate']:.3f}",
                     "n/a" if not v["judge"] else f"{sum(v['judge'].values()) / len(v['judge']):.2f}"]
                    for m, v in r["models"].items()]))
    captions = {"accuracy": "Accuracy with CI per model and arm", "specialty": "Accuracy per specialty",
                "rubric_radar": "LLM-judge rubric radar"}
    for key, name in r["figures"].items():
        b.append(Block("image", captions[key], rows=[[name]]))
    return b

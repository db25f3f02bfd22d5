"""Benchmark: calibration of `eval.inference.compare_arms` on simulated studies.

    python benchmarks/inference_calibration.py [--quick] [--seed S]

Every simulated study draws a FRESH test set from a population of families (sizes 1..8), so the truth is
a population quantity. Generative model (logit scale): base logit mu + family effect u_f + item effect
v_i (sd 1) + run effect w_{arm,run} (+ arm shift in the effect world), then one Bernoulli draw per
(item, run). ICC = var(u) / (var(u) + var(v) + pi^2/3) in {0.1, 0.3}; the run sd is set so that the
run effect alone moves population accuracy by {0.5, 3} points (sd), on top of the item-by-run binomial
noise; R in {3, 5} runs per arm; base population accuracy spread over 0.40..0.70 across scenarios.
Null world: both arms identical in distribution (true difference 0). Effect world: arm A's logit is
shifted so that its population accuracy is exactly 3 points higher (Gauss-Hermite integration).
Two extra scenarios stress the family level: arm A also gets a family-specific logit effect (sd 0.5,
so the arm difference varies by family; in the null world A's logit is re-centred so that the
POPULATION accuracies are still equal, but any finite test set shows a family-driven difference).

Per scenario: type1_error (null studies with p < 0.05), coverage (the LOWER of the null-world and the
effect-world coverage of the 95% CI), power (p < 0.05 in the effect world), plus the coverage of the
secondary two-level percentile bootstrap for contrast (on the first 250 studies of each world, Monte-Carlo
SE ~0.014). Prints ONE JSON line on stdout; progress goes to stderr. `studies_per_scenario` counts the null
studies (type-I error: Monte-Carlo SE ~0.0069 at 0.05 in --quick, ~0.0031 in full mode); the effect world
uses half as many.
--quick: 60 families (~270 items), 1000 null + 500 effect studies per scenario, 499 bootstrap resamples
(~30-40 s on an idle core; up to twice that when other jobs share the cores). Full: 100 families (~450
items), 5000 + 2500 studies, 999 resamples (~4-5 min).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from scipy.optimize import brentq  # noqa: E402
from scipy.special import expit  # noqa: E402

from eval.inference import Outcome, compare_arms  # noqa: E402

ITEM_SD = 1.0
EFFECT = 0.03
HETEROGENEITY_SD = 0.5
BOOTSTRAP_STUDIES = 250  # the secondary bootstrap's coverage is estimated on the first 250 studies of a world
_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(80)
_WEIGHTS = _WEIGHTS / _WEIGHTS.sum()


@dataclass(frozen=True)
class Scenario:
    icc: float
    run_sd_points: float
    runs_per_arm: int
    families: int
    base_accuracy: float
    arm_family_sd: float = 0.0  # logit sd of a family-specific arm-A effect (effect heterogeneity)


@dataclass(frozen=True)
class World:
    mu: float  # base logit
    family_sd: float
    run_sd: float  # logit-scale sd of the run effect
    null_shift: float  # logit offset of arm A making the population accuracies equal (0 if homogeneous)
    shift: float  # logit offset of arm A giving +3 accuracy points in the population
    arm_family_sd: float


def _marginal(mu: float, sd: float) -> float:
    """E[expit(mu + sd * Z)], Z standard normal."""
    return float(_WEIGHTS @ expit(mu + sd * _NODES))


def _slope(mu: float, sd: float) -> float:
    p = expit(mu + sd * _NODES)
    return float(_WEIGHTS @ (p * (1 - p)))


def calibrate(sc: Scenario) -> World:
    fam_sd = math.sqrt(sc.icc * (ITEM_SD ** 2 + math.pi ** 2 / 3) / (1 - sc.icc))
    run_sd, mu = 0.0, 0.0
    for _ in range(4):
        total = math.sqrt(fam_sd ** 2 + ITEM_SD ** 2 + run_sd ** 2)
        mu = brentq(lambda m, t=total: _marginal(m, t) - sc.base_accuracy, -10, 10)
        run_sd = sc.run_sd_points / 100 / _slope(mu, math.sqrt(fam_sd ** 2 + ITEM_SD ** 2))
    total_a = math.sqrt(fam_sd ** 2 + ITEM_SD ** 2 + run_sd ** 2 + sc.arm_family_sd ** 2)
    null = brentq(lambda s: _marginal(mu + s, total_a) - sc.base_accuracy, -3.0, 3.0)
    shift = brentq(lambda s: _marginal(mu + s, total_a) - sc.base_accuracy - EFFECT, -3.0, 3.0)
    return World(mu, fam_sd, run_sd, null, shift, sc.arm_family_sd)


class Ids:
    """Every Outcome a scenario can produce, built once: item m of family k is "f{k}.{m}".

    Outcomes are immutable values, so a study just picks them from this table (building thousands of
    frozen dataclasses per study would dominate the benchmark's run time); compare_arms receives an
    ordinary list of Outcome objects exactly as if they had been created one by one."""

    def __init__(self, families: int, runs: int) -> None:
        self.table = np.empty((2, runs, families, 8, 2), dtype=object)  # arm, run, family, pos, correct
        for a, arm in enumerate("AB"):
            for r in range(runs):
                for k in range(families):
                    for m in range(8):
                        for c in (0, 1):
                            self.table[a, r, k, m, c] = Outcome(arm, f"r{r}", f"f{k}.{m}", f"f{k}", bool(c))


def simulate(sc: Scenario, w: World, rng: np.random.Generator, effect: bool, ids: Ids) -> list[Outcome]:
    sizes = rng.integers(1, 9, sc.families)
    fam = np.repeat(np.arange(sc.families), sizes)
    pos = np.arange(fam.size) - np.repeat(np.cumsum(sizes) - sizes, sizes)  # position within family
    eta = w.mu + rng.normal(0.0, w.family_sd, sc.families)[fam] + rng.normal(0.0, ITEM_SD, fam.size)
    eta_a = eta + (w.shift if effect else w.null_shift)
    if w.arm_family_sd > 0:
        eta_a = eta_a + rng.normal(0.0, w.arm_family_sd, sc.families)[fam]
    out: list[Outcome] = []
    for a, base in enumerate((eta_a, eta)):
        run_eff = rng.normal(0.0, w.run_sd, (sc.runs_per_arm, 1))
        y = (rng.random((sc.runs_per_arm, fam.size)) < expit(base + run_eff)).astype(int)
        for r in range(sc.runs_per_arm):
            out.extend(ids.table[a, r, fam, pos, y[r]].tolist())
    return out


def _world(sc: Scenario, w: World, rng: np.random.Generator, effect: bool, studies: int,
           resamples: int, ids: Ids) -> dict[str, float]:
    truth = EFFECT if effect else 0.0
    reject = cover = boot_cover = 0
    boot_studies = min(studies, BOOTSTRAP_STUDIES)
    for s in range(studies):
        res = compare_arms(simulate(sc, w, rng, effect, ids), "A", "B",
                           resamples=resamples if s < boot_studies else 0, seed=s)
        reject += res.p_value < 0.05
        cover += res.difference.low <= truth <= res.difference.high
        if res.bootstrap is not None:
            boot_cover += res.bootstrap.low <= truth <= res.bootstrap.high
    return {"reject": reject / studies, "cover": cover / studies, "boot_cover": boot_cover / boot_studies}


def scenarios(families: int) -> list[Scenario]:
    grid = [(icc, sd, r) for icc in (0.1, 0.3) for sd in (0.5, 3.0) for r in (3, 5)]
    out = [Scenario(icc, sd, r, families, round(0.40 + 0.30 * k / (len(grid) - 1), 3))
           for k, (icc, sd, r) in enumerate(grid)]
    # stress the family level: arm A's effect varies by family (mean-zero in the null world)
    return out + [Scenario(0.3, 0.5, r, families, 0.55, HETEROGENEITY_SD) for r in (3, 5)]


def run_scenario(sc: Scenario, rng: np.random.Generator, studies: tuple[int, int], resamples: int) -> dict:
    w = calibrate(sc)
    ids = Ids(sc.families, sc.runs_per_arm)
    null = _world(sc, w, rng, False, studies[0], resamples, ids)
    alt = _world(sc, w, rng, True, studies[1], resamples, ids)
    return {"icc": sc.icc, "run_sd_points": sc.run_sd_points, "runs_per_arm": sc.runs_per_arm,
            "families": sc.families, "base_accuracy": sc.base_accuracy,
            "arm_family_sd": sc.arm_family_sd,
            "type1_error": null["reject"], "coverage": min(null["cover"], alt["cover"]),
            "power": alt["reject"], "coverage_null": null["cover"], "coverage_effect": alt["cover"],
            "bootstrap_secondary_coverage": min(null["boot_cover"], alt["boot_cover"])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    null_n, effect_n, families, resamples = (1000, 500, 60, 499) if args.quick else (5000, 2500, 100, 999)
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    rows = []
    for sc in scenarios(families):
        rows.append(run_scenario(sc, rng, (null_n, effect_n), resamples))
        print(f"[{time.perf_counter() - t0:6.1f}s] {json.dumps(rows[-1])}", file=sys.stderr, flush=True)
    print(json.dumps({"benchmark": "inference_calibration", "quick": args.quick,
                      "studies_per_scenario": null_n, "effect_studies_per_scenario": effect_n,
                      "bootstrap_resamples": resamples, "scenarios": rows,
                      "max_type1_error": max(r["type1_error"] for r in rows),
                      "min_coverage": min(r["coverage"] for r in rows),
                      "seconds": round(time.perf_counter() - t0, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

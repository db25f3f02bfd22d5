"""Benchmark: the whole production pipeline at paper scale against emulated DeepSeek-R1 GPU replicas.

    python benchmarks/paper_scale.py [--quick | --tiny] [--seeds N] [--factor 9] [--replicas 4]
                                     [--tok-s 2500] [--max-concurrency 64] [--seq-tok-s N] [--time-scale S]
                                     [--no-death] [--seed 0] [--keep DIR]

`configs/deepseek-r1.yaml`, unchanged but for `--set` overrides: its endpoints pointed at N rehearsal replicas
(`medcot.rehearsal`, served from a thread of this process), a SQLite store in a temp dir, the shared seeds
(`data/seeds/seed_zh.jsonl` + `seed_en.jsonl`, 1,500, the held-out exclusion list off so that all are used),
automated reviewers as in the demo (`review.automated=llm`, `build.allow_automated_reviewers=true`), and
every stage of the config (seeds, generate, expand, specialty, review, strikes, panel, consensus, build), run
as `python -m medcot.cli run` in a subprocess. Sizes: default all 1,500 seeds; `--quick` 150 (75 per file);
`--tiny` 8 seeds with factor 2 (a test-sized smoke run). Expansion factor 9 (families of 10).

Three runs:
1. the measured run: one replica dies at 40 % of the expected time for 5 % of it (`--no-death`: none), 0.5 %
   of requests get a 503. `items` (store items: seeds + accepted expansions), `calls` (stored LLM calls),
   `tokens` (their completion tokens), `wall_s`, `efficiency` = (tokens / aggregate replica rate) / wall_s,
   `peak_rss_mb` (VmHWM of the pipeline process), `store_mb` (SQLite file with its WAL), and `stages`: per
   stage its wall seconds and the replicas' utilisation (tokens decoded / capacity) during it;
2. `rerun_calls`: the same command again on the finished store; requests the replicas received;
3. a fresh store with 1 % 503s and 0.02 % hangs beyond the client timeout, SIGKILLed at a random point
   (uniform in 15..85 % of run 1's stage time after its start-up, `--seed`), then rerun to completion.
   `lost`: what run 1 produced on its first pass (items, initial CoTs, round-0 strikes, initial reviews,
   expansions) missing after the resume, plus anything stored before the kill missing after it; the panel's
   later path (regenerations, panel votes) is left out of the comparison with run 1 because it depends on
   the order in which the two judges' submissions arrive. `duplicated`: items with the same question,
   generations of one item/purpose/revision, calls with one cache key, attempts, reviews of one
   item/user/phase, expansion events, each counted beyond its first. Run 3 uses a 3x faster clock (content
   does not depend on time).

Thinking: the rehearsal default (log-normal, median 1,500 tokens) clipped at `--think-max` 7,900 tokens, so
that no CoT is cut at generate's 8,192 (a cut CoT is empty, and if the automated judges approve it the build
refuses the release: see RESULTS.md). Judgements (4,096) and five-strike answers are still cut sometimes.
Time: replicas run `--time-scale` model seconds per wall second (default: quick 6, full 12, tiny 200);
client timeouts are R1's 1800 s scaled the same way; `llm.concurrency` = 1.25 x replicas x max-concurrency
(the client holds a slot during its retry backoff; the replicas queue the excess). Prints ONE JSON line;
exit 1 when a goal is missed (efficiency >= 0.9, rerun_calls 0, lost 0, duplicated 0; --quick: items >= 1000).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import closing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from medcot.rehearsal import AnswerKeys, Death, FleetThread, R1Config, RehearsalFleet, ThinkLengths  # noqa: E402

CONFIG = "configs/deepseek-r1.yaml"
SEED_FILES = ["data/seeds/seed_zh.jsonl", "data/seeds/seed_en.jsonl"]
R1_TIMEOUT_S = 1800.0  # configs/deepseek-r1.yaml llm.timeout_s, in model seconds
MEAN_TOKENS_PER_ITEM = 6.5 * 1750  # a rough prior (calls per item x mean reply), only to place the death


@dataclass
class Size:
    per_file: int | None
    factor: int
    time_scale: float
    min_items: int = 0
    check_efficiency: bool = True


SIZES = {"full": Size(None, 9, 12.0), "quick": Size(75, 9, 6.0, min_items=1000), "tiny": Size(4, 2, 200.0, check_efficiency=False)}


@dataclass
class RunResult:
    code: int
    wall_s: float
    peak_rss_mb: float
    stage_marks: list[tuple[str, float, float]] = field(default_factory=list)  # (stage, t, fleet decoded)
    end_decoded: float = 0.0
    output: str = ""


# ---- running the pipeline --------------------------------------------------------------------------------
def overrides(db: Path, out: Path, urls: list[str], size: Size, concurrency: int, timeout_s: float) -> list[str]:
    sets = [f"store.url={db}", f"run.out_dir={out}", f"llm.endpoints={json.dumps(urls)}",
            f"llm.concurrency={concurrency}", f"llm.timeout_s={timeout_s:g}", "llm.backoff_base_s=0.25",
            "seeds.exclude=[]", f"expand.factor={size.factor}", "review.automated=llm",
            "build.allow_automated_reviewers=true"]
    if size.per_file is not None:
        sets.append(f"seeds.per_file_limit={size.per_file}")
    return [x for s in sets for x in ("--set", s)]


def _vm_hwm_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def run_pipeline(args: list[str], fleet: FleetThread, kill_after_s: float | None = None) -> RunResult:
    """`medcot run` in a subprocess; stage lines are timestamped with the fleet's decoded tokens."""
    cmd = [sys.executable, "-m", "medcot.cli", "run", "-c", CONFIG, "--no-progress", *args]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    result = RunResult(code=-1, wall_s=0.0, peak_rss_mb=0.0)
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("== stage "):
                result.stage_marks.append((line.split()[2], time.perf_counter() - start, fleet.stats()["decoded"]))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    while proc.poll() is None:
        result.peak_rss_mb = max(result.peak_rss_mb, _vm_hwm_mb(proc.pid) or 0.0)
        if kill_after_s is not None and time.perf_counter() - start >= kill_after_s:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.2)
    result.code = proc.wait()
    result.wall_s = time.perf_counter() - start
    reader.join(timeout=10)
    result.end_decoded = fleet.stats()["decoded"]
    result.output = "".join(lines)
    return result


# ---- the store -------------------------------------------------------------------------------------------
def store_facts(db: Path) -> dict[str, Any]:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        q = lambda sql: conn.execute(sql).fetchall()  # noqa: E731
        calls, tokens, prompt_tokens = q("SELECT count(*), coalesce(sum(completion_tokens), 0), "
                                         "coalesce(sum(prompt_tokens), 0) FROM llm_calls")[0]
        return {"items": q("SELECT count(*) FROM items")[0][0], "calls": calls, "tokens": tokens,
                "prompt_tokens": prompt_tokens,
                "by_origin": dict(q("SELECT origin, count(*) FROM items GROUP BY origin")),
                "stages": dict(q("SELECT stage, count(*) FROM items GROUP BY stage")),
                "calls_by_stage": {s: {"calls": n, "tokens": t} for s, n, t in
                                   q("SELECT stage, count(*), sum(completion_tokens) FROM llm_calls GROUP BY stage")}}


def inventory(db: Path, first_pass: bool = False) -> dict[str, Counter[tuple[Any, ...]]]:
    """What a run produced, as multisets: the keys `lost` and `duplicated` are counted on. `first_pass`: only
    what the request contents determine (items, initial CoTs, round-0 strikes, initial reviews, expansions),
    not the panel's path, which depends on the order in which the two judges' submissions arrive."""
    gen, att, rev = ("WHERE purpose = 'initial'", "WHERE round = 0", "WHERE phase = 'review'") if first_pass \
        else ("", "", "")
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        rows = lambda sql: Counter(tuple(r) for r in conn.execute(sql))  # noqa: E731
        return {"items": rows("SELECT id FROM items"),
                "questions": rows("SELECT norm_question FROM items"),
                "generations": rows(f"SELECT item_id, purpose, revision FROM generations {gen}"),
                "calls": rows("SELECT cache_key FROM llm_calls"),
                "attempts": rows(f"SELECT item_id, round, attempt_no FROM attempts {att}"),
                "reviews": rows(f"SELECT item_id, phase FROM reviews {rev}"),
                "votes": rows("SELECT item_id, user_id, phase FROM reviews"),
                "expansions": rows("SELECT kind, item_id FROM events WHERE kind IN ('expanded', 'expansion_done')")}


LOST_KINDS = ("items", "generations", "attempts", "reviews", "expansions")
DUP_KINDS = ("questions", "generations", "calls", "attempts", "votes", "expansions")


def lost_and_duplicated(reference: Path, at_kill: dict[str, Counter[tuple[Any, ...]]],
                        resumed: Path) -> tuple[int, int, dict[str, Any]]:
    """lost: first-pass work of the reference run missing after the resume, plus anything stored before the
    kill that the resume lost; duplicated: keys stored more than once after the resume."""
    ref, got, final = inventory(reference, first_pass=True), inventory(resumed, first_pass=True), inventory(resumed)
    lost = {k: sum((ref[k] - got[k]).values()) + sum((at_kill[k] - final[k]).values()) for k in LOST_KINDS}
    duplicated = {k: sum(n - 1 for n in final[k].values() if n > 1) for k in DUP_KINDS}
    return sum(lost.values()), sum(duplicated.values()), {"lost": lost, "duplicated": duplicated}


def store_mb(db: Path) -> float:
    return round(sum(p.stat().st_size for p in db.parent.glob(db.name + "*")) / 2**20, 1)


# ---- the benchmark ---------------------------------------------------------------------------------------
def stage_breakdown(run: RunResult, capacity: float) -> dict[str, dict[str, float]]:
    """Per stage: wall seconds and the replicas' utilisation (tokens decoded / capacity) during it."""
    marks = [("startup", 0.0, 0.0), *run.stage_marks, ("end", run.wall_s, run.end_decoded)]
    out: dict[str, dict[str, float]] = {}
    for (name, t0, d0), (_, t1, d1) in zip(marks, marks[1:]):
        dt = max(t1 - t0, 1e-9)
        out[name] = {"wall_s": round(dt, 2), "utilisation": round((d1 - d0) / (capacity * dt), 3)}
    return out


def measure(size: Size, cfg: R1Config, replicas: int, keys: AnswerKeys, workdir: Path, seed: int,
            death: bool) -> dict[str, Any]:
    capacity = cfg.tok_s * cfg.time_scale * replicas
    concurrency = math.ceil(1.25 * replicas * cfg.max_concurrency)
    timeout = R1_TIMEOUT_S / cfg.time_scale
    n_seeds = size.per_file * len(SEED_FILES) if size.per_file else 1500
    expected_s = n_seeds * (size.factor + 1) * MEAN_TOKENS_PER_ITEM / capacity
    deaths = [Death(0, 0.4 * expected_s, 0.05 * expected_s)] if death and replicas > 1 else []
    db_a, out_a = workdir / "a" / "medcot.db", workdir / "a" / "out"
    db_a.parent.mkdir(parents=True)
    with FleetThread(RehearsalFleet(replace(cfg, p_503=0.005), replicas, keys, deaths)) as fleet:
        run_a = run_pipeline(overrides(db_a, out_a, fleet.urls, size, concurrency, timeout), fleet)
        fleet_a = fleet.stats()
    if run_a.code != 0:
        raise SystemExit(f"measured run failed (exit {run_a.code}):\n{run_a.output[-3000:]}")
    facts = store_facts(db_a)
    with FleetThread(RehearsalFleet(cfg, replicas, keys)) as fleet:
        rerun = run_pipeline(overrides(db_a, out_a, fleet.urls, size, concurrency, timeout), fleet)
        rerun_calls = fleet.stats()["requests"]
    startup = run_a.stage_marks[0][1] if run_a.stage_marks else 0.0
    kill = kill_run(size, cfg, replicas, keys, workdir, seed, startup, run_a.wall_s - startup, concurrency)
    at_kill = kill.pop("inventory_at_kill")
    lost, duplicated, detail = lost_and_duplicated(db_a, at_kill, workdir / "b" / "medcot.db")
    stages = stage_breakdown(run_a, capacity)
    return {"benchmark": "paper_scale", "seeds": facts["by_origin"].get("seed", 0), "items": facts["items"],
            "calls": facts["calls"], "tokens": facts["tokens"], "wall_s": round(run_a.wall_s, 1),
            "efficiency": round(facts["tokens"] / capacity / run_a.wall_s, 3),
            "peak_rss_mb": round(run_a.peak_rss_mb, 1), "store_mb": store_mb(db_a), "rerun_calls": rerun_calls,
            "rerun_exit": rerun.code, "lost": lost, "duplicated": duplicated, **kill,
            "tokens_per_item": round(facts["tokens"] / max(facts["items"], 1), 1),
            "prompt_tokens": facts["prompt_tokens"], "calls_per_item": round(facts["calls"] / max(facts["items"], 1), 2),
            "replicas": replicas, "tok_s_per_replica": cfg.tok_s, "max_concurrency": cfg.max_concurrency,
            "seq_tok_s": cfg.seq_tok_s, "time_scale": cfg.time_scale, "client_concurrency": concurrency,
            "model_hours": round(run_a.wall_s * cfg.time_scale / 3600, 2),
            "decoded_wasted": fleet_a["decoded"] - facts["tokens"], "faults": fleet_a["faults"],
            "fleet_events": fleet_a["events"], "stages": stages, "calls_by_stage": facts["calls_by_stage"],
            "item_stages": facts["stages"], "lost_detail": detail["lost"], "duplicated_detail": detail["duplicated"]}


def kill_run(size: Size, cfg: R1Config, replicas: int, keys: AnswerKeys, workdir: Path, seed: int,
             startup_s: float, stages_s: float, concurrency: int) -> dict[str, Any]:
    """A fresh store, faults, SIGKILL at a random point of the stages (the clock runs 3x faster here, the
    process start-up does not), then a rerun to completion."""
    fast = replace(cfg, time_scale=cfg.time_scale * 3, p_503=0.01, p_hang=0.0002)
    timeout = R1_TIMEOUT_S / fast.time_scale
    fast = replace(fast, hang_s=timeout + 2)
    db_b, out_b = workdir / "b" / "medcot.db", workdir / "b" / "out"
    db_b.parent.mkdir(parents=True)
    kill_at = startup_s + random.Random(seed).uniform(0.15, 0.85) * stages_s / 3
    with FleetThread(RehearsalFleet(fast, replicas, keys)) as fleet:
        args = overrides(db_b, out_b, fleet.urls, size, concurrency, timeout)
        killed = run_pipeline(args, fleet, kill_after_s=kill_at)
        at_kill = inventory(db_b) if db_b.exists() else {k: Counter() for k in LOST_KINDS}
        resumed = run_pipeline(args, fleet)
        faults = fleet.stats()["faults"]
    if resumed.code != 0:
        raise SystemExit(f"resumed run failed (exit {resumed.code}):\n{resumed.output[-3000:]}")
    return {"kill_at_s": round(kill_at, 1), "kill_exit": killed.code,
            "items_at_kill": sum(at_kill["items"].values()), "calls_at_kill": sum(at_kill.get("calls", {}).values()),
            "kill_run_faults": faults, "inventory_at_kill": at_kill}


def goals(result: dict[str, Any], size: Size, death: bool) -> list[str]:
    missed = [f"{k} {result[k]} != 0" for k in ("rerun_calls", "rerun_exit", "lost", "duplicated") if result[k] != 0]
    if death and size.check_efficiency and result["efficiency"] < 0.9:
        missed.append(f"efficiency {result['efficiency']} < 0.9")
    if result["items"] < size.min_items:
        missed.append(f"items {result['items']} < {size.min_items}")
    return missed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="150 seeds (75 per file)")
    mode.add_argument("--tiny", action="store_true", help="8 seeds, factor 2 (a smoke run for the tests)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per file (overrides the mode's)")
    parser.add_argument("--factor", type=int, default=None, help="expansion factor (default: 9; tiny 2)")
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--tok-s", type=float, default=2500.0, help="one replica's aggregate decode rate (model)")
    parser.add_argument("--max-concurrency", type=int, default=64, help="requests one replica runs at once")
    parser.add_argument("--seq-tok-s", type=float, default=None, help="one sequence's rate cap (model tok/s)")
    parser.add_argument("--time-scale", type=float, default=None, help="model seconds per wall second")
    parser.add_argument("--think-max", type=int, default=7900,
                        help="longest thinking (tokens); below generate.sampling.max_tokens, see RESULTS.md")
    parser.add_argument("--no-death", action="store_true", help="no replica dies in the measured run")
    parser.add_argument("--seed", type=int, default=0, help="seeds the kill time")
    parser.add_argument("--keep", type=Path, default=None, help="keep the stores in this new folder")
    args = parser.parse_args(argv)
    size = SIZES["tiny" if args.tiny else "quick" if args.quick else "full"]
    size = replace(size, per_file=args.seeds or size.per_file, factor=args.factor or size.factor,
                   time_scale=args.time_scale or size.time_scale)
    cfg = R1Config(tok_s=args.tok_s, max_concurrency=args.max_concurrency, seq_tok_s=args.seq_tok_s,
                   time_scale=size.time_scale, think=ThinkLengths(maximum=args.think_max))
    keys = AnswerKeys([str(ROOT / f) for f in SEED_FILES])
    with tempfile.TemporaryDirectory(prefix="paper_scale-") as tmp:
        workdir = args.keep or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        result = measure(size, cfg, args.replicas, keys, workdir, args.seed, not args.no_death)
    print(json.dumps(result, ensure_ascii=False))
    missed = goals(result, size, not args.no_death)
    if missed:
        print("goals missed: " + "; ".join(missed), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()

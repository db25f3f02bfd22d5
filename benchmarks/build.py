"""Benchmark: build the release from a synthetic store of N items, then load it.

    python benchmarks/build.py [--items 36000] [--quick]

Prints ONE JSON line: items, build_s (store -> finished release folder, the first build), load_s
(`datasets.load_dataset` of ALL three configs from a fresh HF cache, i.e. what a consumer pays the first
time), deterministic (a second build into another folder has identical file hashes), plus the row counts,
the release size and the time to make the synthetic store (not part of the goal).

The store (dataset_builder.synthetic) has seed families of 10, zh and en text of realistic length
(questions 40-160 chars / 30-110 words, CoTs ~500-1,000 chars / ~300-600 words), two blind reviews per
item, five-strike attempts, ~10% escalated with two panelists' rubric scores (half re-scored after an LLM
regeneration), revisions and decisions. Goal at N = 36,000 on 2 cores: build <= 15 s, load <= 5 s.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

GOAL = {"items": 36000, "build_s": 15.0, "load_s": 5.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=36000)
    ap.add_argument("--quick", action="store_true", help="2,000 items (a smoke run)")
    args = ap.parse_args()
    n = 2000 if args.quick else args.items
    with tempfile.TemporaryDirectory(prefix="medcot-bench-build-") as tmp:
        os.environ.update({"HF_HOME": f"{tmp}/hf", "HF_DATASETS_CACHE": f"{tmp}/hf/datasets",
                           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
        print(json.dumps(run(Path(tmp), n)), flush=True)


def run(tmp: Path, n: int) -> dict:
    import datasets

    from dataset_builder.build import build_release, file_hashes
    from dataset_builder.features import CONFIGS
    from dataset_builder.synthetic import SyntheticSpec, make_store
    from medcot.config import BuildConfig

    t0 = time.perf_counter()
    store = make_store(str(tmp / "store.db"), SyntheticSpec(items=n, seed=0))
    store_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    first = build_release(store, BuildConfig(), tmp / "release")
    build_s = time.perf_counter() - t0
    second = build_release(store, BuildConfig(), tmp / "release-again")
    deterministic = file_hashes(first.release_dir) == file_hashes(second.release_dir)
    t0 = time.perf_counter()
    rows = {c: sum(d.num_rows for d in datasets.load_dataset(str(first.release_dir), c).values()) for c in CONFIGS}
    load_s = time.perf_counter() - t0
    store.close()
    size = sum(p.stat().st_size for p in first.release_dir.rglob("*") if p.is_file())
    return {"benchmark": "build", "items": n, "build_s": round(build_s, 2), "load_s": round(load_s, 2),
            "deterministic": deterministic, "rows": rows, "release_mb": round(size / 1e6, 1),
            "store_s": round(store_s, 1), "cpus": os.cpu_count(), "goal": GOAL}


if __name__ == "__main__":
    main()

"""Benchmark: 50 concurrent simulated reviewers submitting reviews through HTTP to the review app on SQLite.

    python benchmarks/review_load.py [--quick] [--reviewers 50] [--items N] [--resubmit 0.1]

Prints ONE JSON line: reviewers, submitted, stored, lost, duplicated, p50_ms, p95_ms (+ context fields).
- The app (uvicorn, one process, the real `create_app`) runs in a SEPARATE process on a SQLite store in a
  temp dir; items have an initial CoT and are assigned blind to 2 reviewers each (balanced).
- Each simulated reviewer (its own aiohttp session and cookie jar) logs in, lists its assignments through
  the API, and for each item loads the review form (CSRF token, revision), reads it for --think-ms (mean
  1 s, uniform 0.5-1.5x; a human takes minutes) and POSTs a review. --think-ms 0 is a stress test: every
  reviewer fires its next request the moment the last one returns. A fraction (--resubmit) of the POSTs is
  sent twice, like a double click or a retry after a timeout. Logins (argon2) finish before the clock starts.
- p50_ms/p95_ms: latency of the review POSTs (form submission until the redirect comes back).
- submitted = POSTs the server acknowledged as saved; stored = review rows in the store afterwards;
  lost = acknowledged reviews missing from the store; duplicated = rows beyond one per (item, reviewer) plus
  resubmissions that were not answered "already saved".
- Then the consensus phase (--consensus-items, default 10,000 items ready for consensus, with two blind human
  approvals each): the admin starts consensus, which runs as a background job of the app, and a monitor probes
  /healthz every 20 ms until the job has finished: healthz_p50_ms/p95_ms/max_ms are those probes' latencies;
  consensus_decided = items approved (each exactly once: consensus_duplicated counts extra decisions).
--quick: 50 reviewers, 100 items (200 reviews), then the 10,000-item consensus; about a minute.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PASSWORD = "benchmark password 1"
SECRET = "review-load-benchmark-session-key-0123456789"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_REVISION = re.compile(r'name="revision" value="([0-9a-f]+)"')
RUBRIC = {**{f"score_{d}": "2" for d in ("medical_correctness", "reasoning_structure", "information_sufficiency",
                                        "terminology_clarity", "clinical_utility")},
          "difficulty": "moderate", "cognitive_level": "interpretation"}


def setup_store(url: str, reviewers: int, items: int, decidable: int) -> None:
    from curation.review import assign as assigning
    from curation.review import sample
    from medcot.config import ReviewConfig
    from medcot.store import Store
    store = Store(url)
    ids = sample.add_items(store, items)
    users = sample.add_users(store, PASSWORD, reviewers=reviewers, panelists=0, admins=1)
    with store.transaction() as conn:
        assigning.assign(conn, ids, "review", 2, assigning.pool(conn, ReviewConfig(), "review"))
    if decidable:
        add_decidable(store, users, decidable)
    store.close()


def add_decidable(store: Any, users: dict[str, Any], n: int) -> None:
    """n items ready for consensus (two blind human approvals each, five-strike passed). One item goes through
    the real submission path; the others are copies of every row that names it (item, CoT, reviews, rubric
    scores, assignments, events), with their own question text and revision hashes: built in seconds, and
    consensus cannot tell them from reviewed items."""
    from sqlalchemy import insert, select

    from curation.review import assign as assigning
    from curation.review import sample
    from curation.review.items import get_item, item_revision
    from curation.review.records import ReviewInput
    from curation.review.submit import submit_review
    from medcot.config import ReviewConfig
    from medcot.db import Base
    from medcot.review_tables import RUBRIC_DIMENSIONS
    from medcot.revision import content_hash
    from medcot.store import normalize_text
    (tpl,) = sample.add_items(store, 1, prefix="decide")
    with store.transaction() as conn:
        assigning.assign(conn, [tpl], "review", 2, [users["rev1"], users["rev2"]])
        revision = item_revision(conn, get_item(conn, tpl))
    for name in ("rev1", "rev2"):
        form = ReviewInput(1, 1, 1, "C", True, "", scores=dict.fromkeys(RUBRIC_DIMENSIONS, 2), difficulty="moderate",
                           cognitive_level="interpretation", revision=revision)
        submit_review(store, tpl, users[name], form, ReviewConfig())
    sample.set_stage(store, tpl, "strikes_passed")
    tables = [t for t in Base.metadata.sorted_tables if "item_id" in t.c or t.name == "items"]
    with store.transaction() as conn:
        rows = {t.name: [dict(r) for r in conn.execute(select(t).where(
            (t.c.id if t.name == "items" else t.c.item_id) == tpl)).mappings()] for t in tables}
        item, cot = rows["items"][0], rows["generations"][0]["cot"]
        for start in range(0, n - 1, 1000):
            batch: dict[str, list[dict[str, Any]]] = {t.name: [] for t in tables}
            for k in range(start + 1, min(n, start + 1001)):
                new_id, question = f"decide{k:06d}", f"{item['question']} (copy {k})"
                revision = content_hash(question, item["options"], item["answer"], cot)
                for t in tables:
                    for r in rows[t.name]:
                        r = dict(r)
                        if t.name == "items":
                            r |= {"id": new_id, "family_id": new_id, "question": question,
                                  "norm_question": normalize_text(question)}
                        else:
                            r.pop("id", None)
                            r["item_id"] = new_id
                        if "revision_hash" in r and r["revision_hash"]:
                            r["revision_hash"] = revision
                        batch[t.name].append(r)
            for t in tables:
                if batch[t.name]:
                    conn.execute(insert(t), batch[t.name])


def serve(url: str) -> None:
    """The server process: the real app on the store, a free port, READY <url> on stdout."""
    import socket

    import uvicorn

    from curation.review.app import create_app
    from medcot.config import load_config
    cfg = load_config(None, [f"store.url={url}"])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # accepted connections inherit this; without it a socket handed to uvicorn sends its responses under Nagle,
    # and every keep-alive request waits ~40 ms for the client's delayed ACK (`medcot review serve` binds itself)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(cfg, secret_key=SECRET), log_level="warning",
                                           lifespan="off", access_log=False))
    print(f"READY http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    server.run(sockets=[sock])


async def reviewer(base: str, name: str, resubmit: float, rng: random.Random, out: dict[str, Any],
                   logged_in: asyncio.Barrier, think_ms: float) -> None:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.get(f"{base}/login") as r:
            token = _CSRF.search(await r.text()).group(1)
        async with http.post(f"{base}/login", data={"name": name, "password": PASSWORD, "csrf_token": token},
                             allow_redirects=False) as r:
            assert r.status == 303, f"login of {name} failed: HTTP {r.status}"
        if await logged_in.wait() == 0:  # argon2 logins are not what is measured: the clock starts here
            out["start"] = time.perf_counter()
        await asyncio.sleep(rng.uniform(0, think_ms) / 1000)  # reviewers do not all begin in the same instant
        async with http.get(f"{base}/api/assignments") as r:
            todo = [a["item_id"] for a in await r.json() if a["open"]]
        for item in todo:
            async with http.get(f"{base}/items/{item}/review") as r:
                page = await r.text()
            form = {**RUBRIC, "csrf_token": _CSRF.search(page).group(1), "revision": _REVISION.search(page).group(1),
                    "relevance": "1", "correctness": str(rng.randint(0, 1)), "sufficiency": "1",
                    "answer": rng.choice("CCCA"), "approve": str(rng.randint(0, 1)), "comment": f"{name} on {item}"}
            if think_ms:  # reading the item before submitting (0.5x to 1.5x the mean)
                await asyncio.sleep(think_ms * rng.uniform(0.5, 1.5) / 1000)
            times = 2 if rng.random() < resubmit else 1
            for attempt in range(times):
                start = time.perf_counter()
                async with http.post(f"{base}/items/{item}/review", data=form, allow_redirects=False) as r:
                    status, location = r.status, r.headers.get("Location", "")
                    await r.read()
                elapsed = (time.perf_counter() - start) * 1000
                if status == 303 and "m=saved" in location and attempt == 0:
                    out["latencies"].append(elapsed)
                    out["acked"].add((item, name))
                elif status == 303 and "already" in location and attempt == 1:
                    out["resubmits_ok"] += 1
                else:
                    out["errors"].append(f"{name} {item} try {attempt + 1}: HTTP {status} {location}")
            out["resubmits"] += times - 1


def count_rows(url: str) -> tuple[int, int, set[tuple[str, str]]]:
    from sqlalchemy import func, select

    from medcot.review_tables import ReviewRow, UserRow
    from medcot.store import Store
    store = Store(url, create=False)
    with store.engine.connect() as conn:
        rows = conn.execute(select(ReviewRow.item_id, UserRow.name).join(UserRow, UserRow.id == ReviewRow.user_id)
                            .where(ReviewRow.phase == "review", ~ReviewRow.item_id.like("decide%"))).all()
        distinct = conn.scalar(select(func.count()).select_from(
            select(ReviewRow.item_id, ReviewRow.user_id, ReviewRow.phase).distinct()
            .where(~ReviewRow.item_id.like("decide%")).subquery()))
    store.close()
    return len(rows), distinct or 0, {(i, n) for i, n in rows}


async def wait_ready(base: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(f"{base}/healthz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"the review app at {base} did not answer within {timeout_s} s")
            await asyncio.sleep(0.05)


async def drive(base: str, reviewers: int, resubmit: float, seed: int, think_ms: float) -> dict[str, Any]:
    await wait_ready(base)
    out: dict[str, Any] = {"latencies": [], "acked": set(), "errors": [], "resubmits": 0, "resubmits_ok": 0}
    rng = random.Random(seed)
    barrier = asyncio.Barrier(reviewers)
    await asyncio.gather(*(reviewer(base, f"rev{i}", resubmit, random.Random(rng.random()), out, barrier, think_ms)
                           for i in range(1, reviewers + 1)))
    return out


async def consensus_phase(base: str, probe_ms: float = 20.0) -> dict[str, Any]:
    """The admin starts consensus (a background job of the app) and a monitor probes /healthz every probe_ms
    until the job has finished: the latencies of those probes are what a load balancer would see."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.get(f"{base}/login") as r:
            token = _CSRF.search(await r.text()).group(1)
        async with http.post(f"{base}/login", data={"name": "admin1", "password": PASSWORD, "csrf_token": token},
                             allow_redirects=False) as r:
            assert r.status == 303, f"admin login failed: HTTP {r.status}"
        async with http.get(f"{base}/admin") as r:
            token = _CSRF.search(await r.text()).group(1)
        start = time.perf_counter()
        async with http.post(f"{base}/admin/consensus", data={"csrf_token": token}, allow_redirects=False) as r:
            job_id = r.headers["Location"].split("job=", 1)[1]
        probes: list[float] = []
        job: dict[str, Any] = {"status": "running"}
        last_poll = 0.0
        while job["status"] == "running":
            t0 = time.perf_counter()
            async with http.get(f"{base}/healthz") as r:
                await r.read()
                assert r.status == 200
            probes.append((time.perf_counter() - t0) * 1000)
            if t0 - last_poll > 0.5:
                async with http.get(f"{base}/admin/jobs/{job_id}") as r:
                    job = await r.json()
                last_poll = t0
            await asyncio.sleep(probe_ms / 1000)
        return {"job": job, "probes": probes, "seconds": time.perf_counter() - start}


def count_decisions(url: str) -> tuple[int, int]:
    """(items with an approved decision, decisions beyond one per item)."""
    from sqlalchemy import func, select

    from medcot.review_tables import DecisionRow
    from medcot.store import Store
    store = Store(url, create=False)
    with store.engine.connect() as conn:
        total = conn.scalar(select(func.count()).select_from(DecisionRow).where(DecisionRow.kind == "approved")) or 0
        items = conn.scalar(select(func.count(func.distinct(DecisionRow.item_id))).where(
            DecisionRow.kind == "approved")) or 0
    store.close()
    return items, total - items


def _p(values: list[float], pct: int) -> float:
    if len(values) < 2:
        return float("nan")
    return round(statistics.quantiles(sorted(values), n=100, method="inclusive")[pct - 1], 1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 items (200 reviews)")
    parser.add_argument("--reviewers", type=int, default=50)
    parser.add_argument("--items", type=int, default=None, help="default 100 (--quick) or 500")
    parser.add_argument("--resubmit", type=float, default=0.1, help="fraction of POSTs sent twice")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--think-ms", type=float, default=1000.0,
                        help="mean time a reviewer reads an item before submitting (0 = stress test)")
    parser.add_argument("--consensus-items", type=int, default=10000,
                        help="items ready for consensus; the job runs after the reviewers while /healthz is probed "
                             "(0 = skip)")
    parser.add_argument("--serve", metavar="STORE_URL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve)
        return
    items = args.items or (100 if args.quick else 500)
    with tempfile.TemporaryDirectory(prefix="medcot-review-load-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'review.db'}"
        setup_store(url, args.reviewers, items, args.consensus_items)
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        proc = subprocess.Popen([sys.executable, __file__, "--serve", url], stdout=subprocess.PIPE, text=True, env=env)
        try:
            line = proc.stdout.readline() if proc.stdout else ""
            if not line.startswith("READY "):
                raise SystemExit(f"the review app did not start: {line!r}")
            start = time.perf_counter()
            out = asyncio.run(drive(line.split()[1], args.reviewers, args.resubmit, args.seed, args.think_ms))
            end = time.perf_counter()
            cons = asyncio.run(consensus_phase(line.split()[1])) if args.consensus_items else None
        finally:
            proc.terminate()
            proc.wait(30)
        rows, distinct, stored_pairs = count_rows(url)
        decided, decided_twice = count_decisions(url)
    lat = sorted(out["latencies"])
    q = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) >= 2 else [float("nan")] * 99
    result = {"benchmark": "review_load", "reviewers": args.reviewers, "items": items, "submitted": len(out["acked"]),
              "stored": rows, "lost": len(out["acked"] - stored_pairs),
              "duplicated": (rows - distinct) + (out["resubmits"] - out["resubmits_ok"]),
              "p50_ms": round(q[49], 1), "p95_ms": round(q[94], 1), "resubmitted": out["resubmits"],
              "errors": len(out["errors"]), "think_ms": args.think_ms, "login_seconds": round(out["start"] - start, 2),
              "review_seconds": round(end - out["start"], 2), "store": "sqlite"}
    if cons is not None:
        result |= {"consensus_items": args.consensus_items, "consensus_status": cons["job"]["status"],
                   "consensus_decided": decided, "consensus_duplicated": decided_twice,
                   "consensus_seconds": round(cons["seconds"], 2), "healthz_probes": len(cons["probes"]),
                   "healthz_p50_ms": _p(cons["probes"], 50), "healthz_p95_ms": _p(cons["probes"], 95),
                   "healthz_max_ms": round(max(cons["probes"]), 1)}
    print(json.dumps(result))
    for e in out["errors"][:10]:
        print(f"error: {e}", file=sys.stderr)


if __name__ == "__main__":
    main()

"""CoT generation on the real vLLM CPU server: calls recorded, rerun free, SIGKILL-safe resume."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from medcot.db import CallRow, GenerationRow
from medcot.store import Store

pytestmark = pytest.mark.vllm
REPO = Path(__file__).resolve().parent.parent


def seed_file(tmp_path: Path, n_zh: int, n_en: int) -> Path:
    lines = (REPO / "data/seeds/demo_zh.jsonl").read_text(encoding="utf-8").splitlines()[:n_zh]
    lines += (REPO / "data/seeds/demo_en.jsonl").read_text(encoding="utf-8").splitlines()[:n_en]
    path = tmp_path / "seeds.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run_cmd(tmp_path: Path, server, seeds: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "medcot.cli", "run", "--config", str(REPO / "configs/demo.yaml"), "--no-progress",
            "--set", "server.managed=false", "--set", f"llm.endpoints=[{server.base_url}]",
            "--set", f"llm.model={server.model_name}", "--set", f"store.url={tmp_path / 'store.db'}",
            "--set", f"run.out_dir={tmp_path / 'out'}", "--set", f"seeds.files=[{seeds}]",
            "--set", "seeds.per_file_limit=null", "--set", "run.stages=[seeds,generate,export]", *extra]


def report(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))


def test_generate_then_rerun_makes_zero_calls(tmp_path: Path, vllm_server) -> None:
    seeds = seed_file(tmp_path, 2, 2)
    cmd = run_cmd(tmp_path, vllm_server, seeds, "--set", "generate.sampling.max_tokens=160")
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    first = report(tmp_path)
    assert first["llm"]["requests"] == 4 and first["items"] == 4
    store = Store(str(tmp_path / "store.db"))
    gens = store.generations()
    assert len(gens) == 4 and all(g.cot.strip() for g in gens)
    for g in gens:  # parsed answer is a letter of the item or None (never guessed), agreement recorded
        assert g.answer is None or g.answer in "ABCDE"
        assert (g.agrees_with_key is None) == (g.answer is None)
    with store.engine.connect() as conn:
        calls = conn.execute(select(CallRow)).mappings().all()
    assert len(calls) == 4
    assert all(c["prompt_tokens"] > 0 and c["completion_tokens"] > 0 and c["prompt_version"].startswith("cot@")
               for c in calls)
    assert {c["params"]["max_tokens"] for c in calls} == {160}
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert report(tmp_path)["llm"]["requests"] == 0
    assert "0 LLM requests" in (tmp_path / "out" / "report.md").read_text(encoding="utf-8")


def test_sigkill_mid_run_then_rerun_each_item_once(tmp_path: Path, vllm_server) -> None:
    seeds = seed_file(tmp_path, 3, 3)
    cmd = run_cmd(tmp_path, vllm_server, seeds, "--set", "llm.concurrency=1",
                  "--set", "generate.sampling.max_tokens=64", "--set", "run.stages=[seeds,generate]")
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = tmp_path / "store.db"
    deadline = time.time() + 300
    done = 0
    while time.time() < deadline and proc.poll() is None:
        if db.exists():
            with Store(str(db)).engine.connect() as conn:
                done = conn.scalar(select(func.count()).select_from(GenerationRow)) or 0
            if done >= 2:
                break
        time.sleep(0.2)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 2 <= done < 6
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    store = Store(str(db))
    with store.engine.connect() as conn:
        per_item = conn.execute(select(GenerationRow.item_id, func.count()).group_by(GenerationRow.item_id)).all()
        calls = conn.execute(select(CallRow.item_id, func.count()).group_by(CallRow.item_id)).all()
    assert len(per_item) == 6 and all(n == 1 for _, n in per_item)
    assert len(calls) == 6 and all(n == 1 for _, n in calls)
    assert report(tmp_path)["llm"]["requests"] <= 6 - 2

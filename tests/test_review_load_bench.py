"""The review load benchmark itself, tiny: it must keep running against the real app (it once broke silently
when the form changed), and its claims (nothing lost, nothing twice, consensus decided every item while /healthz
answered) must hold at any size."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_review_load_benchmark_tiny():
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "review_load.py"), "--reviewers", "4",
                          "--items", "6", "--think-ms", "0", "--consensus-items", "300"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["submitted"] == out["stored"] == 12 and out["errors"] == 0
    assert out["lost"] == 0 and out["duplicated"] == 0
    assert out["consensus_status"] == "done" and out["consensus_decided"] == 300 and out["consensus_duplicated"] == 0
    assert out["healthz_probes"] >= 1 and out["healthz_p95_ms"] >= 0

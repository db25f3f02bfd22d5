"""benchmarks/paper_scale.py in its tiny mode (8 seeds, factor 2, the clock 200x): the whole production config
against R1 rehearsal replicas, a replica dying mid-run, a rerun, a SIGKILL and a resume. About 30 s."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

KEYS = {"items", "calls", "tokens", "wall_s", "efficiency", "peak_rss_mb", "store_mb", "rerun_calls", "lost",
        "duplicated", "tokens_per_item", "stages", "kill_at_s", "kill_exit"}


def test_paper_scale_tiny_loses_nothing_and_reruns_free(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "benchmarks/paper_scale.py", "--tiny", "--seed", "3",
                           "--keep", str(tmp_path / "runs")], cwd=ROOT, capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:] + proc.stdout[-2000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert KEYS <= set(result)
    assert (result["rerun_calls"], result["lost"], result["duplicated"]) == (0, 0, 0)
    assert result["kill_exit"] == -9
    assert result["seeds"] == 8 and 8 < result["items"] <= 24  # seeds + accepted expansions (factor 2)
    assert result["calls"] >= result["items"] * 4  # CoT, two reviews and a strike per item at least
    assert result["tokens"] >= result["calls"] * 200  # every reply thinks (>= 200 tokens)
    assert 0 < result["efficiency"] <= 1.0
    assert [e[1:] for e in result["fleet_events"]] == [[0, "died"], [0, "back"]]
    assert {"generate", "expand", "review", "strikes", "build"} <= set(result["stages"])
    assert (tmp_path / "runs" / "a" / "out" / "report.md").is_file()

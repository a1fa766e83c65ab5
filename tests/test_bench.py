"""``make bench`` runs: its smoke run completes and reports (tests/bench/run.py --quick).

Nothing here is timed and no figure is judged: speed is measured by ``make bench`` itself.
What is checked is that the benchmark works: every process it starts comes up, every
callback it offers is accepted and completes (0 lost), every figure it reports is there,
and it writes its JSON, its tables and its plot. The simulator part runs in ``make test``;
the real-FreeSWITCH part (fsctl and the raw-ESL baseline on one FreeSWITCH) in
``make test-freeswitch``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support import REPO

pytestmark = pytest.mark.integration

RUN = REPO / "tests" / "bench" / "run.py"
SMOKE_TIMEOUT_S = 600
"""Longest the smoke run may take before the test gives up (it takes about a minute)."""


def smoke(out: Path, *extra: str) -> dict:
    proc = subprocess.run([sys.executable, str(RUN), "--quick", "--out", str(out), *extra],
                          capture_output=True, text=True, timeout=SMOKE_TIMEOUT_S, cwd=REPO,
                          check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    tables = (out / "bench.md").read_text()
    assert "| target | goal | measured | verdict |" in tables
    assert "fsctl bench: targets" in proc.stdout
    return json.loads((out / "bench.json").read_text())


def completed_every_one(step: dict) -> None:
    assert step["sent"] == step["accepted"] > 0, step
    assert step["completed"] == step["accepted"] and step["lost"] == 0, step
    for key in ("api_latency", "dispatch_latency", "bridge_latency"):
        assert step[key]["n"] == step["accepted"] and step[key]["p99_ms"] is not None, key
    assert {"api", "worker", "redis", "simulator", "loadgen"} <= set(step["cpu_ms_per_callback"])


def test_the_simulator_part_completes_every_callback_and_reports_every_figure(tmp_path) -> None:
    result = smoke(tmp_path, "--no-freeswitch")
    assert result["quick"] is True
    assert result["freeswitch"] is None and result["freeswitch_skipped"] == "--no-freeswitch"
    sim = result["simulator"]
    completed_every_one(sim["sustained"])
    for kind in ("curve_fsctl", "curve_stock"):
        assert len(sim[kind]) >= 2, kind  # every rate of the quick curve, none given up
        for point in sim[kind]:
            completed_every_one(point)
    memory = sim["memory"]
    assert memory["bridged"] == memory["callbacks"] == memory["accepted"]
    assert memory["worker_rss_after_mb"] > 0
    assert sim["ratio_at_equal_p99"]["fsctl_rate"] is not None
    verdicts = {t["verdict"] for t in result["targets"]}
    assert verdicts == {"smoke run: not judged"}  # a smoke run's figures say nothing


@pytest.mark.real_freeswitch
def test_the_real_freeswitch_part_runs_fsctl_and_the_baseline_side_by_side(tmp_path) -> None:
    sys.path.insert(0, str(RUN.parent))
    try:
        import realfs_part
    finally:
        sys.path.remove(str(RUN.parent))
    out = realfs_part.run(rate=5, seconds=2)
    assert out["rounds"] == realfs_part.ROUNDS == 2
    for side in ("fsctl", "baseline"):
        assert out[side]["completed"] == out["callbacks"] == 10 * out["rounds"], out[side]
        assert [r["completed"] for r in out[side]["rounds"]] == [10] * out["rounds"]
        assert out[side]["cpu_s"]["freeswitch"] == pytest.approx(
            sum(r["cpu_s"]["freeswitch"] for r in out[side]["rounds"]), abs=0.01)
        assert out[side]["channels_left"] == 0, out[side]
        assert not any(out[side]["throttling"].values()), out[side]
    summary = out["summary"]
    for key in ("freeswitch", "api", "worker", "redis", "controller"):
        assert summary["fsctl_ms_per_callback"][key] is not None, key
    assert summary["baseline_ms_per_callback"]["freeswitch"] is not None
    assert summary["capacity_ratio"] is not None
    assert "sessions-per-second lifted to" in summary["note"]

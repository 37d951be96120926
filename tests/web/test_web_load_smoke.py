"""The load benchmark itself runs: a tiny load with a kill -9 and restart in the middle, and
its invariant checks report nothing lost or duplicated."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_platform_load_survives_a_kill_9(tmp_path):
    out = tmp_path / "load.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "platform_load.py"),
            "--raters",
            "4",
            "--seconds",
            "15",
            "--kill-at",
            "0.2",  # at 3 s: 12 s for a slow restart before the end
            "--items",
            "2000",  # enough that the raters are still at work when the server is killed
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["judgments"] > 0 and result["killed_at_s"] == 3.0
    assert result["connection_retries"] > 0  # the kill landed mid-load
    assert result["lost"] == 0 and result["duplicated"] == 0 and result["over_k_items"] == 0
    assert result["acknowledged"] <= result["stored"]
    for key in ("judgments_per_s", "p50_ms", "p99_ms"):
        assert result[key] > 0
    # latency is split around the kill: the raters' retried submissions land in the recovery
    phases = result["phases"]
    assert phases["p99_before_kill_ms"] > 0
    assert (
        phases["recovery_requests"] > 0 and phases["recovery_max_ms"] >= phases["recovery_p99_ms"]
    )


def test_platform_load_refuses_garbage_pacing_flags():
    for flag, value in [("--think-ms", "-5"), ("--ramp-s", "soon"), ("--ramp-s", "nan")]:
        proc = subprocess.run(
            [sys.executable, str(ROOT / "benchmarks" / "platform_load.py"), flag, value],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 2, (flag, value, proc.stderr)
        assert flag in proc.stderr and value in proc.stderr

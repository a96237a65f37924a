"""`make bench`'s rerank part runs: one short round (how fast is not checked here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(300)
def test_bench_rerank_smoke(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_rerank.py"),
            "--smoke",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert set(report["wall_seconds"]) == {"8", "32"}
    for in_flight, times in report["wall_seconds"].items():
        assert len(times) == 7 and all(t > 0 for t in times.values())
        assert report["ideal_seconds"][in_flight] > 0
    assert len(report["cpu_us_per_document"]) == 6
    assert all(us > 0 for us in report["cpu_us_per_document"].values())
    assert "/ideal" in result.stdout and "/floor" in result.stdout

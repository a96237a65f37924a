"""`make bench` runs: one short round of every case (how fast is not checked here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(600)
def test_bench_smoke(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--smoke", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert len(report["cases"]) == 6
    for times in report["cases"].values():
        assert set(times) == {"ours", "peer", "floor"}
        assert all(t > 0 for t in times.values())
    assert len(report["import_seconds"]) == 4
    assert "ours/floor" in result.stdout


@pytest.mark.timeout(300)
def test_bench_embeddings_smoke(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_embeddings.py"),
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
    assert set(report["wall_seconds"]) == {
        f"{f} {k}" for f in ("langchain", "llama_index") for k in ("sync", "async")
    }
    assert all(t > 0 for times in report["wall_seconds"].values() for t in times.values())
    assert len(report["cpu"]) == 5 and all(us > 0 for us in report["cpu"].values())


@pytest.mark.timeout(300)
def test_bench_bulk_smoke(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_bulk.py"), "--smoke", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert len(report["cases"]) == 2
    assert all(case["rows_per_s"] > 0 for case in report["cases"].values())
    assert report["peer"]["rows_per_s"] > 0

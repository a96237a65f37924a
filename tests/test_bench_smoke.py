"""`make bench` runs: one short round of every case (how fast is not checked here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
FRAMEWORKS = ("langchain", "llama_index")


def smoke(script: str, tmp_path: Path, timeout: float = 300) -> tuple[Any, str]:
    """Run `benchmarks/<script> --smoke`; its JSON report, and what it printed.

    Fails the test, with the end of its stderr, when the script fails.
    """
    out = tmp_path / "results.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--smoke", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text()), result.stdout


@pytest.mark.timeout(600)
def test_bench_smoke(tmp_path: Path) -> None:
    report, stdout = smoke("bench.py", tmp_path, timeout=600)
    # Every case of both frameworks, at the smoke sizes (50 chunks a stream; async invoke at 1, 8
    # and 32 in flight). Each case has ours, the peer, the minimal adapter, raw httpx, the no-io
    # model and the summed floor (raw + no-io), each with the median and the interquartile range
    # of its client CPU and wall time per op; and the ratios, CPU and wall. Each is printed.
    cases = ("invoke", "stream 50 chunks", "async invoke, 32 in flight")
    assert set(report["cases"]) == {f"{fw}: {c}" for fw in FRAMEWORKS for c in cases}
    contenders = {"ours", "peer", "minimal", "raw", "no-io", "floor"}
    for case, times in report["cases"].items():
        names = contenders | ({"ours x1", "ours x8"} if case.endswith("in flight") else set())
        assert set(times) == names | {"per", "ops_a_round", "ratios"}, case
        for name in names:
            for kind in ("cpu", "wall"):
                median, (low, high) = times[name][kind]["median"], times[name][kind]["iqr"]
                assert 0 < low <= median <= high, (case, name, kind)
        floor = times["floor"]["cpu"]["median"]
        assert floor == pytest.approx(
            times["raw"]["cpu"]["median"] + times["no-io"]["cpu"]["median"]
        )
        assert set(times["ratios"]) == {"ours/floor", "ours/minimal", "minimal/floor", "ours/peer"}
        assert times["ratios"]["ours/floor"]["cpu"] == pytest.approx(
            times["ours"]["cpu"]["median"] / floor
        )
        assert all(r[k] > 0 for r in times["ratios"].values() for k in ("cpu", "wall")), case
        assert case in stdout
    # The header: machine, commit, date, command, and whether busy processes ran beside.
    for line in ("machine: ", "commit: ", "date: ", "command: ", "load: "):
        assert line in stdout
    assert report["busy"] == 0 and report["rounds"] == 2
    assert all(isinstance(goal["met"], bool) for goal in report["goals"])
    # Import cost of ours and of the peer, over each framework's own base.
    assert set(report["import_seconds"]) == {
        "langchain_tir over langchain_core BaseChatModel",
        "langchain_openai over langchain_core BaseChatModel",
        "llama_index_tir over llama_index.core",
        "llama_index.llms.openai_like over llama_index.core",
    }
    assert all(0 < t < 60 for t in report["import_seconds"].values())
    # Peak memory while streaming, at both smoke lengths.
    assert set(report["memory_mib"]) == {"500", "2000"}
    assert all(mib > 0 for peaks in report["memory_mib"].values() for mib in peaks.values())
    assert "ours/floor" in stdout and "ours/minimal" in stdout


@pytest.mark.timeout(300)
def test_bench_embeddings_smoke(tmp_path: Path) -> None:
    report, _ = smoke("bench_embeddings.py", tmp_path)
    assert set(report["wall_seconds"]) == {
        f"{f} {k}" for f in ("langchain", "llama_index") for k in ("sync", "async")
    }
    assert all(t > 0 for times in report["wall_seconds"].values() for t in times.values())
    # CPU per text: the floor (alone and in 8 threads) and ours in the core and both adapters.
    assert set(report["cpu"]) == {
        "floor",
        "floor, 8 threads",
        "core ours, 1 in flight",
        "langchain ours (8 in flight)",
        "llama_index ours (8 in flight)",
    }
    assert all(us > 0 for us in report["cpu"].values())


@pytest.mark.timeout(300)
def test_bench_bulk_smoke(tmp_path: Path) -> None:
    report, stdout = smoke("bench_bulk.py", tmp_path)
    # The smoke shapes: one actor with one request in flight, two actors with eight each; the
    # ideal rate is what that many in flight could do at the server's latency.
    shapes = {"1 actor(s) x 1 in flight": 1, "2 actor(s) x 8 in flight": 16}
    assert set(report["cases"]) == set(shapes)
    assert report["repeat"] == 1 and "long" not in report
    latency = report["latency_ms"] / 1000
    cases = {**report["cases"], "peer": report["peer"]}
    for name, case in cases.items():
        in_flight = shapes.get(name, 32)
        assert case["ideal"] == pytest.approx(in_flight / latency), name
        assert case["rows"] == (64 if name == "peer" else max(10, in_flight * 10)), name
        # Two rates, each with its share of the ideal: the whole job's, and the server's
        # (first request to last reply), never slower than the whole job's.
        (run,) = case["runs"]
        assert case["rows_per_s"] == run["rows_per_s"] > 0, name
        assert case["served_rows_per_s"] == run["served_rows_per_s"] >= run["rows_per_s"], name
        assert case["share"] == pytest.approx(case["rows_per_s"] / case["ideal"]), name
        assert case["served_share"] == pytest.approx(case["served_rows_per_s"] / case["ideal"])
        assert run["start_s"] >= 0 and run["end_s"] >= 0, name
    assert "served" in stdout and "ChatOpenAI.abatch(32)" in stdout


@pytest.mark.timeout(300)
def test_bench_rerank_smoke(tmp_path: Path) -> None:
    report, stdout = smoke("bench_rerank.py", tmp_path)
    assert set(report["wall_seconds"]) == {"8", "32"}
    for in_flight, times in report["wall_seconds"].items():
        assert len(times) == 7 and all(t > 0 for t in times.values())
        assert report["ideal_seconds"][in_flight] > 0
    assert len(report["cpu_us_per_document"]) == 6
    assert all(us > 0 for us in report["cpu_us_per_document"].values())
    assert "/ideal" in stdout and "/floor" in stdout


@pytest.mark.timeout(300)
def test_bench_engine_smoke(tmp_path: Path) -> None:
    cases = smoke("bench_engine.py", tmp_path)[0]["cases"]
    names = ["create", "stream 500 chunks"] + [f"acreate x{n}" for n in (1, 8, 32)]
    assert set(cases) == {f"{e}: {c}" for e in ("httpx", "auto") for c in names}
    assert all(case["cpu_ms_per_request"] > 0 for case in cases.values())

"""`tir-llama batch` end to end: a file in, a folder out, on the session's local Ray."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import TEST_KEY
from tests.support.emulator import Emulator, Reply
from tir_llama.cli import main

pytestmark = pytest.mark.usefixtures("ray_local")


@pytest.fixture
def csv_input(tmp_path: Path) -> Path:
    path = tmp_path / "tickets.csv"
    lines = ["id,prompt,team"] + [f"{i},Classify ticket {i},ops" for i in range(60)]
    path.write_text("\n".join(lines) + "\n")
    return path


def batch(emulator: Emulator, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(["--base-url", emulator.base_url, "batch", *argv], out)
    return code, out.getvalue()


def test_csv_to_parquet_with_usage(
    emulator: Emulator, csv_input: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIR_API_KEY", TEST_KEY)
    output = tmp_path / "answers"
    code, text = batch(
        emulator,
        str(csv_input),
        str(output),
        "--system",
        "Answer with one word.",
        "--max-tokens",
        "3",
        "--temperature",
        "0",
        "--rpm",
        "6000",
    )
    assert code == 0, text
    table = pq.read_table(output)
    assert sorted(table.column("id").to_pylist()) == list(range(60))
    assert set(table.column_names) >= {"id", "prompt", "team", "response", "error"}
    # 15 input tokens per row (3 words + 4, system: 4 words + 4), 3 output tokens per answer
    assert "this run: 60 rows, 0 with an error; 900 input + 180 output = 1080 tokens" in text
    assert f"{output} holds: 60 rows, 0 with an error; 900 input + 180 output" in text
    body = emulator.requests[0].json
    assert body["messages"][0] == {"role": "system", "content": "Answer with one word."}
    assert (body["max_tokens"], body["temperature"]) == (3, 0)
    assert TEST_KEY not in text


def test_resume_redoes_nothing(
    emulator: Emulator, csv_input: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIR_API_KEY", TEST_KEY)
    output = tmp_path / "answers"
    assert batch(emulator, str(csv_input), str(output), "--resume")[0] == 0
    sent = len(emulator.requests)
    assert sent == 60
    # More rows arrive; the job runs again over the same output.
    with csv_input.open("a") as f:
        f.writelines(f"{i},Classify ticket {i},ops\n" for i in range(60, 75))
    code, text = batch(emulator, str(csv_input), str(output), "--resume")
    assert code == 0, text
    assert len(emulator.requests) - sent == 15
    ids = pq.read_table(output, columns=["id"]).column(0).to_pylist()
    assert sorted(ids) == list(range(75))
    assert "this run: 15 rows, 0 with an error; 105 input + 135 output" in text
    assert f"{output} holds: 75 rows, 0 with an error; 525 input + 675 output" in text


def rows_files(folder: Path) -> list[Path]:
    """The folder's files of rows (hidden ones are the job's bookkeeping: its settings)."""
    return [path for path in folder.iterdir() if not path.name.startswith(".")]


def test_jsonl_in_and_out(
    emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIR_API_KEY", TEST_KEY)
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"q": f"question {i}"}) + "\n" for i in range(5)))
    output = tmp_path / "out.jsonl"
    code, text = batch(emulator, str(source), str(output), "--prompt-column", "q")
    assert code == 0, text
    records = [
        json.loads(line) for path in rows_files(output) for line in path.read_text().splitlines()
    ]
    assert sorted(r["q"] for r in records) == [f"question {i}" for i in range(5)]
    assert all(r["response"] and r["error"] is None for r in records)


def test_resume_needs_an_id_and_parquet(
    emulator: Emulator, tmp_path: Path, csv_input: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIR_API_KEY", TEST_KEY)
    code, text = batch(emulator, str(csv_input), str(tmp_path / "o.jsonl"), "--resume")
    assert code == 2 and "Parquet" in text
    code, text = batch(
        emulator, str(csv_input), str(tmp_path / "o"), "--resume", "--id-column", "nope"
    )
    assert code == 2 and "the input has no column 'nope' (it has 'id', 'prompt', 'team')" in text


def test_missing_key_is_named_before_any_work(csv_input: Path, tmp_path: Path) -> None:
    out = io.StringIO()
    assert main(["batch", str(csv_input), str(tmp_path / "o")], out) == 2
    assert "TIR_API_KEY" in out.getvalue() and "TIR_PROJECT_ID" in out.getvalue()


def test_a_wrong_prompt_column_is_named_before_any_request(
    emulator: Emulator, csv_input: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIR_API_KEY", TEST_KEY)
    code, text = batch(emulator, str(csv_input), str(tmp_path / "o"), "--prompt-column", "text")
    assert code == 2
    assert "no column 'text' (they have 'id', 'prompt', 'team')" in text
    assert "--prompt-column" in text and "Traceback" not in text
    assert emulator.requests == []


def test_parquet_in_and_out(
    emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIR_API_KEY", TEST_KEY)
    source = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": list(range(7)), "prompt": [f"q {i}" for i in range(7)]}), source)
    output = tmp_path / "answers"
    code, text = batch(emulator, str(source), str(output))
    assert code == 0, text
    table = pq.read_table(output).to_pylist()
    assert sorted(row["id"] for row in table) == list(range(7))
    assert all(row["response"] and row["error"] is None for row in table)
    asked = sorted(r.json["messages"][-1]["content"] for r in emulator.requests)
    assert asked == [f"q {i}" for i in range(7)]


def test_a_parquet_input_that_is_not_parquet_is_named(
    emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIR_API_KEY", TEST_KEY)
    source = tmp_path / "in.parquet"
    source.write_text("id,prompt\n1,a csv by another name\n")
    code, text = batch(emulator, str(source), str(tmp_path / "answers"))
    assert code == 2
    assert f"error: {source} cannot be read as Parquet" in text and "Traceback" not in text
    assert emulator.requests == []
    assert not (tmp_path / "answers").exists()


def three_rows(tmp_path: Path) -> Path:
    path = tmp_path / "three.csv"
    path.write_text("id,prompt\n" + "".join(f"{i},question {i}\n" for i in range(3)))
    return path


def test_request_flags_reach_every_request(
    emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIR_API_KEY", TEST_KEY)
    out = io.StringIO()
    argv = ["--base-url", emulator.base_url, "--model", "my_model", "batch"]
    argv += [str(three_rows(tmp_path)), str(tmp_path / "o"), "--top-p", "0.25", "--seed", "7"]
    assert main(argv, out) == 0, out.getvalue()
    bodies = [r.json for r in emulator.requests]
    assert len(bodies) == 3
    assert {(b["model"], b["top_p"], b["seed"]) for b in bodies} == {("my_model", 0.25, 7)}


@pytest.mark.timing
def test_concurrency_and_max_in_flight_bound_the_job(
    emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, csv_input: Path
) -> None:
    monkeypatch.setenv("TIR_API_KEY", TEST_KEY)
    emulator.chat_delay = 0.02
    # One actor with two in flight: a peak of 2, certain (the first two answer together) and
    # never more (the defaults, 2 actors x 16, would show far more).
    emulator.queue(*[Reply(hold_until_in_flight=2)] * 2)
    code, text = batch(
        emulator, str(csv_input), str(tmp_path / "o"), "--concurrency", "1", "--max-in-flight", "2"
    )
    assert code == 0, text
    assert len(emulator.requests) == 60
    assert emulator.max_in_flight == 2


# Far longer than --timeout: a reply this late is the timeout's to cut short.
SLOW_REPLY_SECONDS = 30.0


@pytest.mark.timing
def test_timeout_flag_reaches_the_requests(
    emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIR_API_KEY", TEST_KEY)
    emulator.queue(*[Reply(stall_after=0, stall_seconds=SLOW_REPLY_SECONDS)] * 9)
    out = io.StringIO()
    argv = ["--base-url", emulator.base_url, "--timeout", "0.5", "batch"]
    argv += [str(three_rows(tmp_path)), str(tmp_path / "o.jsonl")]
    assert main(argv, out) == 3, out.getvalue()  # done, some rows failed
    records = [
        json.loads(line)
        for path in rows_files(tmp_path / "o.jsonl")
        for line in path.read_text().splitlines()
    ]
    assert len(records) == 3
    assert all(r["error"].startswith("APITimeoutError") for r in records), records


def remote_url(emulator: Emulator) -> str:
    # The emulator by a name that is not loopback to the product (an IPv4-mapped IPv6 address,
    # see test_reliability) but still reaches it.
    return f"http://[::ffff:127.0.0.1]:{emulator.port}/v1"


def test_allow_insecure_http_flag(
    emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIR_API_KEY", TEST_KEY)
    argv = ["--base-url", remote_url(emulator), "batch", str(three_rows(tmp_path))]
    # Without the flag nothing goes out in clear text: the job is refused before any work
    # (test_a_refused_plain_http_url_is_named_before_any_work).
    assert main([*argv, str(tmp_path / "refused.jsonl")], io.StringIO()) == 2
    assert emulator.requests == []
    # With it, the requests go out over plain http.
    out = io.StringIO()
    assert main(["--allow-insecure-http", *argv, str(tmp_path / "o")], out) == 0, out.getvalue()
    assert len(emulator.requests) == 3
    assert "this run: 3 rows, 0 with an error" in out.getvalue()


def test_a_refused_plain_http_url_is_named_before_any_work(
    emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIR_API_KEY", TEST_KEY)
    out = io.StringIO()
    argv = ["--base-url", remote_url(emulator), "batch", str(three_rows(tmp_path))]
    code = main([*argv, str(tmp_path / "o")], out)
    assert (code, "clear text" in out.getvalue()) == (2, True)
    assert not (tmp_path / "o").exists()


def test_progress_in_rows_and_a_summary_with_the_time_taken(
    emulator: Emulator, csv_input: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIR_API_KEY", TEST_KEY)
    out, err = io.StringIO(), io.StringIO()
    argv = ["--base-url", emulator.base_url, "batch", str(csv_input), str(tmp_path / "o")]
    assert main([*argv, "--max-tokens", "3"], out, err) == 0, err.getvalue()
    said = err.getvalue().splitlines()
    assert said[0] == "60 rows to answer; starting Ray"
    # Piped (not a terminal): plain lines, the last one the whole job.
    assert said[-1].startswith("60/60 rows (100%), ") and "rows/s, 0 with an error" in said[-1]
    assert "\r" not in err.getvalue()
    summary = out.getvalue().splitlines()[0]
    assert summary.startswith("this run: 60 rows, 0 with an error; ")
    minutes, seconds = summary.rsplit("; ", 1)[1].split(":")
    assert minutes.isdigit() and len(seconds) == 2 and seconds.isdigit()


def test_ray_is_quiet_unless_verbose(emulator: Emulator, tmp_path: Path) -> None:
    # A command of its own, which starts its own Ray as a person's command does.
    source = tmp_path / "five.csv"
    source.write_text("id,prompt\n" + "".join(f"{i},hello {i}\n" for i in range(5)))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIR_", "E2E_TIR_", "RAY_"))}
    env.update(TIR_API_KEY=TEST_KEY, TIR_BASE_URL=emulator.base_url)
    result = subprocess.run(
        [sys.executable, "-m", "tir_llama", "batch", str(source), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    # Only the command's own lines: no Ray log lines, warnings or progress bars.
    lines = result.stderr.splitlines()
    assert lines[0] == "5 rows to answer; starting Ray", result.stderr
    assert all(line.startswith("5/5 rows") for line in lines[1:]), result.stderr
    assert result.stdout.splitlines()[0].startswith("this run: 5 rows, 0 with an error")

"""`tir-llama batch` end to end: a file in, a folder out, on the session's local Ray."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import TEST_KEY
from tests.support.emulator import Emulator
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
        json.loads(line) for path in output.iterdir() for line in path.read_text().splitlines()
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

"""`tir-llama batch --estimate` and the answers `batch` gives without starting Ray.

Counted at the emulator: an estimate sends no request. Ray is never started: the commands run
in processes of their own with `RAY_ADDRESS` pointing nowhere, where starting (or joining) Ray
would fail.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import TEST_KEY
from tests.support.emulator import Emulator
from tir_llama._batch_report import _Progress
from tir_llama.cli import main
from tir_transport import count_message_tokens, tokenizer_for

PROMPTS = ["Classify: my bill is wrong", "Classify: the app crashes on start", "  ", "Hi"]


@pytest.fixture
def tickets(tmp_path: Path) -> Path:
    path = tmp_path / "tickets.jsonl"
    path.write_text("".join(f'{{"id": {i}, "prompt": "{p}"}}\n' for i, p in enumerate(PROMPTS)))
    return path


def estimate(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    return main(["batch", *argv, "--estimate"], out, err), out.getvalue(), err.getvalue()


def test_estimate_counts_exact_tokens_and_sends_nothing(
    emulator: Emulator, tickets: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Everything a run would need is set: the estimate still sends nothing.
    monkeypatch.setenv("TIR_API_KEY", TEST_KEY)
    monkeypatch.setenv("TIR_BASE_URL", emulator.base_url)
    assert tokenizer_for("llama3_1_8b_instruct").exact  # the [tokens] extra, in the dev venv
    system = "Answer billing, bug or other."
    code, out, err = estimate(
        str(tickets),
        "--system",
        system,
        "--max-tokens",
        "5",
        "--input-price",
        "0.2",
        "--output-price",
        "0.6",
    )
    assert code == 0, err
    assert emulator.requests == []
    sent = [p for p in PROMPTS if p.strip()]
    tokens = sum(
        count_message_tokens(
            "llama3_1_8b_instruct",
            [{"role": "system", "content": system}, {"role": "user", "content": p}],
        )
        for p in sent
    )
    lines = dict(line.split(":", 1) for line in out.splitlines())
    assert lines["rows"].strip().startswith("4 (1 with an empty prompt: not sent")
    assert lines["input tokens"].split()[0] == f"{tokens:,}"
    assert "exact" in lines["input tokens"]
    assert lines["output tokens"].split()[:3] == ["at", "most", "15"]  # 3 rows x 5
    cost = tokens * 0.2 / 1e6 + 15 * 0.6 / 1e6
    assert lines["cost"].split()[:3] == ["at", "most", f"{cost:,.4f}"]
    assert "nothing was sent" in err
    assert TEST_KEY not in out + err


def test_estimate_checks_the_input(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "prompt": "fine"}\n{"id": 2, "prompt": \n')
    code, out, err = estimate(str(bad))
    assert code == 2 and out == ""
    assert "line 2" in err and "not JSON" in err


def test_estimate_with_resume_counts_only_what_is_left(tickets: Path, tmp_path: Path) -> None:
    answered = tmp_path / "answers"
    answered.mkdir()
    done = pa.table(
        {
            "id": [0, 1],
            "prompt": PROMPTS[:2],
            "response": ["billing", "bug"],
            "error": pa.array([None, None], pa.string()),
        }
    )
    pq.write_table(done, answered / "part-0.parquet")
    code, out, _ = estimate(str(tickets), str(answered), "--resume", "--max-tokens", "5")
    assert code == 0
    assert out.splitlines()[0].split()[:2] == ["rows:", "2"]  # ids 2 and 3


def test_estimate_checks_the_ids_as_a_run_does(tmp_path: Path) -> None:
    # An estimate that passes is one a run takes: it crashed on --resume without an id
    # column (a KeyError, or pyarrow's "No match for FieldRef"), and passed repeated ids.
    no_id = tmp_path / "no-id.csv"
    no_id.write_text("prompt\nhello\nbye\n")
    pq.write_table(pa.table({"prompt": ["hello", "bye"]}), tmp_path / "no-id.parquet")
    for source in (no_id, tmp_path / "no-id.parquet"):
        code, out, err = estimate(str(source), str(tmp_path / "out"), "--resume")
        assert code == 2 and out == "", err
        assert err.startswith("error: --resume needs an id per row"), err
    assert estimate(str(no_id))[0] == 0  # without --resume, ids are not needed
    repeated = tmp_path / "repeated.csv"
    repeated.write_text("id,prompt\n1,hello\n1,bye\n")
    code, _, err = estimate(str(repeated))
    assert code == 2 and "not unique" in err


@pytest.mark.parametrize(
    ("name", "content", "said"),
    [
        ("utf16.csv", "id,prompt\n1,héllo\n".encode("utf-16"), "iconv -f utf-16 -t utf-8"),
        ("latin1.csv", "id,prompt\n1,héllo\n".encode("latin-1"), "iconv -f latin1 -t utf-8"),
        (
            "huge.jsonl",
            b'{"id": 1, "n": 1, "prompt": "a"}\n{"id": 2, "n": 99999999999999999999999, '
            b'"prompt": "b"}\n',
            "line 2: the column 'n' holds a whole number too large to store",
        ),
        # Said for a file, not as Python (it suggested ds.rename_columns(...)).
        ("again.csv", b"id,prompt,error\n1,hi,x\n", "rename them first, in the input file"),
    ],
)
def test_input_refusals_say_what_to_do(
    tmp_path: Path, name: str, content: bytes, said: str
) -> None:
    # A UTF-16 file was told to convert from Latin-1 (garbage); a number over 64 bits was
    # "int on line 1 and int on line 2".
    source = tmp_path / name
    source.write_bytes(content)
    code, out, err = estimate(str(source))
    assert code == 2 and out == ""
    assert said in err, err


def test_json_lines_whose_first_line_lacks_the_prompt(tmp_path: Path) -> None:
    # The columns were read from the first line: "the rows have no column 'prompt'", though
    # the second has one. That first row carries an error, as a row with an empty prompt.
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": 1, "question": "a"}\n{"id": 2, "prompt": "b"}\n')
    code, out, err = estimate(str(source))
    assert code == 0, err
    assert (
        out.splitlines()[0]
        == "rows:          2 (1 with an empty prompt: not sent, they carry an error)"
    )
    source.write_text('{"id": 1, "question": "a"}\n{"id": 2, "q": "b"}\n')
    code, _, err = estimate(str(source))
    assert code == 2 and "no column 'prompt' (they have 'id', 'question', 'q')" in err


def test_a_quoted_value_of_many_short_lines_longer_than_a_block(tmp_path: Path) -> None:
    # The block was sized from the longest line; a quoted prompt of many short lines is
    # longer than it, and pyarrow refused the file ("straddling object straddles two block
    # boundaries (try to increase block size?)"), a size the user cannot set.
    source = tmp_path / "long.csv"
    prompt = "\n".join(["a short line"] * 250_000)  # 3.2 MB: over two 1 MiB blocks
    source.write_text(f'id,prompt\n1,"{prompt}"\n2,hello\n')
    code, out, err = estimate(str(source), "--max-tokens", "5")
    assert code == 0, err
    assert out.splitlines()[0].split()[:2] == ["rows:", "2"]


def test_estimate_with_resume_reads_ids_as_the_folder_holds_them(tmp_path: Path) -> None:
    # The CSV's ids read as numbers, the folder's as text (an id like "A10" once made them
    # so): a run aligns them; the estimate counted every row as left.
    source = tmp_path / "in.csv"
    source.write_text("id,prompt\n1,hello\n2,bye\n3,again\n")
    answered = tmp_path / "answers"
    answered.mkdir()
    done = pa.table(
        {"id": ["1", "2"], "response": ["hi", "bye"], "error": pa.array([None, None], pa.string())}
    )
    pq.write_table(done, answered / "part-0.parquet")
    code, out, err = estimate(str(source), str(answered), "--resume", "--max-tokens", "5")
    assert code == 0, err
    assert out.splitlines()[0].split()[:2] == ["rows:", "1"]


def test_estimate_without_max_tokens_is_bounded_by_the_window(tickets: Path) -> None:
    code, out, _ = estimate(str(tickets))
    assert code == 0
    assert "no --max-tokens" in out and "131,072-token window" in out


def run_alone(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TIR_", "E2E_TIR_"))}
    # Were Ray started (or joined), this address would fail the command.
    base.update(env, RAY_ADDRESS="127.0.0.1:9")
    return subprocess.run(
        [sys.executable, "-m", "tir_llama", *argv],
        capture_output=True,
        text=True,
        env=base,
        timeout=120,
        check=False,
    )


def test_estimate_starts_no_ray(tickets: Path) -> None:
    result = run_alone(["batch", str(tickets), "--estimate"], {})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("rows:          4")


def test_resume_with_nothing_left_starts_no_ray(
    emulator: Emulator, tickets: Path, tmp_path: Path
) -> None:
    answered = tmp_path / "answers"
    answered.mkdir()
    every = pa.table(
        {
            "id": list(range(len(PROMPTS))),
            "prompt": PROMPTS,
            "response": ["a"] * len(PROMPTS),
            "input_tokens": [3] * len(PROMPTS),
            "output_tokens": [1] * len(PROMPTS),
            "error": pa.array([None] * len(PROMPTS), pa.string()),
        }
    )
    pq.write_table(every, answered / "part-0.parquet")
    result = run_alone(
        ["batch", str(tickets), str(answered), "--resume"],
        {"TIR_API_KEY": TEST_KEY, "TIR_BASE_URL": emulator.base_url},
    )
    assert result.returncode == 0, result.stderr
    assert (
        result.stdout.splitlines()[0] == f"nothing to do: every row of {tickets} is in {answered}"
    )
    assert f"{answered} holds: 4 rows, 0 with an error" in result.stdout
    assert emulator.requests == []


class Screen(io.StringIO):
    """stderr as a terminal shows it."""

    def isatty(self) -> bool:
        return True


def test_progress_redraws_one_line_on_a_terminal() -> None:
    screen = Screen()
    progress = _Progress(200, screen)
    progress(64, 1, 640, 128)
    progress(64, 0, 640, 128)
    progress.done()
    text = screen.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n")
    last = text.split("\r")[-1]
    assert last.startswith("128/200 rows (64%), ") and "rows/s" in last
    assert "1 with an error, 1,536 tokens" in last and " left" in last


def test_progress_when_piped_is_plain_lines_now_and_then() -> None:
    log = io.StringIO()
    progress = _Progress(192, log)
    progress(64, 0, 10, 10)  # the first batch is said
    progress(64, 0, 10, 10)  # within EVERY_SECONDS of it: not
    progress(64, 0, 10, 10)  # the last: said
    progress.done()
    lines = log.getvalue().splitlines()
    assert [line.split(" rows")[0] for line in lines] == ["64/192", "192/192"]
    assert "\r" not in log.getvalue() and "\x1b" not in log.getvalue()

"""The bulk path against hostile input, through the API and the CLI: what the user sees, and
proof (every file's hash before and after) that nothing they had is lost or rewritten."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray.data
import ray.exceptions

import ray_tir
from tests.conftest import ROOT, TEST_KEY
from tests.support.emulator import Emulator, Reply
from tir_llama.cli import main

pytestmark = pytest.mark.usefixtures("ray_local")


def hashes(folder: Path) -> dict[str, str]:
    """Every file under `folder` (hidden ones too) and its content's hash."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def options(emulator: Emulator) -> dict[str, Any]:
    return {"api_key": TEST_KEY, "base_url": emulator.base_url, "max_tokens": 2}


def rows(count: int) -> list[dict[str, Any]]:
    return [{"id": i, "prompt": f"question {i}"} for i in range(count)]


def batch(emulator: Emulator, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(["--base-url", emulator.base_url, "batch", *argv], out)
    return code, out.getvalue()


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIR_API_KEY", TEST_KEY)


@pytest.fixture
def answered(emulator: Emulator, tmp_path: Path) -> Path:
    """A folder of 20 paid answers (ids 0-19, column `id`), as a first run left it."""
    output = tmp_path / "answers"
    ds = ray.data.from_items(rows(20), override_num_blocks=2)
    ray_tir.write_output(ray_tir.chat(ds, **options(emulator)), str(output))
    emulator.reset()
    return output


@pytest.fixture
def tickets(tmp_path: Path) -> Path:
    path = tmp_path / "in.csv"
    path.write_text("id,prompt\n" + "".join(f"{i},question {i}\n" for i in range(30)))
    return path


# -- the folder is read, never changed --------------------------------------------------------


def test_wrong_id_column_stops_before_any_request_and_deletes_nothing(
    emulator: Emulator, answered: Path, tickets: Path
) -> None:
    before = hashes(answered)
    ds = ray.data.from_items([{"ticket": i, "prompt": "q"} for i in range(30)])
    with pytest.raises(ray_tir.OutputFolderError) as caught:
        ray_tir.pending(ds, str(answered), id_column="ticket")
    message = str(caught.value)
    assert "has no column 'ticket'" in message and "'id', 'prompt', 'response'" in message
    assert str(answered) in message  # the file is named
    code, text = batch(emulator, str(tickets), str(answered), "--resume", "--id-column", "nr")
    assert code == 2 and text.count("\n") == 1 and "has no column 'nr'" in text
    assert hashes(answered) == before and emulator.requests == []


def test_a_folder_of_someone_elses_files_is_never_touched(
    emulator: Emulator, tmp_path: Path, tickets: Path
) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    pq.write_table(pa.table({"id": [1, 2], "salary": [10, 20]}), theirs / "payroll.parquet")
    (theirs / "notes.txt").write_text("mine")
    before = hashes(theirs)
    for flag in ([], ["--resume"], ["--overwrite"]):
        code, text = batch(emulator, str(tickets), str(theirs), *flag)
        assert code == 2, text
        assert text.count("\n") == 1 and "Traceback" not in text
    code, text = batch(emulator, str(tickets), str(theirs))
    # Said as what it is: resuming or overwriting them would be refused too (it offered both).
    assert "not the output of a tir-llama job (notes.txt" not in text  # not a row file
    assert "not the output of a tir-llama job (payroll.parquet)" in text
    assert "--resume" not in text and "--overwrite" not in text
    ds = ray.data.from_items(rows(3))
    for mode in ("new", "overwrite"):
        with pytest.raises(ray_tir.OutputFolderError):
            ray_tir.write_output(ray_tir.chat(ds, **options(emulator)), str(theirs), mode=mode)
    with pytest.raises(ray_tir.OutputFolderError, match="not the output of a tir-llama job"):
        ray_tir.pending(ds, str(theirs), id_column="id")
    assert hashes(theirs) == before and emulator.requests == []


def test_a_half_written_file_stops_the_job_and_is_named(
    emulator: Emulator, answered: Path, tickets: Path
) -> None:
    partial = answered / "zz-killed.parquet"
    partial.write_bytes(b"PAR1 the writer was killed here")
    before = hashes(answered)
    with pytest.raises(ray_tir.OutputFolderError, match=f"rm '{partial}'"):
        ray_tir.pending(ray.data.from_items(rows(30)), str(answered), id_column="id")
    code, text = batch(emulator, str(tickets), str(answered), "--resume")
    assert code == 2 and "half-written" in text and str(partial) in text
    assert hashes(answered) == before and emulator.requests == []
    # Removed as the message says, the job resumes (with the folder's settings) and answers
    # only what is missing.
    partial.unlink()
    code, text = batch(emulator, str(tickets), str(answered), "--resume", "--max-tokens", "2")
    assert code == 0, text
    assert len(emulator.requests) == 10
    after = hashes(answered)
    assert all(after[name] == digest for name, digest in before.items() if name != partial.name)


def test_duplicate_or_missing_ids_are_refused_when_resuming(
    emulator: Emulator, answered: Path, tmp_path: Path
) -> None:
    before = hashes(answered)
    doubled = tmp_path / "doubled.csv"
    doubled.write_text("id,prompt\n1,a\n2,b\n2,c\n3,d\n")
    code, text = batch(emulator, str(doubled), str(answered), "--resume")
    # Refused before Ray starts (every run checks its ids, resumed or not).
    assert code == 2 and "not unique (2 repeat)" in text
    with pytest.raises(ValueError, match="no 'id'"):
        ray_tir.pending(
            ray.data.from_items([{"id": None, "prompt": "a"}, {"id": 1, "prompt": "b"}]),
            str(answered),
            id_column="id",
        )
    # Ids that can never match (read as text now, numbers before) would pay for everything again.
    with pytest.raises(ValueError, match="ids are int and the input's str"):
        ray_tir.pending(
            ray.data.from_items([{"id": "21", "prompt": "a"}]), str(answered), id_column="id"
        )
    assert hashes(answered) == before and emulator.requests == []


# -- one job, one copy --------------------------------------------------------------------------


def test_running_the_same_job_twice_neither_doubles_nor_pays(
    emulator: Emulator, tickets: Path, tmp_path: Path
) -> None:
    output = tmp_path / "out"
    assert batch(emulator, str(tickets), str(output))[0] == 0
    assert len(emulator.requests) == 30
    before = hashes(output)
    code, text = batch(emulator, str(tickets), str(output))
    assert code == 2 and "already holds rows" in text
    assert "--resume" in text and "--overwrite" in text
    assert len(emulator.requests) == 30 and hashes(output) == before
    # Resumed: nothing is missing, nothing is sent, nothing is rewritten.
    code, text = batch(emulator, str(tickets), str(output), "--resume")
    assert code == 0, text
    assert "nothing to do" in text and "holds: 30 rows" in text
    assert len(emulator.requests) == 30 and hashes(output) == before


def test_overwrite_replaces_only_once_the_new_output_is_complete(
    emulator: Emulator, answered: Path
) -> None:
    before = hashes(answered)
    (answered / "README.txt").write_text("kept")
    # A run that fails part way (its rows lack the prompt column, found only once read):
    broken = ray.data.from_items([{"id": 1, "question": "q"}]).map(lambda r: r)
    with pytest.raises(ray.exceptions.RayTaskError, match="no column 'prompt'"):
        ray_tir.write_output(
            ray_tir.chat(broken, **options(emulator)), str(answered), mode="overwrite"
        )
    assert hashes(answered) == {**before, "README.txt": hashes(answered)["README.txt"]}
    # A run that completes replaces the old output, and only it.
    ds = ray.data.from_items(rows(7))
    written = ray_tir.write_output(
        ray_tir.chat(ds, **options(emulator)), str(answered), mode="overwrite"
    )
    assert ray_tir.usage(written)["rows"] == ray_tir.usage(str(answered))["rows"] == 7
    assert (answered / "README.txt").read_text() == "kept"
    assert not set(before) & set(hashes(answered))
    assert not list(answered.glob(".tir-llama-staging*"))


def test_an_interrupted_job_resumed_twice(
    emulator: Emulator, tickets: Path, tmp_path: Path
) -> None:
    output = tmp_path / "out"
    # The first run was killed after writing 12 rows, and left one file half-written.
    first = ray.data.from_items(rows(12))
    ray_tir.write_output(ray_tir.chat(first, **options(emulator)), str(output))
    (output / "half.parquet").write_bytes(b"PAR1")
    kept = hashes(output)
    code, text = batch(emulator, str(tickets), str(output), "--resume")
    assert code == 2 and "half.parquet" in text
    (output / "half.parquet").unlink()
    del kept["half.parquet"]
    emulator.reset()
    code, text = batch(emulator, str(tickets), str(output), "--resume", "--max-tokens", "2")
    assert code == 0 and "this run: 18 rows" in text and "holds: 30 rows" in text
    assert len(emulator.requests) == 18
    after_first = hashes(output)
    assert all(after_first[name] == digest for name, digest in kept.items())
    code, text = batch(emulator, str(tickets), str(output), "--resume", "--max-tokens", "2")
    assert code == 0 and "nothing to do" in text and len(emulator.requests) == 18
    assert hashes(output) == after_first
    ids = pq.read_table(output, columns=["id"]).column(0).to_pylist()
    assert sorted(ids) == list(range(30))


# -- rows that are odd, files that are odd ------------------------------------------------------


def test_empty_and_null_prompts_carry_their_error(emulator: Emulator, tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    records = [
        {"id": 0, "prompt": "fine"},
        {"id": 1, "prompt": ""},
        {"id": 2, "prompt": None},
        {"id": 3, "prompt": "   "},
        {"id": 4, "prompt": "also fine"},
    ]
    source.write_text("".join(json.dumps(r) + "\n" for r in records))
    output = tmp_path / "out"
    code, text = batch(emulator, str(source), str(output))
    assert code == 3, text  # done, with rows that failed
    by_id = {r["id"]: r for r in pq.read_table(output).to_pylist()}
    assert [i for i, r in sorted(by_id.items()) if r["error"]] == [1, 2, 3]
    assert "empty or not a string" in by_id[2]["error"]
    assert len(emulator.requests) == 2 and "this run: 5 rows, 3 with an error" in text


def test_a_row_of_several_megabytes_is_answered(emulator: Emulator, tmp_path: Path) -> None:
    source = tmp_path / "big.csv"
    huge = "word " * 700_000  # 3.5 MB in one field
    source.write_text(f"id,prompt\n0,short\n1,{huge}\n2,short too\n")
    output = tmp_path / "out"
    code, text = batch(emulator, str(source), str(output))
    assert code == 0, text
    by_id = {r["id"]: r for r in pq.read_table(output).to_pylist()}
    assert sorted(by_id) == [0, 1, 2] and not any(r["error"] for r in by_id.values())
    sizes = sorted(len(r.body) for r in emulator.requests)
    assert sizes[-1] > 3_500_000


def test_numbers_in_the_prompt_column_are_prompts(emulator: Emulator, tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("id,prompt\n1,42\n2,7\n")
    code, text = batch(emulator, str(source), str(tmp_path / "out"))
    assert code == 0 and "this run: 2 rows, 0 with an error" in text
    assert {r.json["messages"][-1]["content"] for r in emulator.requests} == {"42", "7"}


def test_an_output_folder_inside_the_input_folder_is_refused(
    emulator: Emulator, tmp_path: Path
) -> None:
    source = tmp_path / "tables"
    source.mkdir()
    pq.write_table(pa.table({"id": [1], "prompt": ["q"]}), source / "part.parquet")
    before = hashes(source)
    code, text = batch(emulator, str(source), str(source / "answers"))
    assert code == 2 and "inside the input folder" in text
    assert hashes(source) == before and emulator.requests == []


# -- the CLI checks everything before Ray starts ------------------------------------------------


def batch_before_ray(
    source: Path, output: Path, settings: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """`tir-llama batch` in a process of its own, with only `settings` for TIR."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIR_", "E2E_"))}
    # Were Ray started (or joined), this address would fail: the checks must come first.
    env.update(settings, RAY_ADDRESS="127.0.0.1:9")
    return subprocess.run(
        [sys.executable, "-m", "tir_llama", "batch", str(source), str(output)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )


Case = tuple[Callable[[Path], tuple[Path, Path]], str]
BAD_INPUTS: dict[str, Case] = {
    "missing input": (lambda d: (d / "nope.csv", d / "out"), "does not exist"),
    "output is a file": (lambda d: (d / "in.csv", d / "in.csv"), "is a file, not a folder"),
    "unknown format": (lambda d: (d / "in.xlsx", d / "out"), "cannot tell the format"),
    "not UTF-8": (lambda d: (d / "latin.csv", d / "out"), "is not UTF-8 text (byte 0xe9"),
    "wrong prompt column": (lambda d: (d / "nop.csv", d / "out"), "no column 'prompt'"),
    "empty CSV": (lambda d: (d / "empty.csv", d / "out"), "is empty"),
    "output not creatable": (lambda d: (d / "in.csv", d / "in.csv" / "out"), "not writable"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_cli_input_is_one_line_before_ray_starts(case: str, tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text("id,prompt\n1,hi\n")
    (tmp_path / "in.xlsx").write_bytes(b"PK\x03\x04")
    (tmp_path / "latin.csv").write_bytes("id,prompt\n1,caf\xe9\n".encode("latin-1"))
    (tmp_path / "nop.csv").write_text("id,question\n1,hi\n")
    (tmp_path / "empty.csv").write_text("")
    make, expected = BAD_INPUTS[case]
    source, output = make(tmp_path)
    settings = {"TIR_API_KEY": TEST_KEY, "TIR_BASE_URL": "http://127.0.0.1:9/v1"}
    result = batch_before_ray(source, output, settings)
    assert result.returncode == 2, result.stdout + result.stderr
    # The error alone, on stderr (stdout stays empty: nothing was done).
    assert result.stdout == "", result.stdout
    assert result.stderr.count("\n") == 1 and expected in result.stderr, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert list(tmp_path.glob("out*")) == []


def test_missing_settings_are_named_before_ray_starts(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text("id,prompt\n1,hi\n")
    result = batch_before_ray(tmp_path / "in.csv", tmp_path / "out", {})
    assert result.returncode == 2 and "TIR_API_KEY" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_an_unexpected_failure_is_one_line_with_a_hint(
    emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": [1], "prompt": ["q"]}), source)
    from tir_llama import _batch as _cli

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the object store is full\nmore detail")

    monkeypatch.setattr(_cli, "chat", broken)
    code, text = batch(emulator, str(source), str(tmp_path / "out"))
    # One line of error (after the line that says Ray is starting).
    assert code == 1 and [line for line in text.splitlines() if line.startswith("error:")] == [
        line for line in text.splitlines() if "object store" in line
    ]
    assert "RuntimeError: the object store is full more detail" in text and "--debug" in text
    with pytest.raises(RuntimeError):
        main(
            [
                "--debug",
                "--base-url",
                emulator.base_url,
                "batch",
                str(source),
                str(tmp_path / "out"),
            ],
            io.StringIO(),
        )
    with pytest.raises(RuntimeError):  # --debug after the subcommand too, as the hint says
        batch(emulator, str(source), str(tmp_path / "out"), "--debug")


# -- embeddings: per-text fallback only for per-text errors -------------------------------------


def embed_64(emulator: Emulator, items: list[dict[str, Any]] | None = None, **extra: Any) -> Any:
    """64 texts in 4 batches of 16, one actor: the requests are easy to count."""
    items = items or [{"id": i, "text": f"text {i}"} for i in range(64)]
    ds = ray.data.from_items(items, override_num_blocks=1)
    options = {"api_key": TEST_KEY, "base_url": emulator.base_url, "model": "e5", **extra}
    return ray_tir.embed(ds, batch_size=16, concurrency=1, **options).take_all()


def test_a_bad_key_costs_one_request_per_batch(emulator: Emulator) -> None:
    emulator.require_key = "the-right-key"
    result = embed_64(emulator)
    assert len(emulator.requests) == 4  # was 68: every text sent again on its own
    assert all(r["error"].startswith("AuthenticationError") for r in result)


def test_a_429_storm_is_not_multiplied(emulator: Emulator) -> None:
    emulator.queue_embeddings(*[Reply(status=429, headers={"retry-after": "0"})] * 100)
    result = embed_64(emulator, max_retries=1)
    assert len(emulator.requests) == 4 * 2  # each batch once and its one retry, no more
    assert all(r["error"].startswith("RateLimitError") for r in result)


def test_a_too_long_text_is_found_within_the_bound(emulator: Emulator) -> None:
    emulator.embed_max_tokens = 8
    items = [{"id": i, "text": f"text {i}"} for i in range(64)]
    items[37]["text"] = "far too many words for this tiny model"
    by_id = {r["id"]: r for r in embed_64(emulator, items)}
    assert by_id[37]["error"].startswith("ContextLengthExceededError")
    assert all(r["embedding"] is not None for i, r in by_id.items() if i != 37)
    # 4 batches; the one holding the long text is halved down to it: 1 + 2 * log2(16) = 9.
    assert len(emulator.requests) <= 3 + 9


def test_overwrite_with_no_rows_replaces_nothing(emulator: Emulator, answered: Path) -> None:
    before = hashes(answered)
    header_only = answered.parent / "header.csv"
    header_only.write_text("id,prompt\n")
    code, text = batch(emulator, str(header_only), str(answered), "--overwrite")
    assert code == 2 and "holds no rows" in text and "replaced" in text
    empty = ray.data.from_items(rows(3)).filter(lambda r: False)
    with pytest.raises(ray_tir.OutputFolderError, match="has no rows"):
        ray_tir.write_output(ray_tir.chat(empty, **options(emulator)), answered, mode="overwrite")
    assert hashes(answered) == before and emulator.requests == []


def test_a_csv_with_a_byte_order_mark_is_read(emulator: Emulator, tmp_path: Path) -> None:
    source = tmp_path / "excel.csv"
    source.write_bytes("id,prompt\n1,hello\n".encode("utf-8-sig"))  # Excel's "CSV UTF-8"
    code, text = batch(emulator, str(source), str(tmp_path / "out"))
    assert code == 0 and "this run: 1 rows, 0 with an error" in text, text


def test_a_remote_output_is_refused_before_any_request(
    emulator: Emulator, tickets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, text = batch(emulator, str(tickets), "s3://bucket/answers")
    assert code == 2 and "not a local folder" in text
    with pytest.raises(ray_tir.OutputFolderError, match="local folder"):
        ray_tir.write_output(
            ray_tir.chat(ray.data.from_items(rows(1)), **options(emulator)), "s3://bucket/answers"
        )
    assert emulator.requests == [] and not (tmp_path / "s3:").exists()


def test_json_lines_output_is_overwritten_whole(emulator: Emulator, tmp_path: Path) -> None:
    output = tmp_path / "out.jsonl"
    first = ray_tir.write_output(
        ray_tir.chat(ray.data.from_items(rows(4)), **options(emulator)), output
    )
    with pytest.raises(ray_tir.OutputFolderError, match="already holds rows"):
        ray_tir.write_output(
            ray_tir.chat(ray.data.from_items(rows(2)), **options(emulator)), output
        )
    second = ray_tir.write_output(
        ray_tir.chat(ray.data.from_items(rows(2)), **options(emulator)), output, mode="overwrite"
    )
    assert not set(first) & set(second) and all(not Path(p).exists() for p in first)
    assert ray_tir.usage(output)["rows"] == 2

"""Bulk jobs as a hostile user runs them: failed rows, exit statuses, one job per folder,
settings, ids, unwritable folders, atomic overwrite, kills. Requests are counted at the
emulator and the folders read back with pyarrow."""

from __future__ import annotations

import contextlib
import io
import os
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray.data

import ray_tir
from ray_tir._workers import BATCHES_AT_ONCE
from tests.conftest import ROOT, TEST_KEY
from tests.ray_tir.test_hostile import batch, hashes, options, rows
from tests.support.emulator import WAIT_SECONDS, Emulator, Reply
from tir_llama.cli import main

pytestmark = pytest.mark.usefixtures("ray_local")


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIR_API_KEY", TEST_KEY)


def csv_rows(path: Path, count: int, long: frozenset[int] = frozenset()) -> Path:
    lines = [f"{i},{'word ' * 40 if i in long else f'question {i}'}\n" for i in range(count)]
    path.write_text("id,prompt\n" + "".join(lines))
    return path


def folder_rows(folder: Path) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*.parquet")):
        found += pq.read_table(path).to_pylist()
    return found


def one_line(text: str) -> bool:
    """The failure is one line (`error: ...`), whatever progress lines came before it."""
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    return len(errors) == 1 and "Traceback" not in text and "\x1b" not in text


# -- 1. failed rows are sent again by --resume --------------------------------------------------


def test_resume_sends_failed_rows_again_and_keeps_the_answered(
    emulator: Emulator, tmp_path: Path
) -> None:
    source = csv_rows(tmp_path / "in.csv", 40, long=frozenset({5, 17}))
    output = tmp_path / "out"
    emulator.max_context = 30  # rows 5 and 17 are too long: their own error
    code, text = batch(emulator, str(source), str(output), "--max-tokens", "2")
    assert code == 3 and "40 rows, 2 with an error" in text, text
    assert "2 rows carry an error: --resume sends them again" in text
    assert len(emulator.requests) == 40
    answered = {r["id"]: r["response"] for r in folder_rows(output) if r["error"] is None}
    # Kept as they are when asked: nothing sent, nothing changed, still exit 3.
    before = hashes(output)
    code, text = batch(
        emulator, str(source), str(output), "--resume", "--keep-failed", "--max-tokens", "2"
    )
    assert code == 3 and "nothing to do" in text and hashes(output) == before
    assert len(emulator.requests) == 40
    # Sent again by default: only those two, each id once at the end.
    emulator.max_context = None
    code, text = batch(emulator, str(source), str(output), "--resume", "--max-tokens", "2")
    assert code == 0 and "this run: 2 rows, 0 with an error" in text, text
    assert len(emulator.requests) == 42
    final = folder_rows(output)
    assert sorted(r["id"] for r in final) == list(range(40))
    assert all(r["error"] is None for r in final)
    assert {r["id"]: r["response"] for r in final if r["id"] not in (5, 17)} == answered


def test_failed_rows_without_ids_are_not_promised_to_resume(
    emulator: Emulator, tmp_path: Path
) -> None:
    # "--resume sends them again" led to "--resume needs an id per row" for an input without
    # one: the hint says what works instead.
    source = tmp_path / "in.csv"
    source.write_text("prompt\nhello\n" + "word " * 40 + "\n")
    emulator.max_context = 30  # the second row is too long
    code, text = batch(emulator, str(source), str(tmp_path / "out"), "--max-tokens", "2")
    assert code == 3, text
    assert "1 rows carry an error: the input has no id column ('id')" in text
    assert "--resume sends them again" not in text


# -- 2. exit statuses; errors every row will hit stop the job -----------------------------------


def live_chat_actors() -> list[str]:
    """The chat worker actors alive on the shared Ray (Ray's GCS view: no dashboard runs here)."""
    from ray._private import state

    return [
        a["ActorID"]
        for a in state.actors().values()
        if a["ActorClassName"] == "_ChatWorker" and a["State"] != "DEAD"
    ]


@pytest.mark.parametrize("status", [401, 403, 404])
def test_an_error_every_row_hits_stops_the_job_early(
    emulator: Emulator, tmp_path: Path, status: int
) -> None:
    source = csv_rows(tmp_path / "in.csv", 200)
    output = tmp_path / "out"
    emulator.queue(*[Reply(status=status, message="refused")] * 200)
    code, text = batch(emulator, str(source), str(output), "--max-tokens", "2")
    assert code == 4 and one_line(text), text
    hint = {401: "TIR_API_KEY", 403: "TIR_PROJECT_ID", 404: "--model"}[status]
    assert hint in text and "--resume" in text and TEST_KEY not in text
    # The first ones, not the 200: at most what the actors had in flight (2 x 16).
    assert len(emulator.requests) <= 2 * 16
    stopped_after = len(emulator.requests)
    assert (
        not [r for r in folder_rows(output) if r["error"]]
        if any(output.glob("*.parquet"))
        else True
    )
    # The stopped job has ended its actors before returning: nothing more is sent (on this
    # shared Ray they used to outlive the command and send what they held, a dozen requests
    # that a resume started at once was counted, and would have paid, for).
    assert live_chat_actors() == []
    time.sleep(1.0)
    assert len(emulator.requests) == stopped_after
    # Fixed, the job resumes and pays for every row once.
    emulator.reset()
    code, text = batch(emulator, str(source), str(output), "--resume", "--max-tokens", "2")
    assert code == 0, text
    assert stopped_after > 0 and len(emulator.requests) == 200
    assert sorted(r["id"] for r in folder_rows(output)) == list(range(200))


# -- 3. one job per folder ----------------------------------------------------------------------


def release_holds(emulator: Emulator) -> None:
    """One request of our own: two in flight, the held reply is answered."""
    httpx.post(
        f"{emulator.base_url}/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "release"}]},
        headers={"authorization": f"Bearer {TEST_KEY}"},
        timeout=WAIT_SECONDS,
    )


@pytest.mark.parametrize("flags", [[], ["--resume"]], ids=["new", "resume"])
def test_a_second_job_on_a_folder_is_refused_before_any_request(
    emulator: Emulator, tmp_path: Path, flags: list[str]
) -> None:
    source = csv_rows(tmp_path / "in.csv", 30)
    other = tmp_path / "other.csv"
    other.write_text("id,prompt\n" + "".join(f"{i},other {i}\n" for i in range(30)))
    output = tmp_path / "out"
    # The first job's first request is held until a second request is in flight with it.
    emulator.queue(Reply(hold_until_in_flight=2))
    first: list[tuple[int, str]] = []
    argv = ["--concurrency", "1", "--max-in-flight", "1", "--max-tokens", "2", *flags]
    job = threading.Thread(
        target=lambda: first.append(batch(emulator, str(source), str(output), *argv))
    )
    job.start()
    try:
        emulator.wait_until(lambda: len(emulator.requests) == 1, "the first job's request")
        code, text = batch(emulator, str(other), str(output), *argv)
        assert code == 2 and one_line(text) and "another job is writing to" in text, text
        assert len(emulator.requests) == 1
    finally:
        release_holds(emulator)
        job.join(WAIT_SECONDS)
    assert first and first[0][0] == 0, first
    prompts = [r.json["messages"][-1]["content"] for r in emulator.requests]
    assert not [p for p in prompts if p.startswith("other")]
    assert sorted(r["id"] for r in folder_rows(output)) == list(range(30))


HOLD_LOCK = """
import os, sys, time
from ray_tir._lock import folder_lock
with folder_lock(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.read()
"""


def test_a_killed_job_does_not_leave_the_folder_locked(emulator: Emulator, tmp_path: Path) -> None:
    output = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(output)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        source = csv_rows(tmp_path / "in.csv", 3)
        code, text = batch(emulator, str(source), str(output))
        assert code == 2 and f"pid {holder.pid}" in text and emulator.requests == []
    finally:
        holder.kill()
        holder.wait()
    code, text = batch(emulator, str(source), str(output))
    assert code == 0, text
    assert len(emulator.requests) == 3 and not (output / ".tir-llama-lock").exists()


# -- 4. settings recorded; resuming with others refused -----------------------------------------


@pytest.mark.parametrize(
    ("flag", "named"),
    [
        (["--model", "another_model"], "model"),
        (["--system", "Be terse."], "system"),
        (["--max-tokens", "3"], "max_tokens"),
        (["--temperature", "0.5"], "temperature"),
        (["--top-p", "0.5"], "top_p"),
    ],
)
def test_resuming_with_other_settings_is_refused_naming_them(
    emulator: Emulator, tmp_path: Path, flag: list[str], named: str
) -> None:
    source = csv_rows(tmp_path / "in.csv", 10)
    output = tmp_path / "out"
    first = ["--model", "first_model", "batch", str(source), str(output), "--max-tokens", "2"]
    out = io.StringIO()
    assert main(["--base-url", emulator.base_url, *first], out) == 0, out.getvalue()
    with source.open("a") as f:
        f.write("10,question 10\n")
    before, sent = hashes(output), len(emulator.requests)
    argv = ["--model", "first_model", "batch", str(source), str(output), "--resume"]
    argv += ["--max-tokens", "2"]
    changed = [*argv, *flag] if flag[0] != "--model" else [*flag, *argv[2:]]
    out = io.StringIO()
    code = main(["--base-url", emulator.base_url, *changed], out)
    text = out.getvalue()
    assert code == 2 and one_line(text) and "other settings" in text and named in text, text
    assert len(emulator.requests) == sent and hashes(output) == before
    # The same settings resume; the folder's usage is one model's.
    out = io.StringIO()
    assert main(["--base-url", emulator.base_url, *argv], out) == 0, out.getvalue()
    totals = ray_tir.usage(output)
    assert set(totals["per_model"]) == {"first_model"} and totals["rows"] == 11
    assert totals["per_model"]["first_model"] == totals["usage"]


def test_the_api_refuses_a_resume_with_other_settings(emulator: Emulator, tmp_path: Path) -> None:
    output = tmp_path / "out"
    ds = ray.data.from_items(rows(10))
    ray_tir.write_output(ray_tir.chat(ds.limit(4), **options(emulator)), output)
    todo = ray_tir.pending(ds, str(output), id_column="id")
    other = {**options(emulator), "max_tokens": 5}
    with pytest.raises(ray_tir.OutputFolderError, match="max_tokens"):
        ray_tir.write_output(ray_tir.chat(todo, **other), output, mode="resume")
    assert len(emulator.requests) == 4


# -- 5. ids as the input holds them -------------------------------------------------------------


def test_ids_are_written_exactly_as_the_input_holds_them(
    emulator: Emulator, tmp_path: Path
) -> None:
    texts = tmp_path / "text.csv"
    texts.write_text("id,prompt\n007,a\n7,b\n0042,c\n")
    assert batch(emulator, str(texts), str(tmp_path / "a"))[0] == 0
    table = pq.read_table(tmp_path / "a")
    assert table.schema.field("id").type == pa.string()
    assert sorted(table.column("id").to_pylist()) == ["0042", "007", "7"]
    numbers = tmp_path / "numbers.csv"
    numbers.write_text("id,prompt\n1,a\n20,b\n")
    assert batch(emulator, str(numbers), str(tmp_path / "b"))[0] == 0
    assert pq.read_table(tmp_path / "b").schema.field("id").type == pa.int64()
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text('{"id": "007", "prompt": "a"}\n{"id": "7", "prompt": "b"}\n')
    assert batch(emulator, str(jsonl), str(tmp_path / "c"))[0] == 0
    assert sorted(pq.read_table(tmp_path / "c").column("id").to_pylist()) == ["007", "7"]
    big = tmp_path / "big.jsonl"
    big.write_text(
        '{"id": 12345678901234567890123, "prompt": "a"}\n'
        '{"id": 12345678901234567890124, "prompt": "b"}\n'
    )
    assert batch(emulator, str(big), str(tmp_path / "d"))[0] == 0
    ids = sorted(int(v) for v in pq.read_table(tmp_path / "d").column("id").to_pylist())
    assert ids == [12345678901234567890123, 12345678901234567890124]
    typed = tmp_path / "typed.parquet"
    pq.write_table(pa.table({"id": pa.array([3, 4], pa.int32()), "prompt": ["a", "b"]}), typed)
    assert batch(emulator, str(typed), str(tmp_path / "e"))[0] == 0
    assert pq.read_table(tmp_path / "e").schema.field("id").type == pa.int32()
    assert len(emulator.requests) == 3 + 2 + 2 + 2 + 2


def test_ids_of_two_kinds_that_could_merge_are_refused(emulator: Emulator, tmp_path: Path) -> None:
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text('{"id": 1, "prompt": "a"}\n{"id": "1", "prompt": "b"}\n')
    code, text = batch(emulator, str(mixed), str(tmp_path / "out"))
    assert code == 2 and one_line(text) and "line 2" in text and "line 1" in text, text
    assert emulator.requests == [] and not (tmp_path / "out").exists()


# -- 6. an unwritable folder is found before paying; write errors are one line ------------------


@contextlib.contextmanager
def mounted(folder: Path, *options: str) -> Iterator[None]:
    """A mount of our own at `folder` (root only: skipped where mounting is not allowed)."""
    folder.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", *options, str(folder)], capture_output=True, check=False)
    if result.returncode != 0:
        pytest.skip(f"cannot mount here: {result.stderr.decode().strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_read_only_folder_is_refused_before_any_request(
    emulator: Emulator, tmp_path: Path
) -> None:
    source = csv_rows(tmp_path / "in.csv", 20)
    output = tmp_path / "ro"
    with mounted(output, "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs"):
        code, text = batch(emulator, str(source), str(output))
    assert code == 2 and one_line(text) and "Read-only file system" in text, text
    assert emulator.requests == []


def test_a_full_disk_is_refused_before_any_request(emulator: Emulator, tmp_path: Path) -> None:
    source = csv_rows(tmp_path / "in.csv", 20)
    output = tmp_path / "full"
    with mounted(output, "-t", "tmpfs", "-o", "size=8k", "tmpfs"):
        with contextlib.suppress(OSError):
            (output / "filler.bin").write_bytes(b"x" * 64 * 1024)
        code, text = batch(emulator, str(source), str(output))
    assert code == 2 and one_line(text) and "No space left on device" in text, text
    assert emulator.requests == []


def test_a_disk_that_fills_during_the_job_is_one_line_and_leaves_no_partial_file(
    emulator: Emulator, tmp_path: Path
) -> None:
    source = csv_rows(tmp_path / "in.csv", 400)
    output = tmp_path / "fills"
    with mounted(output, "-t", "tmpfs", "-o", "size=32k", "tmpfs"):
        code, text = batch(emulator, str(source), str(output), "--max-tokens", "2")
        assert code == 1 and one_line(text) and "No space left on device" in text, text
        left = sorted(p.name for p in output.iterdir())
        assert not [name for name in left if name.startswith(".tir-llama-tmp")], left
        for path in output.glob("*.parquet"):  # whole files only
            assert pq.read_table(path).num_rows > 0


# -- 7. --overwrite: the old output or the new, never both --------------------------------------


def test_overwrite_never_leaves_both_outputs(emulator: Emulator, tmp_path: Path) -> None:
    output = tmp_path / "answers"
    ray_tir.write_output(
        ray_tir.chat(ray.data.from_items(rows(20), override_num_blocks=2), **options(emulator)),
        output,
    )
    (output / "README.txt").write_text("kept")
    stuck = sorted(output.glob("*.parquet"))[0]
    # An old file that cannot be deleted (the old code moved the new files in, then failed
    # to delete it: both outputs in the folder).
    if subprocess.run(["chattr", "+i", str(stuck)], check=False).returncode != 0:
        pytest.skip("chattr +i is not available here")
    try:
        new = [{"id": 100 + i, "prompt": f"new {i}"} for i in range(7)]
        ray_tir.write_output(
            ray_tir.chat(ray.data.from_items(new), **options(emulator)), output, mode="overwrite"
        )
        assert sorted(r["id"] for r in folder_rows(output)) == [100 + i for i in range(7)]
        assert (output / "README.txt").read_text() == "kept"
        assert not [p for p in output.iterdir() if p.is_dir()]
    finally:
        for path in tmp_path.rglob(stuck.name):
            subprocess.run(["chattr", "-i", str(path)], check=False)


# -- 8. a killed job: what it loses, what it sends after, what it leaves running ----------------


def describe(pid: int) -> str:
    """A process as a failure names it: its command, and whether it carries the reaper's mark."""
    with contextlib.suppress(OSError):
        proc = Path("/proc") / str(pid)
        command = proc.joinpath("cmdline").read_bytes().replace(b"\0", b" ")[:120].decode()
        reaped = b"TIR_LLAMA_BATCH=" in proc.joinpath("environ").read_bytes()
        state, parent = proc.joinpath("stat").read_bytes().rsplit(b")", 1)[1].split()[:2]
        return f"{pid} {command!r} reaper-mark={reaped} state={state.decode()} parent={int(parent)}"
    return f"{pid} (gone)"


def marked(mark: str) -> list[int]:
    """Processes that inherited `TIR_TEST_JOB=mark` (the command and everything it started)."""
    wanted = f"TIR_TEST_JOB={mark}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if wanted in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
    return found


# How long the command's processes may outlive it. Left to themselves, Ray's dashboard and
# runtime-env agents outlived a killed driver by more than 30 s here (they were still running
# when we stopped looking); the command's reaper ends them as soon as the command has ended.
RAY_GONE_SECONDS = 20.0


def wait_for_exit(mark: str) -> None:
    """Block until no process carries `mark` (each waited on through a pidfd: no polling)."""
    for _ in range(20):
        pids = marked(mark)
        if not pids:
            return
        fds = []
        for pid in pids:
            with contextlib.suppress(OSError):
                fds.append(os.pidfd_open(pid))
        try:
            for fd in fds:
                ready, _, _ = select.select([fd], [], [], RAY_GONE_SECONDS)
                assert ready, (
                    f"a process still runs {RAY_GONE_SECONDS} s after the kill: "
                    f"{[describe(pid) for pid in marked(mark)]}"
                )
        finally:
            for fd in fds:
                os.close(fd)
    raise AssertionError(f"processes keep appearing: {marked(mark)}")


def batch_command(
    emulator: Emulator, argv: list[str], env: dict[str, str], stderr: int
) -> subprocess.Popen[str]:
    """`tir-llama batch` in a process of its own (its own Ray), the key set, stdout dropped."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TIR_", "RAY_ADDRESS"))}
    command = [sys.executable, "-m", "tir_llama", "--base-url", emulator.base_url, "batch"]
    return subprocess.Popen(
        [*command, *argv],
        env={**base, "TIR_API_KEY": TEST_KEY, **env},
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        text=True,
    )


@pytest.mark.timing
@pytest.mark.timeout(600)  # a Ray job killed and resumed: minutes with two busy processes beside
def test_a_killed_job_loses_at_most_a_bound_sends_nothing_after_and_leaves_nothing(
    emulator: Emulator, tmp_path: Path
) -> None:
    source = csv_rows(tmp_path / "in.csv", 1200)
    output = tmp_path / "out"
    emulator.chat_delay = 0.01
    mark = uuid.uuid4().hex
    argv = ["--concurrency", "2", "--max-in-flight", "4", "--max-tokens", "2"]
    job = batch_command(
        emulator, [str(source), str(output), *argv], {"TIR_TEST_JOB": mark}, subprocess.DEVNULL
    )
    try:
        # A guard against a hang, not a measurement: with two busy processes beside it (make
        # test-stress), Ray's start and 600 requests took more than the default 60 s.
        emulator.wait_until(lambda: len(emulator.requests) >= 600, "600 requests", timeout=240)
    finally:
        job.send_signal(signal.SIGKILL)
        job.wait()
    at_kill = len(emulator.requests)
    wait_for_exit(mark)  # nothing left running: Ray's agents included
    # Nothing sent after the kill beyond what the actors had in flight (2 x 4).
    assert len(emulator.requests) - at_kill <= 2 * 4
    # Answers reach the folder as they come: at most the batches being answered are lost
    # (2 actors x BATCHES_AT_ONCE x 16 rows), whatever the job's size.
    answered = emulator.statuses().count(200)
    kept = folder_rows(output)
    assert answered - len(kept) <= 2 * BATCHES_AT_ONCE * 16, (answered, len(kept))
    assert len({r["id"] for r in kept}) == len(kept)
    # Resumed, it pays for the rest only.
    emulator.reset()
    code, text = batch(emulator, str(source), str(output), "--resume", *argv)
    assert code == 0, text
    assert len(emulator.requests) == 1200 - len(kept)
    assert sorted(r["id"] for r in folder_rows(output)) == list(range(1200))


@pytest.mark.timeout(600)
def test_ctrl_c_stops_a_job_and_says_what_is_kept(emulator: Emulator, tmp_path: Path) -> None:
    # 130, as every command; it ended without a word about the rows already written.
    source = csv_rows(tmp_path / "in.csv", 400)
    output = tmp_path / "out"
    emulator.chat_delay = 0.05
    argv = ["--concurrency", "1", "--max-in-flight", "4", "--max-tokens", "2"]
    job = batch_command(emulator, [str(source), str(output), *argv], {}, subprocess.PIPE)
    try:
        # Batches of 16 rows are written as they are answered: some are in by then.
        emulator.wait_until(lambda: len(emulator.requests) >= 64, "64 requests", timeout=240)
        job.send_signal(signal.SIGINT)
        _, err = job.communicate(timeout=120)
    finally:
        job.kill()
    assert job.returncode == 130, err
    assert f"stopped: the rows answered before Ctrl-C are written in {output}" in err
    assert "--resume sends the others" in err and "Traceback" not in err
    kept = folder_rows(output)
    assert kept and len({r["id"] for r in kept}) == len(kept)


# -- 9. bad input is one line, with its line number ---------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("ragged.csv", "id,prompt\n1,a\n2,b\n3,c,extra\n4,d\n", "line 4 has 3 fields"),
        ("doubled.csv", "id,prompt,id\n1,a,2\n", "'id' twice"),
        (
            "broken.jsonl",
            '{"id": 1, "prompt": "a"}\n{"id": 2, "prompt": "b"}\n{"id": 3,\n',
            "line 3",
        ),
        ("list.jsonl", '{"id": 1, "prompt": "a"}\n[1, 2]\n', "line 2"),
        (
            "kinds.jsonl",
            '{"id": 1, "prompt": "a", "n": 1}\n{"id": 2, "prompt": "b", "n": "x"}\n',
            "line 2",
        ),
    ],
)
def test_bad_input_is_one_line_with_its_line_number(
    emulator: Emulator, tmp_path: Path, name: str, content: str, expected: str
) -> None:
    source = tmp_path / name
    source.write_text(content)
    code, text = batch(emulator, str(source), str(tmp_path / "out"))
    assert code == 2 and one_line(text) and expected in text, text
    assert emulator.requests == [] and not (tmp_path / "out").exists()

"""Bulk jobs: what a hostile review of the bulk path found; each test failed before its fix.

Requests are counted at the emulator and folders read back with pyarrow.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import ray.data

import ray_tir
from ray_tir import _settings, _usage
from tests.conftest import TEST_KEY
from tests.ray_tir.test_hostile import batch, batch_before_ray, options, rows
from tests.ray_tir.test_hostile_jobs import mounted
from tests.support.emulator import Emulator

pytestmark = pytest.mark.usefixtures("ray_local")
URL = "http://127.0.0.1:9/v1"  # never reached: these are refused before any request


def ids_in(folder: Path) -> list[Any]:
    found: list[Any] = []
    for path in sorted(folder.glob("*.parquet")):
        found += pq.read_table(path, columns=["id"]).column("id").to_pylist()
    return sorted(found)


def test_overwrite_through_a_symlink_replaces_the_folder_it_points_to(
    emulator: Emulator, tmp_path: Path
) -> None:
    real = tmp_path / "bigdisk" / "answers"
    real.mkdir(parents=True)
    link = tmp_path / "out"
    link.symlink_to(real)
    ds = ray.data.from_items(rows(6))
    ray_tir.write_output(ray_tir.chat(ds.limit(3), **options(emulator)), link)
    newer = ray.data.from_items([{"id": 100 + i, "prompt": f"q {i}"} for i in range(3)])
    ray_tir.write_output(ray_tir.chat(newer, **options(emulator)), link, mode="overwrite")
    # The link is still the user's link, and what it points to holds the new rows only.
    assert link.is_symlink() and link.resolve() == real.resolve()
    assert ids_in(real) == [100, 101, 102]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_overwrite_of_a_mount_point_is_refused_before_any_request(
    emulator: Emulator, tmp_path: Path
) -> None:
    output = tmp_path / "volume"
    ds = ray.data.from_items(rows(4))
    with mounted(output, "-t", "tmpfs", "-o", "size=4m", "tmpfs"):
        ray_tir.write_output(ray_tir.chat(ds, **options(emulator)), output)
        sent = len(emulator.requests)
        with pytest.raises(ray_tir.OutputFolderError, match="mount point"):
            ray_tir.write_output(ray_tir.chat(ds, **options(emulator)), output, mode="overwrite")
        assert len(emulator.requests) == sent  # nothing paid for twice
        assert ids_in(output) == [0, 1, 2, 3]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".volume")]


def test_a_resume_against_another_server_is_refused(emulator: Emulator, tmp_path: Path) -> None:
    output = tmp_path / "out"
    ds = ray.data.from_items(rows(6))
    ray_tir.write_output(ray_tir.chat(ds.limit(3), **options(emulator)), output)
    todo = ray_tir.pending(ds, str(output), id_column="id")
    with Emulator() as other:
        elsewhere = {**options(emulator), "base_url": other.base_url}
        with pytest.raises(ray_tir.OutputFolderError, match="server"):
            ray_tir.write_output(ray_tir.chat(todo, **elsewhere), output, mode="resume")
        assert other.requests == []
    # The same server (and project) resumes.
    ray_tir.write_output(ray_tir.chat(todo, **options(emulator)), output, mode="resume")
    assert ids_in(output) == list(range(6))


def test_usage_reads_a_folders_settings_once(
    emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = tmp_path / "out"
    ds = ray.data.from_items(rows(12))
    job = ray_tir.chat(ds, **options(emulator), batch_size=1, concurrency=1)
    written = ray_tir.write_output(job, output)
    assert len(written) >= 6  # a file per batch: the case that made it quadratic
    reads: list[Path] = []
    real = _settings.read_settings

    def counted(folder: Any) -> Any:
        reads.append(Path(folder))
        return real(folder)

    monkeypatch.setattr(_usage, "read_settings", counted)
    totals = ray_tir.usage(str(output))
    assert totals["rows"] == 12 and list(totals["per_model"]) == ["llama3_1_8b_instruct"]
    assert len(reads) == 1


# -- the CLI: found in the same review ----------------------------------------------------------


def test_a_header_only_input_is_refused_without_a_folder(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("id,prompt\n")
    output = tmp_path / "out"
    done = batch_before_ray(source, output, {"TIR_API_KEY": TEST_KEY, "TIR_BASE_URL": URL})
    assert done.returncode == 2, done.stderr
    assert "holds no rows" in done.stderr and "Traceback" not in done.stderr
    assert not output.exists()


def test_repeated_ids_are_refused_before_ray(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("id,prompt\n1,a\n2,b\n1,c\n")
    done = batch_before_ray(
        source, tmp_path / "out", {"TIR_API_KEY": TEST_KEY, "TIR_BASE_URL": URL}
    )
    assert done.returncode == 2, done.stderr
    assert "not unique (1 repeat)" in done.stderr


def test_zero_and_minus_zero_stay_two_ids(
    emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIR_API_KEY", TEST_KEY)
    source = tmp_path / "in.csv"
    source.write_text("id,prompt\n0,a\n-0,b\n")
    output = tmp_path / "out"
    code, text = batch(emulator, str(source), str(output), "--max-tokens", "2")
    assert code == 0, text
    assert ids_in(output) == ["-0", "0"]


def test_batch_inside_a_program_leaves_no_mark_on_its_environment(
    emulator: Emulator, tmp_path: Path
) -> None:
    # The reaper ends every process carrying the job's mark once the program ends: a process
    # the program starts after the job must not carry it.
    source = tmp_path / "in.csv"
    source.write_text("id,prompt\n1,a\n")
    script = (
        "import io, os, sys\nfrom tir_llama.cli import main\n"
        f"code = main(['--base-url', {emulator.base_url!r}, 'batch', {str(source)!r}, "
        f"{str(tmp_path / 'out')!r}], io.StringIO())\n"
        "print(code, 'TIR_LLAMA_BATCH' in os.environ)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIR_", "RAY_"))}
    env["TIR_API_KEY"] = TEST_KEY
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    assert done.stdout.split()[-2:] == ["0", "False"], done.stdout + done.stderr


def test_a_column_parquet_cannot_store_is_refused_before_paying(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(
        "".join(f'{{"id": {i}, "prompt": "q {i}", "meta": {{}}}}\n' for i in range(5))
    )
    output = tmp_path / "out"
    done = batch_before_ray(source, output, {"TIR_API_KEY": TEST_KEY, "TIR_BASE_URL": URL})
    assert done.returncode == 2, done.stderr
    assert "cannot be written to Parquet" in done.stderr and ".jsonl" in done.stderr
    assert done.stderr.count("\n") == 1 and not output.exists()


def test_rows_appended_since_the_first_run_keep_the_ids_type(
    emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIR_API_KEY", TEST_KEY)
    source, output = tmp_path / "in.csv", tmp_path / "out"
    source.write_text("id,prompt\n" + "".join(f"{i},q {i}\n" for i in range(4)))
    code, text = batch(emulator, str(source), str(output), "--max-tokens", "2")
    assert code == 0, text
    # An appended row whose id is text makes the whole file's ids text: refused, naming it,
    # before Ray and before any request.
    with source.open("a") as f:
        f.write("A10,q 10\n")
    sent = len(emulator.requests)
    code, text = batch(emulator, str(source), str(output), "--resume", "--max-tokens", "2")
    assert code == 2 and "row 5" in text and "'A10'" in text, text
    assert len(emulator.requests) == sent
    # Appended rows with whole-number ids resume into the int ids, each id once.
    source.write_text("id,prompt\n" + "".join(f"{i},q {i}\n" for i in range(6)))
    code, text = batch(emulator, str(source), str(output), "--resume", "--max-tokens", "2")
    assert code == 0, text
    assert ids_in(output) == list(range(6)) and len(emulator.requests) == sent + 2

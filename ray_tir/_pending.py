"""What the folder holds: whether a mode may write to it, the ids answered, the rows pending."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray.data

from ._folder import (  # noqa: TID251
    OutputFolderError,
    WriteMode,
    _columns,
    _is_job_output,
    _names,
    _row_files,
    _unreadable,
)
from ._sink import write_table  # noqa: TID251

__all__ = ["check_output", "done_ids", "parquet_outputs", "pending", "without_done"]


def check_output(output: str | os.PathLike[str], mode: WriteMode) -> list[Path]:
    """Check that `mode` may write to `output`, before any request; return its row files.

    Raises:
        OutputFolderError: `output` is a file; or it holds rows and `mode` is "new"; or
            `mode` is "overwrite" and it holds files that are not a tir-llama job's output,
            or folders (they are named: the job never replaces what it cannot tell is its
            own).
    """
    folder = Path(output)
    files = _row_files(folder)
    if mode not in ("new", "resume", "overwrite"):
        raise ValueError(f"mode must be 'new', 'resume' or 'overwrite', got {mode!r}")
    if mode == "new" and files and not any(_is_job_output(_columns(p)) for p in files):
        # A user's own files (a metadata.json): resuming or overwriting them is no answer.
        raise OutputFolderError(
            f"{folder} holds files that are not the output of a tir-llama job "
            f"({', '.join(p.name for p in files[:3])}): write to another folder (or an "
            "empty one); nothing was changed"
        )
    if mode == "new" and files:
        raise OutputFolderError(
            f"{folder} already holds rows ({len(files)} file(s), e.g. {files[0].name}): "
            "resume to answer only the rows not in it yet (--resume; in Python "
            "pending() then write_output(..., mode='resume')), or replace it once the new "
            "output is complete (--overwrite; mode='overwrite'), or choose another folder"
        )
    if mode == "overwrite":
        foreign = [p.name for p in files if not _is_job_output(_columns(p))]
        foreign += [f"{p.name}/" for p in sorted(folder.iterdir()) if p.is_dir()] if files else []
        if foreign:
            raise OutputFolderError(
                f"{folder} holds files that are not the output of a tir-llama job "
                f"({', '.join(foreign[:3])}): overwrite replaces only job "
                "output. Move them elsewhere, or choose another folder; nothing was changed"
            )
    return files


def parquet_outputs(output: Path, id_column: str) -> list[Path]:
    """`output`'s row files, each checked to be Parquet with `id_column` from a job."""
    files = _row_files(output)
    for path in files:
        if path.suffix != ".parquet":
            raise OutputFolderError(
                f"{path} is not Parquet: resuming reads the ids of Parquet output only. "
                "Move it out of the folder, or choose another folder; nothing was changed"
            )
        columns = _columns(path)
        if columns is None:
            raise _unreadable(path)
        if id_column not in columns:
            raise OutputFolderError(
                f"{path} has no column {id_column!r} (it has {_names(columns)}): name the id "
                "column the output was written with (id_column=..., --id-column), or check "
                "that this is the right folder; nothing was changed"
            )
        if not _is_job_output(columns):
            raise OutputFolderError(
                f"{path} is not the output of a tir-llama job (no 'error' and 'response' or "
                "'embedding' columns): choose the folder the job wrote; nothing was changed"
            )
    return files


def done_ids(
    output: str | os.PathLike[str], id_column: str, *, keep_failed: bool = False
) -> set[Any]:
    """The ids already answered in `output`'s Parquet files; reads, never changes anything.

    Args:
        output: the folder.
        id_column: the rows' id column.
        keep_failed: count rows that carry an error as done too (by default they are not:
            resuming answers them again).

    Raises:
        OutputFolderError: a file that cannot be read (half-written), one without
            `id_column` (named with the columns it has), one that is not job output, or a
            JSON file (resuming reads Parquet output).
    """
    done: set[Any] = set()
    for path in parquet_outputs(Path(output), id_column):
        try:
            table = pq.read_table(path, columns=[id_column, "error"])
        except (OSError, pa.ArrowException):
            raise _unreadable(path) from None
        if not keep_failed:
            table = table.filter(pc.is_null(table.column("error")))
        done.update(table.column(0).to_pylist())
    return done


def _drop_failed(folder: Path) -> int:
    """Take the rows that carry an error out of the folder's files; return how many.

    Run before a resume sends anything: those rows are pending again, and a kill at any
    point leaves each file whole (its old version or its new one), never a row twice.
    """
    dropped = 0
    for path in _row_files(folder):
        if path.suffix != ".parquet":
            continue
        table = pq.read_table(path)
        if "error" not in table.column_names:
            continue
        failed = pc.is_valid(table.column("error"))
        count = pc.sum(failed).as_py() or 0
        if not count:
            continue
        kept = table.filter(pc.invert(failed))
        if kept.num_rows:
            write_table(path, kept)
        else:
            path.unlink()
        dropped += count
    return dropped


def _check_input_ids(ds: ray.data.Dataset, id_column: str, done: set[Any]) -> None:
    """Refuse ids that cannot tell rows apart (duplicates, nulls) or cannot match `done`."""
    schema = ds.schema()
    names = list(schema.names) if schema is not None else []
    if id_column not in names:
        raise ValueError(
            f"the rows have no column {id_column!r} (they have {_names(names)}): resuming "
            "needs an id per row; name it with id_column=... (--id-column)"
        )
    seen: set[Any] = set()
    duplicates: list[Any] = []
    nulls = 0
    for batch in ds.select_columns([id_column]).iter_batches(batch_format="pyarrow"):
        table: pa.Table = batch
        for value in table.column(0).to_pylist():
            if value is None:
                nulls += 1
            elif value in seen:
                duplicates.append(value)
            else:
                seen.add(value)
    if nulls:
        raise ValueError(
            f"{nulls} row(s) have no {id_column!r}: resuming cannot tell whether they were "
            "answered; give every row an id"
        )
    if duplicates:
        raise ValueError(
            f"the ids in {id_column!r} are not unique (e.g. {', '.join(map(repr, duplicates[:3]))}"
            f", {len(duplicates)} repeat(s)): resuming cannot tell those rows apart; give every "
            "row its own id"
        )
    if done and seen and seen.isdisjoint(done):
        ours, theirs = type(next(iter(seen))), type(next(iter(done)))
        if ours is not theirs:
            raise ValueError(
                f"the output's ids are {theirs.__name__} and the input's {ours.__name__}: "
                "none would match, and every row would be paid for again. Read the input with "
                "the same types it was first read with"
            )


def pending(
    ds: ray.data.Dataset, output: str, *, id_column: str, keep_failed: bool = False
) -> ray.data.Dataset:
    """The rows of `ds` not yet answered in the Parquet output under `output`.

    For resuming a job: run it over `pending(ds, output, id_column=...)` and write with
    `write_output(..., output, mode="resume")`; no row already answered is paid for or
    written again. Rows that carry an error are pending again (pass the same `keep_failed`
    to both to keep them instead). It only reads: a file it cannot use stops it, named,
    before any request.

    Raises:
        OutputFolderError: a half-written file (remove it: its rows are answered again), a
            file without `id_column`, a file that is not job output, or JSON output.
        ValueError: the input has no `id_column`, or ids that are null or repeated (those
            rows could not be told apart), or ids of another type than the output's.
    """
    return without_done(ds, done_ids(output, id_column, keep_failed=keep_failed), id_column)


def without_done(ds: ray.data.Dataset, done: set[Any], id_column: str) -> ray.data.Dataset:
    """`pending` once the folder's ids are read (the CLI reads them before Ray starts)."""
    _check_input_ids(ds, id_column, done)
    if not done:
        return ds
    frozen = frozenset(done)
    return ds.filter(lambda row: row[id_column] not in frozen)

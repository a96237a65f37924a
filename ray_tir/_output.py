"""A job's output folder: what it holds, which rows are pending, writing without loss.

The rules (the user's files are theirs): nothing here deletes or rewrites a file it did not
write in the same run, except `mode="overwrite"`, which replaces earlier job output only once
the new output is complete; reading a folder to resume never changes it.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq
import ray.data

from tir_transport import Usage

__all__ = [
    "OutputFolderError",
    "WriteMode",
    "check_output",
    "done_ids",
    "pending",
    "usage",
    "without_done",
    "write_output",
]

WriteMode = Literal["new", "resume", "overwrite"]

# Files that hold rows: Parquet, and the JSON Lines Ray Data writes (`.json`) or users name
# `.jsonl`. Anything else in a folder (a README, `_SUCCESS`) is not rows and is left alone.
_ROW_SUFFIXES = (".parquet", ".json", ".jsonl")
_STAGING_PREFIX = ".tir-llama-staging-"


class OutputFolderError(ValueError):
    """The output folder is not in a state the job can safely read or write; nothing was sent."""


def _row_files(folder: Path) -> list[Path]:
    if not folder.exists():
        return []
    if not folder.is_dir():
        raise OutputFolderError(
            f"{folder} is a file, not a folder: name a folder for the output (it is created)"
        )
    return sorted(
        p
        for p in folder.iterdir()
        if p.suffix in _ROW_SUFFIXES and p.is_file() and not p.name.startswith(".")
    )


def _columns(path: Path) -> list[str] | None:
    """The file's column names, or None when it cannot be read (half-written, not a table)."""
    try:
        if path.suffix == ".parquet":
            return list(pq.read_schema(path).names)
        with path.open("rb") as f:
            first = f.readline()
        record = json.loads(first) if first.strip() else {}
        return list(record) if isinstance(record, dict) else None
    except (OSError, ValueError, pa.ArrowException):
        return None


def _is_job_output(columns: Sequence[str] | None) -> bool:
    return (
        columns is not None
        and "error" in columns
        and ("response" in columns or "embedding" in columns)
    )


def _names(columns: Sequence[str]) -> str:
    return ", ".join(map(repr, columns)) or "none"


def _unreadable(path: Path) -> OutputFolderError:
    return OutputFolderError(
        f"{path} cannot be read: a file a killed job left half-written? Nothing was changed "
        f"and nothing sent. Remove it (rm '{path}') and run again: its rows are answered again."
    )


def check_output(output: str | os.PathLike[str], mode: WriteMode) -> list[Path]:
    """Check that `mode` may write to `output`, before any request; return its row files.

    Raises:
        OutputFolderError: `output` is a file; or it holds rows and `mode` is "new"; or
            `mode` is "overwrite" and it holds files that are not a tir-llama job's output
            (they are named: the job never replaces what it cannot tell is its own).
    """
    folder = Path(output)
    files = _row_files(folder)
    if mode not in ("new", "resume", "overwrite"):
        raise ValueError(f"mode must be 'new', 'resume' or 'overwrite', got {mode!r}")
    if mode == "new" and files:
        raise OutputFolderError(
            f"{folder} already holds rows ({len(files)} file(s), e.g. {files[0].name}): "
            "resume to answer only the rows not in it yet (--resume; in Python "
            "pending() then write_output(..., mode='resume')), or replace it once the new "
            "output is complete (--overwrite; mode='overwrite'), or choose another folder"
        )
    if mode == "overwrite":
        foreign = [p for p in files if not _is_job_output(_columns(p))]
        if foreign:
            raise OutputFolderError(
                f"{folder} holds files that are not the output of a tir-llama job "
                f"({', '.join(p.name for p in foreign[:3])}): overwrite replaces only job "
                "output. Move them elsewhere, or choose another folder; nothing was changed"
            )
    return files


def done_ids(output: str | os.PathLike[str], id_column: str) -> set[Any]:
    """The ids already answered in `output`'s Parquet files; reads, never changes anything.

    Raises:
        OutputFolderError: a file that cannot be read (half-written), one without
            `id_column` (named with the columns it has), one that is not job output, or a
            JSON file (resuming reads Parquet output).
    """
    done: set[Any] = set()
    for path in _row_files(Path(output)):
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
        try:
            done.update(pq.read_table(path, columns=[id_column]).column(0).to_pylist())
        except (OSError, pa.ArrowException):
            raise _unreadable(path) from None
    return done


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


def pending(ds: ray.data.Dataset, output: str, *, id_column: str) -> ray.data.Dataset:
    """The rows of `ds` whose `id_column` is not yet in the Parquet output under `output`.

    For resuming a job: run it over `pending(ds, output, id_column=...)` and write with
    `write_output(..., output, mode="resume")`; no row already answered is paid for or
    written again. It only reads: a file it cannot use stops it, named, before any request.

    Raises:
        OutputFolderError: a half-written file (remove it: its rows are answered again), a
            file without `id_column`, a file that is not job output, or JSON output.
        ValueError: the input has no `id_column`, or ids that are null or repeated (those
            rows could not be told apart), or ids of another type than the output's.
    """
    return without_done(ds, done_ids(output, id_column), id_column)


def without_done(ds: ray.data.Dataset, done: set[Any], id_column: str) -> ray.data.Dataset:
    """`pending` once the folder's ids are read (the CLI reads them before Ray starts)."""
    _check_input_ids(ds, id_column, done)
    if not done:
        return ds
    frozen = frozenset(done)
    return ds.filter(lambda row: row[id_column] not in frozen)


def write_output(
    ds: ray.data.Dataset,
    output: str | os.PathLike[str],
    *,
    mode: WriteMode = "new",
    format: Literal["parquet", "json"] | None = None,
) -> list[str]:
    """Run the job by writing `ds` to the folder `output`; return the files this run wrote.

    Args:
        ds: the job's rows (`chat(...)` or `embed(...)`).
        output: a local folder (or one every Ray node mounts), created when missing.
        mode: "new" (default) refuses a folder that already holds rows, so a job run twice
            never pays twice; "resume" adds this run's files beside the earlier ones (run it
            over `pending(...)`); "overwrite" writes the new output aside and replaces the
            earlier job output only once it is complete (files that are not job output
            stop it, named).
        format: "parquet" or "json" (JSON Lines); default Parquet, or JSON when `output`
            ends in `.jsonl`. Resuming needs Parquet.

    Raises:
        OutputFolderError: see `check_output`; nothing is sent when it is raised.
    """
    output = os.fspath(output)
    if "://" in output:
        raise OutputFolderError(
            f"{output}: write_output takes a local folder (or one every node mounts); for "
            "object stores, use Ray's own write_parquet"
        )
    fmt = format or ("json" if output.rstrip("/").endswith(".jsonl") else "parquet")
    if mode == "resume" and fmt != "parquet":
        raise OutputFolderError("resuming needs Parquet output (a folder not ending in .jsonl)")
    # Absolute: Ray's workers resolve a relative path from their own working directory.
    folder = Path(os.path.abspath(output))
    earlier = check_output(folder, mode)
    target = folder
    if mode == "overwrite" and earlier:
        # Beside the earlier output, on the same file system: moving in is a rename.
        target = folder / f"{_STAGING_PREFIX}{uuid.uuid4().hex[:12]}"
    before = {p.name for p in _row_files(target)}
    try:
        if fmt == "json":
            ds.write_json(str(target))
        else:
            ds.write_parquet(str(target))
    except BaseException:
        # The earlier output is untouched. Rows this run already wrote aside were paid for:
        # they stay in the staging folder (the docs say so); an empty one goes.
        if target is not folder and target.is_dir() and not _row_files(target):
            shutil.rmtree(target)
        raise
    written = [p for p in _row_files(target) if p.name not in before]
    if target is not folder:
        if not written:
            # No rows to put in their place: the earlier output stays as it was.
            if target.is_dir():
                shutil.rmtree(target)
            raise OutputFolderError(f"the new output has no rows: nothing in {folder} was replaced")
        moved = []
        for path in written:
            # Ray names every file after its write: no name is taken by an earlier run.
            moved.append(path.rename(folder / path.name))
        for path in earlier:
            path.unlink()
        shutil.rmtree(target)
        written = moved
    return [str(p) for p in written]


def _records(paths: Iterable[Path]) -> Iterator[Mapping[str, Any]]:
    for path in paths:
        if path.suffix == ".parquet":
            names = pq.read_schema(path).names
            columns = [c for c in ("input_tokens", "output_tokens", "error") if c in names]
            yield from pq.read_table(path, columns=columns).to_pylist()
        else:
            with path.open(encoding="utf-8") as f:
                yield from (json.loads(line) for line in f if line.strip())


def _paths(source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Path]:
    items = [source] if isinstance(source, str | os.PathLike) else list(source)
    paths: list[Path] = []
    for item in items:
        path = Path(item)
        paths.extend(_row_files(path) if path.is_dir() else [path])
    return paths


def usage(
    source: ray.data.Dataset
    | Sequence[Mapping[str, Any]]
    | str
    | os.PathLike[str]
    | Sequence[str | os.PathLike[str]],
) -> dict[str, Any]:
    """Totals of a finished chat job from its token columns.

    Args:
        source: the job's rows (a Dataset or a list of rows), or its output: a folder, a
            file, or the list of files `write_output` returned (what one run paid for).

    Returns:
        `usage` (a `Usage`), `rows`, `rows_with_error`, and `rows_without_usage` (answered
        rows whose server reported no usage: not counted, never as zero).

    Raises:
        ValueError: rows without the token columns (not the output of `chat`).
    """
    rows: Iterable[Mapping[str, Any]]
    if isinstance(source, ray.data.Dataset):
        rows = source.iter_rows()
    elif isinstance(source, str | os.PathLike) or (
        isinstance(source, Sequence) and source and isinstance(source[0], str | os.PathLike)
    ):
        rows = _records(_paths(source))  # type: ignore[arg-type]
    else:
        rows = source  # type: ignore[assignment]
    total, count, errors, unknown = Usage(), 0, 0, 0
    for row in rows:
        if "input_tokens" not in row:
            raise ValueError(
                "these rows have no token columns: usage() sums the output of ray_tir.chat "
                "(embedding rows carry none: the server counts tokens per request, not per text)"
            )
        count += 1
        if row.get("error"):
            errors += 1
        elif row.get("input_tokens") is None:
            unknown += 1
        else:
            total = total + Usage(
                row["input_tokens"],
                row["output_tokens"] or 0,
                row["input_tokens"] + (row["output_tokens"] or 0),
            )
    return {
        "usage": total,
        "rows": count,
        "rows_with_error": errors,
        "rows_without_usage": unknown,
    }

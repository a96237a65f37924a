"""A job's output folder: the names of its files, its errors, which of its files hold rows."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["Format", "OutputFolderError", "OutputWriteError", "Progress", "WriteMode"]


WriteMode = Literal["new", "resume", "overwrite"]
Format = Literal["parquet", "json"]

# Files that hold rows: Parquet, and JSON Lines (`.json` as Ray Data names them, `.jsonl`).
# Anything else in a folder (a README, `_SUCCESS`) is not rows and is left alone; so are
# hidden files, which readers (pyarrow, Ray Data, Spark) skip too: our own bookkeeping is
# hidden for that reason, and none of it ends in a row suffix.
_ROW_SUFFIXES = (".parquet", ".json", ".jsonl")
_LOCK = ".tir-llama-lock"
_RECORD = ".tir-llama-job-"  # + the run id: the job's settings
_TMP = ".tir-llama-tmp-"  # a file being written; renamed into place once complete
# Beside the folder: `.{name}.tir-llama-{run}`, the new output of an overwrite.
_STAGING = ".tir-llama-"


# Called on the driver per batch a job writes: rows, rows with an error, input and output tokens.
Progress = Callable[[int, int, int, int], None]


class OutputFolderError(ValueError):
    """The output folder is not in a state the job can safely read or write; nothing was sent."""


class OutputWriteError(RuntimeError):
    """Writing the job's output failed part way; what was written before stays, complete."""


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


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())

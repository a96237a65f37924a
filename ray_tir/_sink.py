"""Writing one file whole or not at all; the sink a job's actors write their answers to."""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ._folder import _TMP, Format, OutputWriteError, _one_line  # noqa: TID251

__all__ = ["Sink", "write_table"]


def _atomic(path: Path, write: Any) -> None:
    """Write `path` whole or not at all: a hidden temporary file, renamed into place."""
    tmp = path.with_name(f"{_TMP}{uuid.uuid4().hex[:12]}-{path.name}.tmp")
    try:
        with tmp.open("wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_table(path: Path, table: pa.Table) -> None:
    """Write `table` to `path` (Parquet, or JSON Lines for `.jsonl`), whole or not at all."""
    if path.suffix == ".parquet":
        _atomic(path, lambda f: pq.write_table(table, f))
        return

    def lines(f: Any) -> None:
        for row in table.to_pylist():
            f.write(json.dumps(row, ensure_ascii=False, default=str).encode() + b"\n")

    _atomic(path, lines)


class Sink:
    """Where a job's actors write their answers, a file per batch as soon as it is answered."""

    def __init__(self, folder: Path, fmt: Format, run: str) -> None:
        self.folder = str(folder)
        self.suffix = ".parquet" if fmt == "parquet" else ".jsonl"
        self.run = run

    def write(self, table: pa.Table) -> str:
        """Write one answered batch; return the file's name.

        Raises:
            OutputWriteError: the file could not be written (its cause in one line); no part
                of it is left looking like output.
        """
        path = Path(self.folder) / f"part-{self.run}-{uuid.uuid4().hex[:12]}{self.suffix}"
        try:
            write_table(path, table)
        except OSError as e:
            raise OutputWriteError(
                f"writing {path} failed: {e.strerror or _one_line(e)} "
                f"(errno {e.errno}); the files written before it are complete: --resume "
                "once it is fixed"
            ) from None
        except pa.ArrowException as e:  # a column Parquet cannot store (an empty struct)
            raise OutputWriteError(
                f"writing {path} failed: {_one_line(e)}; the files written before it are "
                "complete. Write JSON Lines (a folder ending in .jsonl), or leave the column out"
            ) from None
        return path.name

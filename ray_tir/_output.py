"""A job's output folder: what it holds, which rows are pending, writing without loss.

The rules (the user's files are theirs): nothing here deletes or rewrites a file that is not a
tir-llama job's output. Earlier job output is changed only as the user asks: `mode="resume"`
takes out the rows that carry an error (they are answered again; `keep_failed=True` keeps
them), `mode="overwrite"` swaps the whole folder for the new output once it is complete.
One job at a time writes to a folder (a lock the kernel releases when its process dies), and
a job's settings are recorded beside its rows, so that a resume cannot mix two kinds of answer.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray.data

from tir_transport import Usage

__all__ = [
    "OutputFolderError",
    "OutputWriteError",
    "Sink",
    "WriteMode",
    "check_output",
    "done_ids",
    "folder_lock",
    "parquet_outputs",
    "pending",
    "usage",
    "without_done",
    "write_output",
]

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


# -- one job per folder -------------------------------------------------------------------------

_held: dict[tuple[str, int], tuple[int, int]] = {}  # (folder, thread) -> (fd, depth)
_held_lock = threading.Lock()


@contextlib.contextmanager
def folder_lock(output: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold `output` for one job: create it, check it takes a write, refuse a second job.

    `flock` is released by the kernel when the holder's process ends, however it ends: a
    killed job never leaves the folder blocked. Re-entrant in one thread (the command holds
    it around `write_output`, which takes it too); another thread or process is refused.

    Raises:
        OutputFolderError: the folder cannot be created or written (read-only, full disk),
            or another job holds it.
    """
    folder = Path(os.path.abspath(output))
    key = (str(folder), threading.get_ident())
    with _held_lock:
        if key in _held:
            fd, depth = _held[key]
            _held[key] = (fd, depth + 1)
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield folder
        finally:
            with _held_lock:
                fd, depth = _held[key]
                _held[key] = (fd, depth - 1)
        return
    fd = _acquire(folder)
    with _held_lock:
        _held[key] = (fd, 1)
    try:
        yield folder
    finally:
        with _held_lock:
            del _held[key]
        _release(folder, fd)


def _acquire(folder: Path) -> int:
    if folder.exists() and not folder.is_dir():
        raise OutputFolderError(
            f"{folder} is a file, not a folder: name a folder for the output (it is created)"
        )
    path = folder / _LOCK
    while True:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise OutputFolderError(
                f"cannot write in {folder}: {e.strerror or e}; nothing was sent"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
            os.close(fd)
            raise OutputFolderError(
                f"another job is writing to {folder}{f' ({holder})' if holder else ''}: one "
                "job per folder at a time. Wait for it to end, or choose another folder; "
                "nothing was sent"
            ) from None
        # The file may have been removed by its last holder between our open and our lock:
        # then this lock guards nothing, and we start again on the file now there.
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        # Also the check that the folder takes a write (a full disk fails here, not after
        # the job has paid for its rows).
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {os.uname().nodename}\n".encode(), 0)
        os.fsync(fd)
    except OSError as e:
        _release(folder, fd)
        raise OutputFolderError(
            f"cannot write in {folder}: {e.strerror or e}; nothing was sent"
        ) from None
    return fd


def _release(folder: Path, fd: int) -> None:
    # Unlinked while still locked, so that no other job can hold the same file meanwhile;
    # a job that opened it before the unlink sees it gone (above) and starts again.
    with contextlib.suppress(OSError):
        if os.stat(folder / _LOCK).st_ino == os.fstat(fd).st_ino:
            os.unlink(folder / _LOCK)
    os.close(fd)


# -- the job's settings -------------------------------------------------------------------------


def _records(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(folder.glob(f"{_RECORD}*"))


def read_settings(output: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The settings recorded with the output in `output` (None: none recorded)."""
    records = _records(Path(output))
    if not records:
        return None
    try:
        settings: dict[str, Any] = json.loads(records[0].read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise OutputFolderError(
            f"{records[0]} (the job's recorded settings) cannot be read: {_one_line(e)}"
        ) from None
    return settings


def _write_settings(folder: Path, settings: Mapping[str, Any], run: str) -> None:
    data = json.dumps({**settings, "run": run}, indent=1, sort_keys=True, default=repr)
    _atomic(folder / f"{_RECORD}{run}", lambda f: f.write(data.encode()))


def _normal(settings: Mapping[str, Any]) -> dict[str, Any]:
    # Compared as recorded (JSON): a tuple and a list of stop words are the same setting.
    normal: dict[str, Any] = json.loads(json.dumps(dict(settings), default=repr))
    normal.pop("run", None)
    return normal


def differences(recorded: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """What differs between the folder's recorded settings and this run's, named."""
    old, new = _normal(recorded), _normal(now)
    # Compared only when both say: the API knows no input file, and folders written before
    # the server was recorded do not name it.
    for name in ("input", "server"):
        if old.get(name) is None or new.get(name) is None:
            old.pop(name, None)
            new.pop(name, None)
    return [
        f"{name}: {old.get(name)!r} in the folder, {new.get(name)!r} now"
        for name in sorted(set(old) | set(new))
        if old.get(name) != new.get(name)
    ]


# -- writing one file ---------------------------------------------------------------------------


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


# -- what the folder holds ----------------------------------------------------------------------


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


# -- running a job into a folder ----------------------------------------------------------------


def _exchange(a: Path, b: Path) -> None:
    """Swap two folders in one step (Linux `renameat2(RENAME_EXCHANGE)`).

    Where that is not offered, `b` is moved aside and `a` put in its place: a reader then may
    find no folder for a moment, but never the old and the new rows together.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is not None:
        at_fdcwd, rename_exchange = -100, 2
        if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            raise OSError(code, os.strerror(code), str(b))
    aside = a.with_name(a.name + "-old")
    os.rename(b, aside)
    os.rename(a, b)
    os.rename(aside, a)


def _staging(folder: Path, run: str) -> Path:
    return folder.with_name(f".{folder.name}{_STAGING}{run}")


def _tidy(folder: Path) -> None:
    """Remove what killed runs of ours left: temporary files, and earlier output swapped out.

    A staging folder whose run is the one the folder holds was swapped in, and now holds the
    output it replaced: it goes. One whose run never completed holds paid rows: it stays.
    """
    for tmp in folder.glob(f"{_TMP}*"):
        with contextlib.suppress(OSError):
            tmp.unlink()
    settings = read_settings(folder)
    if settings is not None and settings.get("run"):
        shutil.rmtree(_staging(folder, str(settings["run"])), ignore_errors=True)


def _plain_write(ds: ray.data.Dataset, target: Path, fmt: Format) -> list[str]:
    """Any other Dataset: Ray Data's own writer (a file per block, as Ray writes them)."""
    before = {p.name for p in _row_files(target)}
    if fmt == "json":
        ds.write_json(str(target))
    else:
        ds.write_parquet(str(target))
    return [p.name for p in _row_files(target) if p.name not in before]


def write_output(
    ds: ray.data.Dataset,
    output: str | os.PathLike[str],
    *,
    mode: WriteMode = "new",
    format: Format | None = None,
    keep_failed: bool = False,
    source: str | None = None,
    progress: Progress | None = None,
) -> list[str]:
    """Run the job by writing `ds` to the folder `output`; return the files this run wrote.

    A job of `ray_tir.chat` or `ray_tir.embed` writes each batch as soon as it is answered
    (a kill loses at most the batches being answered); its settings are recorded in the
    folder, and a resume with other settings is refused, naming what differs. One job writes
    to a folder at a time.

    Args:
        ds: the job's rows (`chat(...)` or `embed(...)`; any other Dataset is written with
            Ray Data's own writer, a file per block).
        output: a local folder (or one every Ray node mounts), created when missing.
        mode: "new" (default) refuses a folder that already holds rows, so a job run twice
            never pays twice; "resume" adds this run's files beside the earlier ones (run it
            over `pending(...)`), taking out the earlier rows that carry an error first;
            "overwrite" writes the new output beside the folder and swaps it in whole once
            it is complete (files that are not job output stop it, named).
        format: "parquet" or "json" (JSON Lines); default Parquet, or JSON when `output`
            ends in `.jsonl`. Resuming needs Parquet.
        keep_failed: resuming, leave the rows that carry an error as they are (pass the
            same to `pending`).
        source: what the rows were read from (a file name), recorded with the settings and
            compared when resuming.
        progress: called once per batch a job of `chat` or `embed` writes, with its rows,
            rows with an error, input tokens and output tokens (on the driver).

    Raises:
        OutputFolderError: see `check_output`; another job holds the folder; it cannot be
            written; resuming with other settings. Nothing is sent when it is raised.
        OutputWriteError: writing failed part way (the cause in one line).
        JobStopped: an error every row would hit (the key, the model, the project).
    """
    from ._bulk import job_of  # noqa: TID251 - the job's own parts; _bulk imports this module

    output = os.fspath(output)
    if "://" in output:
        raise OutputFolderError(
            f"{output}: write_output takes a local folder (or one every node mounts); for "
            "object stores, use Ray's own write_parquet"
        )
    fmt: Format = format or ("json" if output.rstrip("/").endswith(".jsonl") else "parquet")
    if mode == "resume" and fmt != "parquet":
        raise OutputFolderError("resuming needs Parquet output (a folder not ending in .jsonl)")
    # Absolute: Ray's workers resolve a relative path from their own working directory. Real:
    # through a symlink, the folder replaced (--overwrite) is the one it points to.
    folder = Path(os.path.realpath(output))
    check_output(folder, mode)  # before the folder is created or locked
    if mode == "overwrite" and folder.is_dir() and _is_mount_point(folder):
        raise OutputFolderError(
            f"{folder} is a mount point: --overwrite writes the new output beside the folder "
            "and swaps the two, which cannot cross filesystems. Write to a new folder "
            "inside it, or empty it first"
        )
    job = job_of(ds)
    settings = None if job is None else {**job.settings, "input": source}
    run = uuid.uuid4().hex[:12]
    with folder_lock(folder):
        _tidy(folder)
        earlier = check_output(folder, mode)
        recorded = read_settings(folder)
        if mode == "resume" and recorded is not None and settings is not None:
            changed = differences(recorded, settings)
            if changed:
                raise OutputFolderError(
                    f"{folder} was written with other settings ({'; '.join(changed)}): "
                    "resuming would mix answers made two ways. Run with the folder's "
                    "settings, or write to another folder (or --overwrite)"
                )
        target = folder
        if mode == "overwrite" and earlier:
            target = _staging(folder, run)
            target.mkdir()
        if settings is not None and (target is not folder or not earlier):
            if target is folder:
                for old in _records(folder):  # an overwrite of a folder holding no rows
                    old.unlink()
            _write_settings(target, settings, run)
        if mode == "resume" and not keep_failed:
            _drop_failed(folder)
        try:
            names = (
                job.run(target, fmt, run, progress)
                if job is not None
                else _plain_write(ds, target, fmt)
            )
        except BaseException:
            # The earlier output is untouched. Rows this run already wrote aside were paid
            # for: they stay in the staging folder (the docs say so); an empty one goes.
            if target is not folder and not _row_files(target):
                shutil.rmtree(target, ignore_errors=True)
            raise
        if target is not folder:
            if not names:
                shutil.rmtree(target, ignore_errors=True)
                raise OutputFolderError(
                    f"the new output has no rows: nothing in {folder} was replaced"
                )
            try:
                _swap_in(folder, target)
            except OSError as e:
                raise OutputWriteError(
                    f"the new output is complete in {target} but could not replace {folder}: "
                    f"{e.strerror or e}"
                ) from e
    return [str(folder / name) for name in names]


def _is_mount_point(folder: Path) -> bool:
    return os.stat(folder).st_dev != os.stat(folder.parent).st_dev


def _swap_in(folder: Path, staging: Path) -> None:
    """Put the complete new output in the folder's place in one step; drop the old output.

    The folder's other files (a README, this job's lock) are linked into the new one first:
    the same files under a second name, never copied or rewritten.
    """
    for path in folder.iterdir():
        is_old = (path.suffix in _ROW_SUFFIXES and not path.name.startswith(".")) or (
            path.name.startswith((_RECORD, _TMP))
        )
        if not is_old and not (staging / path.name).exists():
            os.link(path, staging / path.name, follow_symlinks=False)
    _exchange(staging, folder)
    # Now the staging folder holds the old output; a kill before this line leaves it for the
    # next run's `_tidy`, and a file that cannot be removed leaves it too, outside the folder.
    shutil.rmtree(staging, ignore_errors=True)


# -- what a job cost ----------------------------------------------------------------------------


def _token_rows(paths: Iterable[Path]) -> Iterator[Mapping[str, Any]]:
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


def _model_of(path: Path) -> str | None:
    settings = read_settings(path.parent)
    return None if settings is None else settings.get("model")


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
        `usage` (a `Usage`), `rows`, `rows_with_error`, `rows_without_usage` (answered
        rows whose server reported no usage: not counted, never as zero), and `per_model`
        (model name -> `Usage`, from the settings recorded with a folder's output; empty for
        rows, which do not say which model answered them).

    Raises:
        ValueError: rows without the token columns (not the output of `chat`).
    """
    per_model: dict[str, Usage] = {}
    if isinstance(source, ray.data.Dataset):
        groups: list[tuple[str | None, Iterable[Mapping[str, Any]]]] = [(None, source.iter_rows())]
    elif isinstance(source, str | os.PathLike) or (
        isinstance(source, Sequence) and source and isinstance(source[0], str | os.PathLike)
    ):
        paths = _paths(source)  # type: ignore[arg-type]
        models: dict[Path, str | None] = {}  # a folder's settings read once, not per file
        for path in paths:
            if path.parent not in models:
                models[path.parent] = _model_of(path)
        groups = [(models[path.parent], _token_rows([path])) for path in paths]
    else:
        groups = [(None, source)]  # type: ignore[list-item]
    total, count, errors, unknown = Usage(), 0, 0, 0
    for model, rows in groups:
        for row in rows:
            if "input_tokens" not in row:
                raise ValueError(
                    "these rows have no token columns: usage() sums the output of "
                    "ray_tir.chat (embedding rows carry none: the server counts tokens per "
                    "request, not per text)"
                )
            count += 1
            if row.get("error"):
                errors += 1
            elif row.get("input_tokens") is None:
                unknown += 1
            else:
                tokens = Usage(
                    row["input_tokens"],
                    row["output_tokens"] or 0,
                    row["input_tokens"] + (row["output_tokens"] or 0),
                )
                total = total + tokens
                if model is not None:
                    per_model[model] = per_model.get(model, Usage()) + tokens
    return {
        "usage": total,
        "rows": count,
        "rows_with_error": errors,
        "rows_without_usage": unknown,
        "per_model": per_model,
    }

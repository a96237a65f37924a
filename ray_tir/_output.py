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
import os
import shutil
import uuid
from pathlib import Path

import ray.data

from ._folder import (  # noqa: TID251
    _RECORD,
    _ROW_SUFFIXES,
    _STAGING,
    _TMP,
    Format,
    OutputFolderError,
    OutputWriteError,
    Progress,
    WriteMode,
    _row_files,
)
from ._job import job_of  # noqa: TID251
from ._lock import folder_lock  # noqa: TID251
from ._pending import _drop_failed, check_output  # noqa: TID251
from ._settings import _records, _write_settings, differences, read_settings  # noqa: TID251

__all__ = ["write_output"]


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

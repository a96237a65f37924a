"""`tir-llama batch INPUT OUTPUT` on Ray (its arguments are parsed in tir_llama.cli).

Everything that can be checked without Ray is checked before Ray starts, and said in one
line: the input (exists, a known format, UTF-8, the columns, every line parsed, the ids), the
output folder (not a file, not inside the input, its rows and the decision `--resume` /
`--overwrite` they need), the settings. CSV and JSON Lines are read here, on the driver, so
that a bad line is named by its number and ids keep the form they have in the file.

Exit statuses: 0 every row answered; 1 the job failed part way (a write error, a failure
nobody foresaw); 2 refused before any request; 3 done, but some rows carry an error (resume
to send them again); 4 stopped early on an error every row would hit (the key, the model).
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import csv
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import ray
import ray.data

from ray_tir import (
    CHAT_COLUMNS,
    JobStopped,
    OutputWriteError,
    chat,
    usage,
    write_output,
)
from ray_tir.adapter import (
    WriteMode,
    check_columns,
    check_output,
    done_ids,
    folder_lock,
    parquet_outputs,
    without_done,
)
from tir_transport import (
    DEFAULT_MODEL,
    ApproximateTokenCountWarning,
    TIRConnection,
    Usage,
    context_window,
    count_message_tokens,
    tokenizer_for,
)
from tir_transport.adapter import TOKENS_EXTRA_HINT

from ._words import shell_words

__all__ = ["estimate", "run"]

# pyarrow reads CSV in blocks of 1 MiB by default, and a row longer than a block fails
# ("straddling object straddles two block boundaries"); blocks grow with the longest line.
_MIN_BLOCK = 1 << 20


EXIT_OK, EXIT_FAILED, EXIT_REFUSED, EXIT_ROWS_FAILED, EXIT_STOPPED = 0, 1, 2, 3, 4


class _Refused(Exception):
    """A bad input or output, said in one line (exit status 2)."""


def _format(path: Path, given: str) -> str:
    if "://" in given:
        raise _Refused(f"the input {given} is not a local file: copy it here first")
    if not path.exists():
        raise _Refused(f"the input {path} does not exist")
    if path.is_dir():
        if not any(path.glob("*.parquet")):
            raise _Refused(f"the input folder {path} holds no .parquet files")
        return "parquet"
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".json"):
        return "json"
    if suffix == ".parquet":
        return "parquet"
    raise _Refused(f"cannot tell the format of {path}: use .csv, .jsonl or .parquet")


def _scan_text(path: Path) -> int:
    """Check that the file is UTF-8 (before any row is paid for); return its longest line."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    longest = line = offset = 0
    with path.open("rb") as f:
        while chunk := f.read(_MIN_BLOCK):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as e:
                raise _Refused(
                    f"{path} is not UTF-8 text (byte {chunk[e.start]:#x} at offset "
                    f"{offset + e.start}): save it as UTF-8, e.g. "
                    f"iconv -f latin1 -t utf-8 '{path}' > utf8.{path.suffix.lstrip('.')}"
                ) from None
            parts = chunk.split(b"\n")
            for part in parts[:-1]:
                longest, line = max(longest, line + len(part)), 0
            line += len(parts[-1])
            offset += len(chunk)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise _Refused(f"{path} is not UTF-8 text (it ends inside a character)") from None
    return max(longest, line)


def _columns(path: Path, fmt: str) -> list[str]:
    if fmt == "parquet":
        first = path if path.is_file() else sorted(path.glob("*.parquet"))[0]
        try:
            return list(pq.read_schema(first).names)
        except (OSError, pa.ArrowException) as e:
            raise _Refused(f"{first} cannot be read as Parquet: {e}") from None
    # utf-8-sig: Excel's "CSV UTF-8" starts with a byte-order mark, which is no column name.
    with path.open(encoding="utf-8-sig", newline="") as f:
        if fmt == "csv":
            header = next(csv.reader(f), None)
            if not header:
                raise _Refused(f"{path} is empty: it needs a header line and rows")
            return header
        for text in f:
            if text.strip():
                try:
                    record = json.loads(text)
                except ValueError as e:
                    raise _Refused(f"{path}: the first line is not JSON ({e})") from None
                if not isinstance(record, dict):
                    raise _Refused(f"{path}: each line must be a JSON object")
                return list(record)
    raise _Refused(f"{path} is empty: it holds no rows")


def _check_output_place(output: Path, source: Path, given: str) -> None:
    if "://" in given:
        raise _Refused(
            f"the output {given} is not a local folder: tir-llama batch writes to a local "
            "folder (or one every Ray node mounts)"
        )
    here = Path(os.path.abspath(output))
    if source.is_dir() and here.resolve().is_relative_to(source.resolve()):
        raise _Refused(
            f"the output {output} is inside the input folder {source}: a later run would read "
            "the answers as input. Choose a folder outside it"
        )
    parent = here
    while not parent.exists():
        parent = parent.parent
    if parent != here and not (parent.is_dir() and os.access(parent, os.W_OK)):
        raise _Refused(f"cannot create the output folder {output}: {parent} is not writable")


# A whole number written the one way a number is written: read as a number, it is written
# back exactly as it was ("007", "+7", "7.0" are text, and stay text).
_INTEGER = re.compile(r"0|-?[1-9][0-9]*")  # not "-0": read as 0, it would merge with "0"
_INT64 = range(-(2**63), 2**63)


def _exact_ids(values: list[Any]) -> pa.Array:
    """Ids as the file holds them: whole numbers when every one is, otherwise text."""
    given = [v for v in values if v is not None]
    if given and all(_INTEGER.fullmatch(v) and int(v) in _INT64 for v in given):
        return pa.array([None if v is None else int(v) for v in values], pa.int64())
    return pa.array(values, pa.string())


def _csv_problem(path: Path, width: int) -> str | None:
    """Where a CSV goes wrong, with its line number (pyarrow's message has none)."""
    csv.field_size_limit(sys.maxsize)
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        try:
            for row in reader:
                if row and len(row) != width:
                    return (
                        f"line {reader.line_num} has {len(row)} fields where the header has {width}"
                    )
        except csv.Error as e:
            return f"line {reader.line_num}: {e}"
    return None


def _read_csv(path: Path, block: int, names: list[str], args: argparse.Namespace) -> pa.Table:
    seen: dict[str, int] = {}
    for number, name in enumerate(names, 1):
        if name in seen:
            raise _Refused(
                f"{path}: the header names the column {name!r} twice (columns {seen[name]} "
                f"and {number}): rename one"
            )
        seen[name] = number
    text_columns = {args.prompt_column: pa.string(), args.id_column: pa.string()}
    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=block),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            # A column of numbers is still a column of prompts; ids are decided below.
            convert_options=pacsv.ConvertOptions(
                column_types={k: v for k, v in text_columns.items() if k in names}
            ),
        )
    except (pa.ArrowException, OSError) as e:
        where = _csv_problem(path, len(names)) or " ".join(str(e).split())
        raise _Refused(f"{path}: {where}") from None
    if args.id_column in table.column_names:
        ids = [None if v == "" else v for v in table.column(args.id_column).to_pylist()]
        index = table.column_names.index(args.id_column)
        table = table.set_column(index, args.id_column, _exact_ids(ids))
    return table


def _json_ids(path: Path, values: list[Any], lines: list[int]) -> pa.Array:
    """JSON ids as the file holds them: text stays text, numbers stay numbers, exactly."""
    first: dict[str, tuple[int, Any]] = {}
    for line, value in zip(lines, values, strict=True):
        if value is None:
            continue
        if isinstance(value, str):
            kind = "text"
        elif isinstance(value, int) and not isinstance(value, bool):
            kind = "number"
        else:
            raise _Refused(
                f"{path}, line {line}: the id {json.dumps(value)} is neither text nor a whole "
                "number"
            )
        first.setdefault(kind, (line, value))
    if len(first) > 1:
        (a, text), (b, number) = first["text"], first["number"]
        raise _Refused(
            f"{path}: the ids are text on line {a} ({json.dumps(text)}) and numbers on line "
            f'{b} ({number}): 1 and "1" would be one id. Make them all text or all numbers'
        )
    if "text" in first or not first:
        return pa.array(values, pa.string())
    if all(v is None or v in _INT64 for v in values):
        return pa.array(values, pa.int64())
    # Longer than int64 (a 20-digit id): an exact decimal, never a float that merges them.
    if any(v is not None and len(str(abs(v))) > 38 for v in values):
        raise _Refused(f"{path}: ids longer than 38 digits: write them as text (in quotes)")
    return pa.array(values, pa.decimal128(38, 0))


def _read_jsonl(path: Path, args: argparse.Namespace) -> pa.Table:
    records: list[dict[str, Any]] = []
    lines: list[int] = []
    with path.open(encoding="utf-8-sig") as f:
        for number, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except ValueError as e:
                raise _Refused(
                    f"{path}, line {number}: not JSON ({getattr(e, 'msg', e)} at column "
                    f"{getattr(e, 'colno', '?')})"
                ) from None
            if not isinstance(record, dict):
                raise _Refused(f"{path}, line {number}: not a JSON object ({{...}})")
            records.append(record)
            lines.append(number)
    if not records:
        raise _Refused(f"{path} is empty: it holds no rows")
    names = list(dict.fromkeys(name for record in records for name in record))
    columns: dict[str, pa.Array] = {}
    for name in names:
        values = [record.get(name) for record in records]
        if name == args.id_column:
            columns[name] = _json_ids(path, values, lines)
            continue
        try:
            columns[name] = pa.array(values)
        except (pa.ArrowException, OverflowError):
            kinds = [(line, type(v).__name__) for line, v in zip(lines, values, strict=True)]
            kinds = [(line, kind) for line, kind in kinds if kind != "NoneType"]
            other = next((k for k in kinds if k[1] != kinds[0][1]), kinds[-1])
            raise _Refused(
                f"{path}: the column {name!r} holds {kinds[0][1]} on line {kinds[0][0]} and "
                f"{other[1]} on line {other[0]}: one column, one kind of value"
            ) from None
    return pa.table(columns)


def _load(path: Path, fmt: str, block: int, names: list[str], args: argparse.Namespace) -> Any:
    """The input as an Arrow table (CSV, JSON Lines), or None for Parquet (read by Ray)."""
    if fmt == "csv":
        return _read_csv(path, block, names, args)
    if fmt == "json":
        return _read_jsonl(path, args)
    return None


def _dataset(table: pa.Table | None, path: Path, concurrency: int) -> ray.data.Dataset:
    if table is None:
        return ray.data.read_parquet(str(path))  # typed: its ids keep their type
    # Blocks small enough that every actor gets work, large enough not to flood Ray.
    size = min(4096, max(64, -(-table.num_rows // (4 * max(concurrency, 1)))))
    return ray.data.from_arrow(
        [table.slice(start, size) for start in range(0, max(table.num_rows, 1), size)]
    )


def _line(what: str, totals: dict[str, Any]) -> str:
    tokens: Usage = totals["usage"]
    text = (
        f"{what}: {totals['rows']} rows, {totals['rows_with_error']} with an error; "
        f"{tokens.input_tokens} input + {tokens.output_tokens} output = "
        f"{tokens.total_tokens} tokens"
    )
    if len(totals.get("per_model", {})) > 1:
        text += (
            " ("
            + ", ".join(
                f"{model}: {u.total_tokens}" for model, u in sorted(totals["per_model"].items())
            )
            + ")"
        )
    if totals["rows_without_usage"]:
        text += f" ({totals['rows_without_usage']} answered rows reported no usage: not counted)"
    return text


def _check_input(args: argparse.Namespace) -> tuple[str, int, list[str]]:
    """The input's format, CSV block size and columns, checked (exists, UTF-8, the columns)."""
    source = Path(args.input)
    fmt = _format(source, args.input)
    block = max(_MIN_BLOCK, 2 * _scan_text(source) + 1) if fmt != "parquet" else _MIN_BLOCK
    names = _columns(source, fmt)
    try:
        check_columns(names, args.prompt_column, CHAT_COLUMNS, "--prompt-column")
    except ValueError as e:
        raise _Refused(str(e)) from None
    return fmt, block, names


def _validate(
    args: argparse.Namespace, config: dict[str, Any]
) -> tuple[pa.Table | None, WriteMode]:
    """Every check that needs no Ray and changes nothing; returns the input and write mode."""
    source, output = Path(args.input), Path(args.output)
    mode: WriteMode = "resume" if args.resume else "overwrite" if args.overwrite else "new"
    fmt, block, names = _check_input(args)
    _check_output_place(output, source, args.output)
    if args.resume:
        if args.output.rstrip("/").endswith(".jsonl"):
            raise _Refused("--resume needs Parquet output (a folder not ending in .jsonl)")
        if args.id_column not in names:
            raise _Refused(
                f"--resume needs an id per row: the input has no column {args.id_column!r} "
                f"(it has {', '.join(map(repr, names))}); name it with --id-column"
            )
    check_output(output, mode)
    settings = {k: v for k, v in config.items() if k != "model"}
    model = config.get("model") or DEFAULT_MODEL
    tir = TIRConnection(**settings).tir_config(model)
    tir.require()  # every missing setting, at once
    tir.url("chat/completions", model)  # plain http to a remote host is refused here, too
    return _load(source, fmt, block, names, args), mode


# Run by a small process of its own when this command starts Ray: once the command has
# ended, however it ended (a kill -9 included: its end of the pipe closes), every process
# that carries this job's mark (Ray's, which inherit it) is ended, and every process those
# started. raylet starts its dashboard and runtime-env agents with an environment of its own
# making, without the mark, and Ray kills raylet with its parent (a parent-death signal), so
# by the time the command is gone the agents may already hang under PID 1, out of view; left
# to themselves they outlived a killed command by 20 s and more on a busy machine. So the
# reaper watches the tree while the command runs (a look every half second, a few hundred
# small reads) and remembers every descendant it saw, with its start time, so that a PID
# reused by an unrelated process later is never touched.
_REAPER = """
import os, select, signal, sys
mark = b"TIR_LLAMA_BATCH=" + sys.argv[1].encode()
me = os.getpid()
seen = {}
def look():
    parents, started, doomed = {}, {}, set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == me:
            continue
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            parents[int(pid)], started[int(pid)] = int(fields[1]), fields[19]
            with open(f"/proc/{pid}/environ", "rb") as f:
                if mark in f.read().split(b"\\0"):
                    doomed.add(int(pid))
        except (OSError, ValueError, IndexError):
            pass
    grown = True
    while grown:
        grown = False
        for pid, parent in parents.items():
            if parent in doomed and pid not in doomed:
                doomed.add(pid)
                grown = True
    for pid in doomed:
        seen[pid] = started[pid]
    return started
while not (select.select([0], [], [], 0.5)[0] and not os.read(0, 4096)):
    look()
for _ in range(3):
    started = look()
    for pid, start in seen.items():
        if started.get(pid) == start:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
"""
_reaper: subprocess.Popen[bytes] | None = None


def _start_ray(verbose: bool) -> None:
    global _reaper
    address = os.environ.get("RAY_ADDRESS") or None
    if address is None and os.path.isdir("/proc"):
        mark = uuid.uuid4().hex
        env = {k: v for k, v in os.environ.items() if k != "TIR_LLAMA_BATCH"}
        _reaper = subprocess.Popen(  # noqa: S603 (our own interpreter and code)
            [sys.executable, "-c", _REAPER, mark], stdin=subprocess.PIPE, env=env
        )
        os.environ["TIR_LLAMA_BATCH"] = mark  # inherited by every process Ray starts
    if not verbose:
        _quiet_ray()
    # RAY_ADDRESS names a cluster; without it, a local Ray instance is started (without a
    # dashboard: nobody looks at one for the length of a command).
    try:
        with contextlib.nullcontext() if verbose else _stderr_held():
            ray.init(
                address=address,
                log_to_driver=verbose,
                include_dashboard=False,
                logging_level=logging.INFO if verbose else logging.ERROR,
            )
    finally:
        # Ray's processes have inherited the mark; a process the caller starts later (batch
        # run inside a program of theirs) must not carry it, or the reaper would end it.
        os.environ.pop("TIR_LLAMA_BATCH", None)


@contextlib.contextmanager
def _stderr_held() -> Iterator[None]:
    """Keep what Ray's C++ side writes to stderr while it starts; said only if starting fails.

    (Its core worker announces the log level it was given, whatever that level is.)
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            sys.stderr.write(held.read().decode(errors="replace")[-3000:])
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _quiet_ray() -> None:
    """Ray's own log lines, warnings and block progress bars off: the command says its own."""
    # Read by Ray's C++ core worker when it starts (its "E ... core_worker.cc" lines).
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.enable_operator_progress_bars = False
    warnings.filterwarnings("ignore", module=r"ray(\.|$)")


def _cause(error: BaseException) -> BaseException:
    """The exception Ray's wrappers (RayTaskError, UserCodeException) were raised for."""
    while True:
        inner = getattr(error, "cause", None) or (
            error.__cause__ if "ray" in type(error).__module__ else None
        )
        if not isinstance(inner, BaseException) or inner is error:
            return error
        error = inner


def _clock(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02}:{rest % 60:02}" if hours else f"{rest // 60}:{rest % 60:02}"


class _Progress:
    """Rows answered, said as they come: one line redrawn on a terminal, else a line a while."""

    # When not on a terminal (a log file, CI): a line at the first batch, then at most this often.
    EVERY_SECONDS = 10.0

    def __init__(self, total: int, err: TextIO) -> None:
        self.total, self.err = total, err
        self.tty = err.isatty()
        self.rows = self.errors = self.tokens = 0
        self.started = time.monotonic()
        self.said: float | None = None

    def __call__(self, rows: int, errors: int, input_tokens: int, output_tokens: int) -> None:
        self.rows += rows
        self.errors += errors
        self.tokens += input_tokens + output_tokens
        now = time.monotonic()
        if self.tty:
            print(f"\r{self.line(now)}\x1b[K", end="", file=self.err, flush=True)
        elif self.said is None or now - self.said >= self.EVERY_SECONDS or self.rows >= self.total:
            print(self.line(now), file=self.err, flush=True)
            self.said = now

    def line(self, now: float) -> str:
        """Rows of the total, rows/s, errors, tokens and the time left at this pace."""
        elapsed = max(now - self.started, 1e-9)
        rate = self.rows / elapsed
        share = f" ({100 * self.rows // self.total}%)" if self.total else ""
        left = (
            f", {_clock((self.total - self.rows) / rate)} left"
            if rate and self.rows < self.total
            else ""
        )
        return (
            f"{self.rows:,}/{self.total:,} rows{share}, {rate:.1f} rows/s, "
            f"{self.errors:,} with an error, {self.tokens:,} tokens{left}"
        )

    def done(self) -> None:
        """End the redrawn line (on a terminal)."""
        if self.tty and self.rows:
            print(file=self.err, flush=True)


def _ids(table: pa.Table | None, args: argparse.Namespace) -> list[Any]:
    if table is None:
        return list(pq.read_table(args.input, columns=[args.id_column]).column(0).to_pylist())
    return list(table.column(args.id_column).to_pylist())


def _rows(table: pa.Table | None, path: Path) -> int:
    if table is not None:
        return int(table.num_rows)
    files = [path] if path.is_file() else sorted(path.glob("*.parquet"))
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


def _check_parquet_fits(table: pa.Table | None, source: str) -> None:
    """Refuse columns Parquet cannot store before paying for answers it could not write."""
    if table is None:
        return  # read from Parquet: it fits
    row = table.slice(0, 1)
    for name, kind in (
        ("response", pa.string()),
        ("finish_reason", pa.string()),
        ("input_tokens", pa.int64()),
        ("output_tokens", pa.int64()),
        ("error", pa.string()),
    ):
        if name not in row.column_names:
            row = row.append_column(name, pa.nulls(1, kind))
    try:
        pq.write_table(row, pa.BufferOutputStream())
    except pa.ArrowException as e:
        raise _Refused(
            f"the rows of {source} cannot be written to Parquet ({' '.join(str(e).split())}): "
            "write JSON Lines instead (an OUTPUT ending in .jsonl), or leave the column out"
        ) from None


def _align_ids(table: pa.Table | None, args: argparse.Namespace) -> pa.Table | None:
    """The input's ids in the type the folder holds them in, when that changes no id.

    CSV ids are typed from the whole file: rows appended since the first run (an id `A10`
    after `1`..`9`) change the type of all of them.

    Raises:
        _Refused: an id that cannot be the folder's type (named with its row), before Ray.
    """
    if table is None or args.id_column not in table.column_names:
        return table
    files = parquet_outputs(Path(args.output), args.id_column)
    if not files:
        return table
    held = pq.read_schema(files[0]).field(args.id_column).type
    column = table.column(args.id_column)
    if column.type == held:
        return table
    values = column.to_pylist()
    if pa.types.is_integer(held) and pa.types.is_string(column.type):
        for row, value in enumerate(values, 1):
            if value is not None and not (_INTEGER.fullmatch(value) and int(value) in _INT64):
                raise _Refused(
                    f"row {row} of {args.input} has the id {value!r}, but the ids in "
                    f"{args.output} are whole numbers: a resume keeps the ids' type. Give "
                    "that row a whole-number id, or write to another folder (or --overwrite)"
                )
        aligned = pa.array([None if v is None else int(v) for v in values], pa.int64())
    elif pa.types.is_string(held) and pa.types.is_integer(column.type):
        aligned = pa.array([None if v is None else str(v) for v in values], pa.string())
    else:
        raise _Refused(
            f"the ids of {args.input} are {column.type} and those in {args.output} are {held}: "
            "a resume keeps the ids' type; write to another folder (or --overwrite)"
        )
    return table.set_column(table.column_names.index(args.id_column), args.id_column, aligned)


def _check_unique_ids(table: pa.Table | None, id_column: str) -> None:
    """Refuse ids that repeat: a later --resume could not tell their rows apart.

    (A Parquet input is not read on the driver: a resume checks its ids as it reads them.)
    """
    if table is None or id_column not in table.column_names:
        return
    counts = pc.value_counts(table.column(id_column)).to_pylist()
    repeated = [c["values"] for c in counts if c["counts"] > 1]
    if repeated:
        shown = ", ".join("(empty)" if v is None else str(v) for v in repeated[:3])
        raise _Refused(
            f"the ids in {id_column!r} are not unique ({shown} repeat): --resume could not "
            "tell their rows apart. Give every row its own id (--id-column names the column)"
        )


def run(args: argparse.Namespace, config: dict[str, Any], out: TextIO, err: TextIO) -> int:
    """Run the job: check, read, answer every (pending) row, write, print the usage.

    Progress and errors go to `err`, the summary to `out`.
    """
    started = time.monotonic()
    try:
        table, mode = _validate(args, config)
        total = _rows(table, Path(args.input))
        if total == 0:
            raise _Refused(
                f"{args.input} holds no rows: nothing was sent, and nothing in {args.output} "
                "was written or replaced"
            )
        _check_unique_ids(table, args.id_column)
        if not args.output.rstrip("/").endswith(".jsonl"):
            _check_parquet_fits(table, args.input)
        if args.resume:
            table = _align_ids(table, args)
            done = done_ids(args.output, args.id_column, keep_failed=args.keep_failed)
            if done:
                total = sum(1 for i in _ids(table, args) if i not in done)
    except (_Refused, ValueError) as e:  # ConfigurationError and OutputFolderError included
        print(f"error: {shell_words(str(e))}", file=err)
        return EXIT_REFUSED
    if total == 0:
        # Answered without Ray: starting it takes longer than reading the folder.
        holds = usage(args.output)
        print(f"nothing to do: every row of {args.input} is in {args.output}", file=out)
        print(_line(f"{args.output} holds", holds), file=out)
        return EXIT_ROWS_FAILED if holds["rows_with_error"] else EXIT_OK
    print(f"{total:,} rows to answer; starting Ray", file=err, flush=True)
    if not ray.is_initialized():
        _start_ray(args.verbose)
    request = {
        name: value
        for name, value in {
            "temperature": args.temperature,
            "max_tokens": args.max_tokens,
            "top_p": args.top_p,
            "seed": args.seed,
        }.items()
        if value is not None
    }
    progress = _Progress(total, err)
    try:
        # One job per folder, from the first read of the folder to the last file written.
        with folder_lock(args.output):
            ds = _dataset(table, Path(args.input), args.concurrency)
            if args.resume:
                done = done_ids(args.output, args.id_column, keep_failed=args.keep_failed)
                ds = without_done(ds, done, args.id_column)
            result = chat(
                ds,
                prompt_column=args.prompt_column,
                system=args.system,
                concurrency=args.concurrency,
                max_in_flight=args.max_in_flight,
                requests_per_minute=args.rpm,
                **config,
                **request,
            )
            written = write_output(
                result,
                args.output,
                mode=mode,
                keep_failed=args.keep_failed,
                source=str(Path(args.input).resolve()),
                progress=progress,
            )
    except ValueError as e:  # OutputFolderError (the folder, the lock, the settings), ids
        progress.done()
        print(f"error: {e}", file=err)
        return EXIT_REFUSED
    except JobStopped as e:
        progress.done()
        print(
            f"error: the job stopped early: {e}. Rows answered before it are written; "
            "--resume once it is fixed",
            file=err,
        )
        return EXIT_STOPPED
    except OutputWriteError as e:
        progress.done()
        print(f"error: {e}", file=err)
        return EXIT_FAILED
    except Exception as e:
        progress.done()
        # Ray wraps a failure in its own (a task error: the cause's frames, in colour); the
        # command's one line names the cause.
        cause = _cause(e)
        if cause is e:
            raise
        raise cause from e
    progress.done()
    print(f"{_line('this run', usage(written))}; {_clock(time.monotonic() - started)}", file=out)
    holds = usage(args.output)
    print(_line(f"{args.output} holds", holds), file=out)
    return EXIT_ROWS_FAILED if holds["rows_with_error"] else EXIT_OK


def _prompts(table: pa.Table | None, args: argparse.Namespace) -> list[Any]:
    if table is None:
        return list(pq.read_table(args.input, columns=[args.prompt_column]).column(0).to_pylist())
    return list(table.column(args.prompt_column).to_pylist())


def estimate(args: argparse.Namespace, config: dict[str, Any], out: TextIO, err: TextIO) -> int:
    """`--estimate`: rows, prompt tokens, an output bound and a cost bound; nothing is sent.

    Prompt tokens are counted as vLLM counts them (the chat template and Llama's tokenizer,
    offline, with the `[tokens]` extra; approximately without it). With `--resume` and an
    OUTPUT, only the rows it does not hold yet are counted.
    """
    model = config.get("model") or DEFAULT_MODEL
    try:
        fmt, block, names = _check_input(args)
        table = _load(Path(args.input), fmt, block, names, args)
        prompts = _prompts(table, args)
        if args.resume and args.output and Path(args.output).is_dir():
            done = done_ids(args.output, args.id_column, keep_failed=args.keep_failed)
            prompts = [p for p, i in zip(prompts, _ids(table, args), strict=True) if i not in done]
    except (_Refused, ValueError) as e:
        print(f"error: {shell_words(str(e))}", file=err)
        return EXIT_REFUSED
    exact = tokenizer_for(model).exact
    system = [{"role": "system", "content": args.system}] if args.system else []
    sent = [p for p in prompts if isinstance(p, str) and p.strip()]
    with warnings.catch_warnings():
        # Said once below, in the command's words.
        warnings.simplefilter("ignore", ApproximateTokenCountWarning)
        counts = [
            count_message_tokens(model, [*system, {"role": "user", "content": p}]) for p in sent
        ]
    input_tokens = sum(counts)
    skipped = len(prompts) - len(sent)
    dropped = f" ({skipped:,} with an empty prompt: not sent, they carry an error)"
    print(f"rows:          {len(prompts):,}{dropped if skipped else ''}", file=out)
    how = (
        "exact, Llama's tokenizer and chat template"
        if exact
        else f"approximate: {TOKENS_EXTRA_HINT} for exact counts, offline"
    )
    print(f"input tokens:  {input_tokens:,} ({how}; model {model})", file=out)
    window = context_window(model)
    if args.max_tokens is not None:
        output_bound: int | None = len(sent) * args.max_tokens
        print(
            f"output tokens: at most {output_bound:,} ({len(sent):,} rows x --max-tokens "
            f"{args.max_tokens:,})",
            file=out,
        )
    elif window:
        # Without --max-tokens an answer may fill what the window leaves after its prompt.
        output_bound = sum(max(window - c, 0) for c in counts)
        print(
            f"output tokens: at most {output_bound:,} (no --max-tokens: each answer may fill "
            f"the {window:,}-token window after its prompt; set --max-tokens for a useful bound)",
            file=out,
        )
    else:
        output_bound = None
        print(
            "output tokens: no bound (no --max-tokens, and the model's window is not known)",
            file=out,
        )
    if args.input_price is not None or args.output_price is not None:
        price_in, price_out = args.input_price or 0.0, args.output_price or 0.0
        if output_bound is None and price_out:
            print("cost:          no bound: set --max-tokens", file=out)
        else:
            cost = input_tokens * price_in / 1e6 + (output_bound or 0) * price_out / 1e6
            print(
                f"cost:          at most {cost:,.4f} ({input_tokens:,} x {price_in:g} + "
                f"{output_bound or 0:,} x {price_out:g} per million tokens)",
                file=out,
            )
    print("nothing was sent (--estimate)", file=err)
    return EXIT_OK

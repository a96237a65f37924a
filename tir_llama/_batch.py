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
import csv
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, TextIO

import pyarrow as pa
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
from ray_tir._bulk import check_columns
from ray_tir._output import WriteMode, check_output, done_ids, folder_lock, without_done
from tir_transport import DEFAULT_MODEL, TIRConnection, Usage

__all__ = ["run"]

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
_INTEGER = re.compile(r"-?(0|[1-9][0-9]*)")
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


def _validate(
    args: argparse.Namespace, config: dict[str, Any]
) -> tuple[pa.Table | None, WriteMode]:
    """Every check that needs no Ray and changes nothing; returns the input and write mode."""
    source, output = Path(args.input), Path(args.output)
    mode: WriteMode = "resume" if args.resume else "overwrite" if args.overwrite else "new"
    fmt = _format(source, args.input)
    block = max(_MIN_BLOCK, 2 * _scan_text(source) + 1) if fmt != "parquet" else _MIN_BLOCK
    names = _columns(source, fmt)
    try:
        check_columns(names, args.prompt_column, CHAT_COLUMNS, "--prompt-column")
    except ValueError as e:
        raise _Refused(str(e)) from None
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
# that carries this job's mark (Ray's, which inherit it) is ended, so none is left running.
_REAPER = """
import os, signal, sys
sys.stdin.buffer.read()
mark = b"TIR_LLAMA_BATCH=" + sys.argv[1].encode()
for _ in range(3):
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if mark not in f.read().split(b"\\0"):
                    continue
            os.kill(int(pid), signal.SIGKILL)
        except OSError:
            pass
"""
_reaper: subprocess.Popen[bytes] | None = None


def _start_ray() -> None:
    global _reaper
    address = os.environ.get("RAY_ADDRESS") or None
    if address is None and os.path.isdir("/proc"):
        mark = uuid.uuid4().hex
        env = {k: v for k, v in os.environ.items() if k != "TIR_LLAMA_BATCH"}
        _reaper = subprocess.Popen(  # noqa: S603 (our own interpreter and code)
            [sys.executable, "-c", _REAPER, mark], stdin=subprocess.PIPE, env=env
        )
        os.environ["TIR_LLAMA_BATCH"] = mark  # inherited by every process Ray starts
    # RAY_ADDRESS names a cluster; without it, a local Ray instance is started (without a
    # dashboard: nobody looks at one for the length of a command).
    ray.init(address=address, log_to_driver=False, include_dashboard=False)


def _cause(error: BaseException) -> BaseException:
    """The exception Ray's wrappers (RayTaskError, UserCodeException) were raised for."""
    while True:
        inner = getattr(error, "cause", None) or (
            error.__cause__ if "ray" in type(error).__module__ else None
        )
        if not isinstance(inner, BaseException) or inner is error:
            return error
        error = inner


def run(args: argparse.Namespace, config: dict[str, Any], out: TextIO) -> int:
    """Run the job: check, read, answer every (pending) row, write, print the usage."""
    try:
        table, mode = _validate(args, config)
    except (_Refused, ValueError) as e:  # ConfigurationError and OutputFolderError included
        print(f"error: {e}", file=out)
        return EXIT_REFUSED
    if not ray.is_initialized():
        _start_ray()
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
            )
    except ValueError as e:  # OutputFolderError (the folder, the lock, the settings), ids
        print(f"error: {e}", file=out)
        return EXIT_REFUSED
    except JobStopped as e:
        print(
            f"error: the job stopped early: {e}. Rows answered before it are written; "
            "--resume once it is fixed",
            file=out,
        )
        return EXIT_STOPPED
    except OutputWriteError as e:
        print(f"error: {e}", file=out)
        return EXIT_FAILED
    except Exception as e:
        # Ray wraps a failure in its own (a task error: the cause's frames, in colour); the
        # command's one line names the cause.
        cause = _cause(e)
        if cause is e:
            raise
        raise cause from e
    print(_line("this run", usage(written)), file=out)
    holds = usage(args.output)
    print(_line(f"{args.output} holds", holds), file=out)
    return EXIT_ROWS_FAILED if holds["rows_with_error"] else EXIT_OK

"""`batch`'s input, read and checked on the driver before Ray starts.

The format, UTF-8, the columns; CSV and JSON Lines read into Arrow here, so that a bad line is
named by its number and ids keep the form they have in the file (Parquet is read by Ray).
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import csv
import json
import re
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ray_tir import CHAT_COLUMNS
from ray_tir.adapter import check_columns

# pyarrow reads CSV in blocks of 1 MiB by default, and a row longer than a block fails
# ("straddling object straddles two block boundaries"); blocks grow with the longest line.
_MIN_BLOCK = 1 << 20


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


_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
# pyarrow's block size is a signed 32-bit number.
_MAX_BLOCK = 2**31 - 1


def _scan_text(path: Path) -> int:
    """Check that the file is UTF-8 (before any row is paid for); return its longest line."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    longest = line = offset = 0
    with path.open("rb") as f:
        while chunk := f.read(_MIN_BLOCK):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as e:
                # A UTF-16 file (Excel's "Unicode text") starts with its byte order mark.
                source = "utf-16" if offset == 0 and chunk[:2] in _UTF16_BOMS else "latin1"
                raise _Refused(
                    f"{path} is not UTF-8 text (byte {chunk[e.start]:#x} at offset "
                    f"{offset + e.start}): save it as UTF-8, e.g. "
                    f"iconv -f {source} -t utf-8 '{path}' > utf8.{path.suffix.lstrip('.')}"
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


def _json_names(path: Path) -> list[str]:
    """Every key of every line of a JSON Lines file, in the order they first appear."""
    names: dict[str, None] = {}
    with path.open(encoding="utf-8-sig") as f:
        for text in f:
            with contextlib.suppress(ValueError):  # a bad line is named when it is read
                record = json.loads(text) if text.strip() else {}
                names.update(dict.fromkeys(record if isinstance(record, dict) else ()))
    return list(names)


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

    def read(block_size: int) -> pa.Table:
        return pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=block_size),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            # A column of numbers is still a column of prompts; ids are decided below.
            convert_options=pacsv.ConvertOptions(
                column_types={k: v for k, v in text_columns.items() if k in names}
            ),
        )

    try:
        try:
            table = read(block)
        except pa.ArrowInvalid as e:
            if "straddl" not in str(e):
                raise
            # A quoted value of many short lines is longer than its longest line: one block
            # for the whole file (it is read whole anyway), as far as pyarrow's blocks go.
            table = read(min(path.stat().st_size + 1, _MAX_BLOCK))
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
            huge = next(
                (line for line, v in zip(lines, values, strict=True) if _beyond_int64(v)), None
            )
            if huge is not None:
                raise _Refused(
                    f"{path}, line {huge}: the column {name!r} holds a whole number too large "
                    "to store (over 64 bits): write it as a string (in quotes)"
                ) from None
            other = next((k for k in kinds if k[1] != kinds[0][1]), kinds[-1])
            raise _Refused(
                f"{path}: the column {name!r} holds {kinds[0][1]} on line {kinds[0][0]} and "
                f"{other[1]} on line {other[0]}: one column, one kind of value"
            ) from None
    return pa.table(columns)


def _beyond_int64(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value not in _INT64


def _load(path: Path, fmt: str, block: int, names: list[str], args: argparse.Namespace) -> Any:
    """The input as an Arrow table (CSV, JSON Lines), or None for Parquet (read by Ray)."""
    if fmt == "csv":
        return _read_csv(path, block, names, args)
    if fmt == "json":
        return _read_jsonl(path, args)
    return None


def _check_input(args: argparse.Namespace) -> tuple[str, int, list[str]]:
    """The input's format, CSV block size and columns, checked (exists, UTF-8, the columns)."""
    source = Path(args.input)
    fmt = _format(source, args.input)
    block = max(_MIN_BLOCK, 2 * _scan_text(source) + 1) if fmt != "parquet" else _MIN_BLOCK
    names = _columns(source, fmt)
    if fmt == "json" and args.prompt_column not in names:
        # Read from the first line; a later line may hold it (the first row then has none,
        # and carries an error as a row with an empty prompt does).
        names = _json_names(source)
    try:
        check_columns(names, args.prompt_column, CHAT_COLUMNS, "--prompt-column")
    except ValueError as e:
        raise _Refused(str(e)) from None
    return fmt, block, names

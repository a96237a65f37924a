"""`tir-llama batch INPUT OUTPUT` on Ray (its arguments are parsed in tir_transport._cli)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any, TextIO

import pyarrow.parquet as pq
import ray
import ray.data

from tir_transport import TIRConfig, Usage

from ._bulk import CHAT_COLUMNS, _check_columns, chat, pending

__all__ = ["run"]


def _read(path: str) -> ray.data.Dataset:
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return ray.data.read_csv(path)
    if suffix in (".jsonl", ".json"):
        return ray.data.read_json(path, lines=True)
    if suffix == ".parquet" or Path(path).is_dir():
        return ray.data.read_parquet(path)
    raise SystemExit(f"error: cannot tell the format of {path}: use .csv, .jsonl or .parquet")


def _totals(output: str) -> dict[str, Any]:
    """Usage of every row in the output folder (earlier runs' rows too, after --resume)."""
    usage, rows, errors, unknown = Usage(), 0, 0, 0
    for path in sorted(Path(output).iterdir()):
        if path.suffix == ".parquet":
            columns = ["input_tokens", "output_tokens", "error"]
            records = pq.read_table(path, columns=columns).to_pylist()
        elif path.suffix in (".json", ".jsonl"):
            records = [json.loads(line) for line in path.read_text().splitlines() if line]
        else:
            continue
        for record in records:
            rows += 1
            if record.get("error"):
                errors += 1
            elif record.get("input_tokens") is None:
                unknown += 1
            else:
                i, o = record["input_tokens"], record.get("output_tokens") or 0
                usage = usage + Usage(i, o, i + o)
    return {"usage": usage, "rows": rows, "errors": errors, "unknown": unknown}


def run(args: argparse.Namespace, config: dict[str, Any], out: TextIO) -> int:
    """Run the job: read, answer every (pending) row, write, print the usage."""
    jsonl = args.output.rstrip("/").endswith(".jsonl")
    if args.resume and jsonl:
        print("error: --resume needs Parquet output (a folder not ending in .jsonl)", file=out)
        return 2
    # Missing settings are named before Ray starts, not after.
    TIRConfig.from_env(**config).require()
    if not ray.is_initialized():
        # RAY_ADDRESS names a cluster; without it, a local Ray instance is started.
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, log_to_driver=False)
    ds = _read(args.input)
    # Read from the first file only; a bad input is a line of advice, not a job that fails.
    schema = ds.schema()
    names = list(schema.names) if schema is not None else []
    try:
        _check_columns(names, args.prompt_column, CHAT_COLUMNS, "--prompt-column")
    except ValueError as e:
        print(f"error: {e}", file=out)
        return 2
    if args.resume:
        if args.id_column not in names:
            print(
                f"error: --resume needs an id column; {args.id_column!r} is not in the input",
                file=out,
            )
            return 2
        ds = pending(ds, args.output, id_column=args.id_column)
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
    if jsonl:
        result.write_json(args.output)
    else:
        result.write_parquet(args.output)
    totals = _totals(args.output)
    usage: Usage = totals["usage"]
    print(
        f"{args.output}: {totals['rows']} rows, {totals['errors']} with an error; "
        f"{usage.input_tokens} input + {usage.output_tokens} output = {usage.total_tokens} "
        "tokens",
        file=out,
    )
    if totals["unknown"]:
        print(f"{totals['unknown']} answered rows reported no usage: not counted", file=out)
    return 0

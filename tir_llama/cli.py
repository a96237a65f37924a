"""`tir-llama`: check a configuration (`doctor`), chat in the terminal, run a job (`batch`).

Results go to stdout; errors, prompts, progress and usage to stderr. Exit statuses: 0 done,
1 a request or the job failed, 2 refused before any request (the same missing setting gives 2
in every command), 3 and 4 batch's own (see `_batch`), 130 Ctrl-C.

Here: `main`, and `batch` up to the import of Ray. `_parser` is the command line's parser,
`_doctor` and `_chat` the two commands, `_common` what they share.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TextIO

from tir_transport import ConfigurationError

from ._chat import chat
from ._common import EXIT_FAILED, EXIT_OK, EXIT_REFUSED, _connection, _one_line
from ._doctor import doctor
from ._parser import parser
from ._words import shell_words

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_REFUSED", "batch", "chat", "doctor", "main", "parser"]


def batch(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Run a chat job over a table on Ray (`ray_tir`), imported only for this command."""
    if args.output is None and not args.estimate:
        print("error: batch needs an OUTPUT folder (or --estimate)", file=err)
        return EXIT_REFUSED
    if (args.input_price is not None or args.output_price is not None) and not args.estimate:
        print("error: --input-price and --output-price go with --estimate", file=err)
        return EXIT_REFUSED
    try:
        from tir_llama import _batch
    except ImportError as e:
        print(
            f'error: tir-llama batch needs Ray and pyarrow ({e}): pip install "tir-llama[ray]"',
            file=err,
        )
        return EXIT_REFUSED
    config = _connection(args)
    if args.model:
        config["model"] = args.model
    if args.estimate:
        return _batch.estimate(args, config, out, err)
    return _batch.run(args, config, out, err)


def main(
    argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Run the `tir-llama` command line.

    Args:
        argv: the arguments (default: the process's).
        out: where results go (default: stdout).
        err: where errors, progress and prompts go (default: stderr; `out` when only `out`
            is given, so that a caller capturing one stream sees everything).
    """
    err = err or out or sys.stderr
    out = out or sys.stdout
    args = parser().parse_args(argv)
    try:
        if args.command == "doctor":
            return doctor(args, out, err)
        if args.command == "batch":
            return batch(args, out, err)
        return chat(args, out, err, sys.stdin)
    except ConfigurationError as e:
        print(f"error: {shell_words(str(e))}", file=err)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        print(file=err)
        return 130
    except Exception as e:
        if args.debug:
            raise
        # One line, not a screen of Ray and pyarrow frames; the frames are one flag away.
        print(
            f"error: {type(e).__name__}: {_one_line(e)[:500]} (run again with --debug for the "
            "traceback)",
            file=err,
        )
        return EXIT_FAILED


if __name__ == "__main__":
    raise SystemExit(main())

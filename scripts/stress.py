"""Run the timing-sensitive tests (marked `timing`) several times beside busy processes.

`make test-stress`: two processes spin on the CPU (the machine has two cores) for the whole
run, and `pytest -m timing` must pass every round. A test that fails here bounds a wall-clock
duration instead of what the code promises.

Usage: python scripts/stress.py [--rounds N] [--busy N] [-- extra pytest arguments]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPIN = "while True: pass"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="pytest runs, all must pass")
    parser.add_argument("--busy", type=int, default=2, help="processes spinning beside them")
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    args = parser.parse_args(argv)

    busy = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(args.busy)]
    results: list[tuple[int, float]] = []
    try:
        for round_ in range(1, args.rounds + 1):
            print(f"== stress round {round_}/{args.rounds}, {args.busy} busy processes", flush=True)
            started = time.monotonic()
            command = [sys.executable, "-m", "pytest", "-m", "timing", "-q", *args.pytest_args]
            code = subprocess.run(command, cwd=ROOT, check=False).returncode
            results.append((code, time.monotonic() - started))
            if code != 0:
                break
    finally:
        for process in busy:  # only the processes started here
            process.kill()
        for process in busy:
            process.wait()
    for round_, (code, seconds) in enumerate(results, 1):
        print(f"round {round_}: {'passed' if code == 0 else 'FAILED'} in {seconds:.0f} s")
    ok = len(results) == args.rounds and all(code == 0 for code, _ in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Run benchmarks: ``python -m benchmarks --quick|--full [names...]``.

Discovers the ``benchmarks/bench_*.py`` modules, runs each one's ``main([mode])`` (all of them, or those
named), and exits non-zero if any of them fails.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from pathlib import Path


def discover() -> list[str]:
    """Return the names (without the ``bench_`` prefix) of all benchmark modules, sorted."""
    here = Path(__file__).resolve().parent
    return sorted(p.stem.removeprefix("bench_") for p in here.glob("bench_*.py"))


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks in the selected mode; return 0 only if all of them succeed."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_const", const="--quick", dest="mode", help="seconds each")
    mode.add_argument("--full", action="store_const", const="--full", dest="mode", help="full settings")
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    args = parser.parse_args(argv)
    flag = args.mode or "--quick"
    available = discover()
    unknown = [n for n in args.names if n not in available]
    if unknown:
        parser.error(
            f"unknown benchmark(s) {', '.join(unknown)}; available: {', '.join(available) or 'none'}"
        )
    failed = []
    for name in args.names or available:
        print(f"== benchmarks.bench_{name} {flag}", flush=True)
        try:
            module = importlib.import_module(f"benchmarks.bench_{name}")
            rc = module.main([flag])
        except Exception:
            traceback.print_exc()
            rc = 1
        if rc:
            failed.append(name)
    if failed:
        print(f"failed benchmarks: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

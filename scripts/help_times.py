#!/usr/bin/env python
"""Time ``python scripts/X.py --help`` for every script in scripts/ (a fresh interpreter each).

Prints one row per script: wall time, exit status, and ``OVER`` where the time is above ``--bar``
(default 3.0 s, the start-up goal of issue 19). Exits 1 if any script is over the bar or fails.

    python scripts/help_times.py
    python scripts/help_times.py --bar 2 --repeat 3 train.py bd_rate.py

Times depend on how busy the machine is: ``--repeat N`` keeps the best of N runs. Whether a script
imports torch at ``--help`` is checked by tests/test_script_help.py, not here.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

SCRIPTS_DIR = Path(__file__).resolve().parent
REPO = SCRIPTS_DIR.parent


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Wall time of `python scripts/X.py --help` for every script.")
    p.add_argument("scripts", nargs="*",
                   help="script names or paths (default: every scripts/*.py except __init__.py)")
    p.add_argument("--bar", type=float, default=3.0, help="seconds; a script above it is marked OVER (default 3.0)")
    p.add_argument("--repeat", type=int, default=1, help="runs per script; the best time is kept (default 1)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds before a run is killed (default 120)")
    p.add_argument("--python", default=sys.executable, help="interpreter to run the scripts with")
    return p.parse_args(argv)


def script_paths(names) -> list:
    if not names:
        return sorted(p for p in SCRIPTS_DIR.glob("*.py") if p.name != "__init__.py")
    out = []
    for name in names:
        path = Path(name)
        if not path.suffix:
            path = path.with_suffix(".py")
        if not path.exists():
            path = SCRIPTS_DIR / path.name
        if not path.exists():
            raise SystemExit(f"help_times: no such script: {name}")
        out.append(path.resolve())
    return out


def time_help(python: str, script: Path, timeout: float):
    """(seconds, exit status) of one ``python script --help`` run from the repository root."""
    start = time.perf_counter()
    try:
        proc = subprocess.run([python, str(script), "--help"], cwd=REPO, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, timeout=timeout)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        rc = "timeout"
    return time.perf_counter() - start, rc


def main(argv=None) -> int:
    args = parse_args(argv)
    paths = script_paths(args.scripts)
    width = max(len(p.name) for p in paths)
    print(f"{'script':<{width}}  {'seconds':>8}  {'rc':>7}  (bar {args.bar:.1f} s, best of {args.repeat})")
    bad = []
    for path in paths:
        runs = [time_help(args.python, path, args.timeout) for _ in range(max(1, args.repeat))]
        seconds, rc = min(runs, key=lambda r: r[0])
        if any(r[1] != 0 for r in runs):
            rc = next(r[1] for r in runs if r[1] != 0)
        over = seconds > args.bar or rc != 0
        mark = "OVER" if seconds > args.bar else ""
        if rc != 0:
            mark = (mark + " FAILED").strip()
        print(f"{path.name:<{width}}  {seconds:8.2f}  {str(rc):>7}  {mark}", flush=True)
        if over:
            bad.append(path.name)
    if bad:
        print(f"{len(bad)} of {len(paths)} over the bar of {args.bar:.1f} s or failed: {', '.join(bad)}")
        return 1
    print(f"all {len(paths)} scripts under {args.bar:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""CSV files of the rate search: names, writing, and reading the answers back.

One file per (beta_vq, target): ``result_beta_vq_{beta_vq:.2f}_target_rate_{target:.3f}.csv``
(the reference's names; a value those digits do not hold exactly is written in full, e.g.
``target_rate_0.6613``, so distinct targets never share a file)
with columns ``run_cnt, beta_vq, beta_rate, avg_bpp, diff, status``: one row per evaluated
beta_rate (``run_cnt`` = the pass over the set that evaluated it, ``diff = avg_bpp - target``,
status ``eval``), then a last row holding the answer, whose status is ``converged``,
``max_runs`` (best point found), ``unreachable_high`` or ``unreachable_low``.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Dict, Iterable, List, Optional

from src.ratecontrol.search import CONVERGED, SearchResult

COLUMNS = ("run_cnt", "beta_vq", "beta_rate", "avg_bpp", "diff", "status")
SUMMARY_COLUMNS = ("beta_vq", "target_rate", "method", "status", "beta_rate", "avg_bpp", "diff",
                   "passes", "evaluations")


def exact_label(value: float, digits: int) -> str:
    """``value`` with ``digits`` decimals when they hold it exactly (``0.1 -> '0.100'``), else its
    shortest exact form (``0.6613 -> '0.6613'``): distinct values never get the same label."""
    short = f"{value:.{digits}f}"
    return short if float(short) == float(value) else repr(float(value))


def search_csv_name(beta_vq: float, target: float) -> str:
    """``result_beta_vq_2.00_target_rate_0.100.csv`` (see the module doc for other values)."""
    return f"result_beta_vq_{exact_label(beta_vq, 2)}_target_rate_{exact_label(target, 3)}.csv"


def _write_rows(path: Path, columns: Iterable[str], rows: Iterable[Dict]) -> None:
    """Write a CSV atomically (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(columns))
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def write_search_csv(save_dir: Path, beta_vq: float, result: SearchResult) -> Path:
    """The per-(beta_vq, target) CSV (see module doc); returns its path."""
    t = result.target
    rows = [{"run_cnt": p, "beta_vq": beta_vq, "beta_rate": b, "avg_bpp": v, "diff": v - t,
             "status": "eval"} for p, b, v in sorted(result.rows, key=lambda r: (r[0], r[1]))]
    last_pass = max((p for p, _, _ in result.rows), default=0)
    rows.append({"run_cnt": last_pass, "beta_vq": beta_vq, "beta_rate": result.beta_rate,
                 "avg_bpp": result.avg_bpp, "diff": result.diff, "status": result.status})
    path = save_dir / search_csv_name(beta_vq, t)
    _write_rows(path, COLUMNS, rows)
    return path


def write_summary(path: Path, rows: List[Dict]) -> None:
    """``search_summary.csv``: one row per (beta_vq, target) with the evaluation counts."""
    _write_rows(path, SUMMARY_COLUMNS, rows)


def summary_row(beta_vq: float, method: str, r: SearchResult) -> Dict:
    """One ``search_summary.csv`` row of a result."""
    return {"beta_vq": beta_vq, "target_rate": r.target, "method": method, "status": r.status,
            "beta_rate": r.beta_rate, "avg_bpp": r.avg_bpp, "diff": r.diff,
            "passes": r.passes, "evaluations": r.evaluations}


def read_search_answer(search_dir: Path, beta_vq: float, target: float) -> Optional[Dict]:
    """The answer row of one search CSV as a dict (floats, status), or None if no file.

    CSVs without a ``status`` column (the published script's) count as converged.
    """
    path = Path(search_dir) / search_csv_name(beta_vq, target)
    if not path.is_file():
        return None
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return None
    last = rows[-1]
    return {"beta_vq": float(last["beta_vq"]), "beta_rate": float(last["beta_rate"]),
            "avg_bpp": float(last["avg_bpp"]), "diff": float(last["diff"]),
            "status": last.get("status") or CONVERGED, "path": str(path)}

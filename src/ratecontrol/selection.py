"""Choosing one (beta_vq, beta_rate) pair per target bpp, and using the choice.

Stage 2, step 3 of DC-VIC: among the candidates of a target (one per beta_vq, beta_rate from
the rate search), pick the one maximising ``score = alpha * PSNR - FID`` (alpha = 2 as
published). :func:`betas_for_target_bpp` then turns the selection table into betas for any bpp
between the targets (linear interpolation of both betas).
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Sequence, Tuple

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

SELECTION_FILE = "beta_selection_results.csv"
SELECTION_COLUMNS = ("target_rate", "selected_beta_vq", "selected_beta_rate")


def score_candidates(table: pd.DataFrame, alpha: float = 2.0) -> pd.DataFrame:
    """A copy of ``table`` (columns psnr, fid, ...) with ``score = alpha * psnr - fid``."""
    out = table.copy()
    out["score"] = alpha * out["psnr"].astype(float) - out["fid"].astype(float)
    return out


def select_betas(table: pd.DataFrame, alpha: float = 2.0) -> pd.DataFrame:
    """Pure selection: per ``target_rate``, the row with the highest score.

    ``table`` columns: target_rate, beta_vq, beta_rate, psnr, fid. Rows with a missing
    psnr/fid/score are ignored; ties go to the first row. Returns columns
    ``target_rate, selected_beta_vq, selected_beta_rate`` sorted by target_rate.
    """
    scored = score_candidates(table, alpha).dropna(subset=["psnr", "fid", "score"])
    if scored.empty:
        raise ValueError("no candidate with both PSNR and FID to select from")
    best = scored.loc[scored.groupby("target_rate", sort=True)["score"].idxmax()]
    return pd.DataFrame({"target_rate": best["target_rate"].to_numpy(float),
                         "selected_beta_vq": best["beta_vq"].to_numpy(float),
                         "selected_beta_rate": best["beta_rate"].to_numpy(float)})


def yaml_snippet(selection: pd.DataFrame) -> str:
    """The ``model:`` block of ``exp1_stage3.yaml`` for a selection table."""
    rates = [f"    {r:.3f},  # {t:.3f} bpp" for t, r in
             zip(selection["target_rate"], selection["selected_beta_rate"])]
    vqs = [f"    {v:.2f},  # {t:.3f} bpp" for t, v in
           zip(selection["target_rate"], selection["selected_beta_vq"])]
    return "\n".join(["model:", "  use_selected_beta_pairs: true", "  selected_beta_rate: [",
                      *rates, "  ]", "  selected_beta_vq: [", *vqs, "  ]"])


def write_selection(selection: pd.DataFrame, *folders: Path) -> list[Path]:
    """Write ``beta_selection_results.csv`` into each folder; returns the paths."""
    paths = []
    for folder in folders:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / SELECTION_FILE
        selection.loc[:, list(SELECTION_COLUMNS)].to_csv(path, index=False, float_format="%.6g")
        paths.append(path)
    return paths


def read_selection(selection_csv: Path | str) -> pd.DataFrame:
    """Read a selection table, sorted by target_rate, checking its columns."""
    table = pd.read_csv(selection_csv)
    missing = [c for c in SELECTION_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{selection_csv}: missing columns {missing} (expected {SELECTION_COLUMNS})")
    if table.empty:
        raise ValueError(f"{selection_csv}: no rows")
    return table.sort_values("target_rate").reset_index(drop=True)


def betas_for_target_bpp(selection_csv: Path | str, target_bpp: float) -> Tuple[float, float]:
    """``(beta_rate, beta_vq)`` for ``target_bpp``, interpolated linearly between the targets.

    Outside the range of the table the nearest end is used, with a warning. The result is the
    betas of the validation-set *mean* bpp; a single image's bpp will differ.
    """
    table = read_selection(selection_csv)
    t = table["target_rate"].to_numpy(float)
    lo, hi = float(t[0]), float(t[-1])
    if not lo <= target_bpp <= hi:
        msg = (f"target bpp {target_bpp} is outside the selected range [{lo}, {hi}] of "
               f"{selection_csv}; using the nearest end")
        warnings.warn(msg, stacklevel=2)
        log.warning(msg)
    x = float(np.clip(target_bpp, lo, hi))
    beta_rate = float(np.interp(x, t, table["selected_beta_rate"].to_numpy(float)))
    beta_vq = float(np.interp(x, t, table["selected_beta_vq"].to_numpy(float)))
    return beta_rate, beta_vq


def candidate_table(search_dir: Path, beta_vqs: Sequence[float], targets: Sequence[float],
                    usable=("converged", "non_monotone")) -> pd.DataFrame:
    """Candidates (target_rate, beta_vq, beta_rate, avg_bpp, status) read from the search CSVs.

    Missing files and answers whose status is not in ``usable`` are left out with a warning;
    ``non_monotone`` answers are kept (each is within tolerance of its target) with a warning.
    """
    from src.ratecontrol.records import read_search_answer, search_csv_name

    rows = []
    for t in targets:
        for bv in beta_vqs:
            ans = read_search_answer(search_dir, bv, t)
            if ans is None:
                log.warning("no search result %s in %s: skipped", search_csv_name(bv, t), search_dir)
            elif ans["status"] not in usable:
                log.warning("beta_vq %.2f, target %.3f: search status %s, skipped", bv, t, ans["status"])
            else:
                if ans["status"] != "converged":
                    log.warning("beta_vq %.2f, target %.3f: search status %s (the rate is not monotone in "
                                "beta_rate): used, but the model does not control its rate yet", bv, t, ans["status"])
                rows.append({"target_rate": float(t), "beta_vq": float(bv), "beta_rate": ans["beta_rate"],
                             "avg_bpp": ans["avg_bpp"], "status": ans["status"]})
    return pd.DataFrame(rows, columns=["target_rate", "beta_vq", "beta_rate", "avg_bpp", "status"])

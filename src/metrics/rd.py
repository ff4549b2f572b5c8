"""Rate-distortion tables and plots: our CSVs beside the published DC-VIC curves.

An RD table is a CSV with a ``bpp`` column, one column per metric (any case: ``PSNR`` or
``psnr``) and optionally a ``model`` column holding several curves. Column names are
lower-cased on loading; a metric column with no value for a curve is dropped from that curve.
Published curves live in ``data/rd_results/<dataset>.csv`` (DC-VIC) and
``data/rd_results/<dataset>_<model>.csv`` (other methods, e.g. ``kodak_ms_illm.csv``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from src.metrics.bd import higher_is_better

PUBLISHED_DIR = Path(__file__).resolve().parents[2] / "data" / "rd_results"
PLOT_METRICS = ("psnr", "ms_ssim", "lpips", "dists", "fid", "kid")
AXIS_LABELS = {"psnr": "PSNR [dB]", "ms_ssim": "MS-SSIM", "lpips": "LPIPS (AlexNet)",
               "dists": "DISTS", "fid": "FID (256 patches)", "kid": "KID"}

Curve = tuple[str, pd.DataFrame]


def load_rd_csv(path: str | Path, label: str | None = None) -> list[Curve]:
    """Read an RD CSV; one curve per ``model`` value (labelled ``label/model``), else one curve.

    Columns that are empty (all NaN) for a curve are dropped from it, so ``metric in df`` means
    the curve has values for that metric.
    """
    df = pd.read_csv(path, float_precision="round_trip")  # values exactly as written
    df.columns = [c.strip().lower().replace("-", "_") for c in df.columns]
    if "bpp" not in df:
        raise ValueError(f"{path}: no 'bpp' column (columns: {', '.join(df.columns)})")
    base = label or Path(path).stem
    if "model" not in df:
        return [(base, _tidy(df))]
    curves = []
    for model, part in df.groupby("model", sort=False):
        name = str(model) if label is None else f"{label}/{model}"
        curves.append((name, _tidy(part)))
    return curves


def _tidy(df: pd.DataFrame) -> pd.DataFrame:
    return df.dropna(axis=1, how="all").sort_values("bpp").reset_index(drop=True)


def published_files(dataset: str) -> list[Path]:
    """``<dataset>.csv`` then ``<dataset>_*.csv`` (one file per further method) in PUBLISHED_DIR."""
    name = dataset.lower()
    main = PUBLISHED_DIR / f"{name}.csv"
    return ([main] if main.is_file() else []) + sorted(PUBLISHED_DIR.glob(f"{name}_*.csv"))


def published_curves(dataset: str = "kodak", models: Sequence[str] | None = None) -> list[Curve]:
    """Published curves for ``dataset`` (kodak, clic, div2k), optionally only some models.

    Labels are ``"<model> (published)"``; ``models`` uses the bare names (``dc_vic_patchgan``,
    ``ms_illm``). Curves come from every file of :func:`published_files`.
    """
    paths = published_files(dataset)
    if not paths:
        avail = sorted({p.stem.split("_")[0] for p in PUBLISHED_DIR.glob("*.csv")})
        raise FileNotFoundError(f"no published results for '{dataset}'; available: {avail}")
    curves = [c for path in paths for c in load_rd_csv(path) if models is None or c[0] in models]
    if not curves:
        found = [c[0] for path in paths for c in load_rd_csv(path)]
        raise ValueError(f"none of the models {list(models or [])} in {[p.name for p in paths]}; "
                         f"available: {found}")
    return [(f"{name} (published)", df) for name, df in curves]


def plot_rd(curves: Sequence[Curve], out_path: str | Path, reference: Sequence[Curve] = (),
            metrics: Sequence[str] | None = None, title: str = "") -> list[Path]:
    """One subplot per metric (bpp on x); ``reference`` curves dashed. Saves PNG and PDF.

    ``metrics`` defaults to every metric of :data:`PLOT_METRICS` present in some curve.
    ``out_path``'s suffix is ignored; returns the two written paths.
    """
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    every = list(curves) + list(reference)
    if not every:
        raise ValueError("nothing to plot")
    metrics = list(metrics or [m for m in PLOT_METRICS if any(m in df for _, df in every)])
    if not metrics:
        raise ValueError(f"no metric column among {PLOT_METRICS}")
    fig = Figure(figsize=(4.2 * len(metrics), 3.6))
    axes = fig.subplots(1, len(metrics), squeeze=False)
    colors = {label: f"C{i % 10}" for i, (label, _) in enumerate(every)}  # same colour per curve
    for ax, metric in zip(axes[0], metrics):
        for style, group in (("--", reference), ("-", curves)):
            for label, df in group:
                if metric in df and df[metric].notna().any():
                    ax.plot(df["bpp"], df[metric], style, color=colors[label], marker="o", ms=3,
                            label=label)
        arrow = "higher is better" if higher_is_better(metric) else "lower is better"
        ax.set(xlabel="bpp", ylabel=AXIS_LABELS.get(metric, metric), title=arrow)
        ax.grid(alpha=0.3)
    handles = {}
    for ax in axes[0]:  # one legend with every curve, even those missing from the first panel
        handles.update(zip(*ax.get_legend_handles_labels()[::-1]))
    axes[0][0].legend(list(handles.values()), list(handles.keys()), fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(out_path).with_suffix("")
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = [out.with_suffix(".png"), out.with_suffix(".pdf")]
    for p in paths:
        fig.savefig(p, dpi=150)
    return paths

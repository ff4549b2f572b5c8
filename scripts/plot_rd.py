"""Plot rate-distortion curves (bpp vs PSNR / LPIPS / DISTS / FID ...) beside published ones
(DC-VIC PatchGAN / OASIS and MS-ILLM, from data/rd_results/).

    python scripts/plot_rd.py --csv ours.csv:Ours --csv ablation.csv:no-VQ \\
        --dataset kodak --out docs/figures/rd_kodak

Each ``--csv`` is ``PATH[:LABEL]``; the CSV needs a ``bpp`` column and metric columns
(``psnr``, ``lpips``, ``dists``, ``fid``, ...; any case), optionally a ``model`` column.
Writes ``OUT.png`` and ``OUT.pdf``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `src` importable without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def split_csv_arg(value: str) -> tuple[Path, str | None]:
    """``path.csv:Label`` -> (path, label); a bare path has no label."""
    path, sep, label = value.rpartition(":")
    if sep and path.lower().endswith(".csv"):
        return Path(path), label or None
    return Path(value), None


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--csv", action="append", default=[], help="PATH[:LABEL], repeatable")
    p.add_argument("--dataset", default="kodak", help="published curves: kodak, clic, div2k")
    p.add_argument("--published", default="all",
                   help="comma-separated published models to show ('all', or 'none')")
    p.add_argument("--metrics", default=None, help="comma-separated metrics (default: all present)")
    p.add_argument("--out", required=True, type=Path, help="output path without suffix")
    p.add_argument("--title", default=None)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    missing = [path for path, _ in map(split_csv_arg, args.csv) if not Path(path).is_file()]
    if missing:
        print(f"error: --csv {', '.join(map(str, missing))}: no such file", file=sys.stderr)
        return 2
    from src.metrics.rd import load_rd_csv, plot_rd, published_curves  # pandas, torch: after parse_args

    curves = []
    for item in args.csv:
        curves += load_rd_csv(*split_csv_arg(item))
    reference = []
    if args.published != "none":
        models = None if args.published == "all" else args.published.split(",")
        reference = published_curves(args.dataset, models)
    metrics = args.metrics.split(",") if args.metrics else None
    paths = plot_rd(curves, args.out, reference, metrics, args.title or args.dataset.capitalize())
    print("wrote", *paths)
    return 0


if __name__ == "__main__":
    sys.exit(main())

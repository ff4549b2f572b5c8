"""Compare reconstructions with originals: PSNR, MS-SSIM, LPIPS, DISTS, patch FID/KID.

    python scripts/calc_metrics.py --real_dir datasets/kodak --fake_dir out/kodak_q2 -d cuda

Images are paired by file stem. Writes ``_metrics.json`` (means, skipped metrics and why; a
non-finite mean such as the PSNR of identical images is written as null and listed under
``non_finite``) and ``_metrics_per_image.csv`` into ``--save_path`` (default: the fake dir) and prints a summary.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `src` importable without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# src.metrics.evaluate.ALL_METRICS, written out here: that module imports torch, and --help must not
# (tests/test_script_help.py checks that the two agree).
METRIC_NAMES = ("psnr", "ms_ssim", "lpips", "dists", "fid", "kid")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--real_dir", required=True, type=Path, help="original images")
    p.add_argument("--fake_dir", required=True, type=Path, help="reconstructions (same stems)")
    p.add_argument("-d", "--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--metrics", default=None,
                   help=f"comma-separated subset of {','.join(METRIC_NAMES)} (or 'all'). Default: all of "
                        "them, skipping those whose weights are missing; a metric named here that cannot "
                        "be computed makes the exit status 1")
    p.add_argument("--save_path", type=Path, default=None,
                   help="folder for _metrics.json and the per-image CSV (default: fake_dir)")
    p.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from src.metrics.evaluate import ALL_METRICS, evaluate_dirs, format_summary, parse_metrics, save_result

    try:
        metrics = parse_metrics(args.metrics or ",".join(ALL_METRICS))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    result = evaluate_dirs(args.real_dir, args.fake_dir, metrics, args.device,
                           progress=not args.no_progress)
    json_path, csv_path = save_result(result, args.save_path or args.fake_dir,
                                      args.real_dir, args.fake_dir)
    print(format_summary(result))
    print(f"wrote {json_path} and {csv_path}")
    missing = list(result.skipped) if args.metrics is not None else []
    if missing:
        print(f"error: asked for {', '.join(missing)}, which could not be computed (see SKIPPED above)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Find, for each (beta_vq, target bpp), the beta_rate whose mean estimated bpp on the
validation set is within --error_delta of the target (DC-VIC stage 2, step 2).

    python scripts/binary_rate_search.py ./config/exp1_stage1_3.yaml \
        --model_path ./checkpoint/exp1_stage1_3/model/comp_model_iter500K.pth.tar \
        --save_dir ./bin_search/exp1_stage1_3 \
        --dataset_root ./datasets/openimage_validation_vq/vq_f8_n256/crop_256_2000_seed_0 \
        --batch_size 16 --max_beta_rate 3.0 \
        --beta_vq 0.25 0.5 0.75 1.0 1.25 1.5 1.75 2.0 2.25 2.5 2.75 3.0 3.25 3.5 \
        --target_rate 0.05 0.075 0.1 0.125 0.15

Methods (see src/ratecontrol/search.py):
  batched    (default) K beta_rates per pass (--betas_per_pass), one memoised bpp curve per
             beta_vq serving all its targets (--separate_targets: a fresh curve per target);
             --max_runs bounds the passes per curve.
  bisection  the published procedure: one midpoint per pass, per target; --max_runs bounds
             the passes per target.
  both       batched into save_dir, bisection into save_dir/bisection, and a comparison.
Counts: "passes" = passes over the set; "evaluations" = (image, beta_rate) rate evaluations.
Only the rate path runs (cached VQ indices, g_a, entropy models; no decoder).

Writes result_beta_vq_{:.2f}_target_rate_{:.3f}.csv per pair (a value those digits do not hold is
written in full; last row = the answer, with a status column: converged / non_monotone / max_runs /
unreachable_high / unreachable_low), search_summary.csv
and binary_rate_search.log into save_dir.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `src` importable without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.utils.cli import add_trust_checkpoint_flag  # noqa: E402  (light: no torch)
from src.utils.preflight import codec_inputs  # noqa: E402  (light: no torch)

# src.ratecontrol (pandas; torch for the model) is imported where used, after parse_args.
log = logging.getLogger("binary_rate_search")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="model config (e.g. config/exp1_stage1_3.yaml)")
    p.add_argument("--model_path", default=None, help="checkpoint; omitted = random init (smoke tests)")
    p.add_argument("--save_dir", required=True, type=Path)
    p.add_argument("--dataset_root", required=True, type=Path, help="crop folder (PNG + .npy)")
    p.add_argument("--batch_size", type=int, default=16, help="images per forward (x K betas)")
    p.add_argument("--max_beta_rate", type=float, default=None,
                   help="top of the search range (default: the model's, model.beta_space.max_rate)")
    p.add_argument("--beta_vq", type=float, nargs="+", required=True)
    p.add_argument("--target_rate", type=float, nargs="+", required=True)
    p.add_argument("--error_delta", type=float, default=0.001)
    p.add_argument("--max_runs", type=int, default=10)
    p.add_argument("--method", choices=("batched", "bisection", "both"), default="batched")
    p.add_argument("--betas_per_pass", type=int, default=8, help="K of the batched search")
    p.add_argument("--separate_targets", action="store_true",
                   help="batched: a fresh curve per target instead of one per beta_vq")
    p.add_argument("--max_images", type=int, default=None, help="use only the first N crops")
    add_trust_checkpoint_flag(p)
    p.add_argument("-d", "--device", default="cpu")
    p.add_argument("--opt", nargs="*", default=[], help="config overrides key.sub=value")
    return p.parse_args(argv)


def search_one_beta_vq(rate_fn, n_images: int, beta_vq: float, args, method: str):
    """All targets of one beta_vq with one method -> list of SearchResult (order of targets)."""
    from src.ratecontrol.search import BppCurve, batched_search, bisection_search

    targets, m = list(args.target_rate), args.max_beta_rate
    if method == "bisection":
        return [bisection_search(BppCurve(rate_fn, n_images), t, m, args.error_delta, args.max_runs)
                for t in targets]
    if args.separate_targets:
        return [batched_search(BppCurve(rate_fn, n_images), [t], m, args.error_delta,
                               args.max_runs, args.betas_per_pass)[0] for t in targets]
    return batched_search(BppCurve(rate_fn, n_images), targets, m, args.error_delta,
                          args.max_runs, args.betas_per_pass)


def run_method(model, data, args, method: str, save_dir: Path) -> list:
    """Search every beta_vq with ``method``; write the CSVs; return the summary rows."""
    from src.ratecontrol.rate import ModelRateFunction
    from src.ratecontrol.records import summary_row, write_search_csv, write_summary
    from src.ratecontrol.search import CONVERGED

    rows = []
    for bv in args.beta_vq:
        rate_fn = ModelRateFunction(model, data, bv, args.batch_size, args.betas_per_pass)
        results = search_one_beta_vq(rate_fn, len(data), bv, args, method)
        for r in results:
            write_search_csv(save_dir, bv, r)
            rows.append(summary_row(bv, method, r))
            line = f"[{method}] beta_vq {bv:.2f}: " + r.message(args.max_beta_rate)
            (log.info if r.status == CONVERGED else log.warning)(line)
        if method == "batched" and not args.separate_targets:
            log.info("[batched] beta_vq %.2f: %d passes, %d evaluations for %d targets", bv,
                     max(r.passes for r in results), max(r.evaluations for r in results), len(results))
    write_summary(save_dir / "search_summary.csv", rows)
    return rows


def comparison(rows_a: list, rows_b: list, shared_curve: bool = True) -> str:
    """Totals of passes / evaluations per method (shared batched curve: per-curve maxima)."""
    def totals(rows):
        per_curve = {}
        for r in rows:
            key = (r["method"], r["beta_vq"])
            p, e = per_curve.get(key, (0, 0))
            if r["method"] == "batched" and shared_curve:   # cumulative counts on one curve
                per_curve[key] = (max(p, r["passes"]), max(e, r["evaluations"]))
            else:
                per_curve[key] = (p + r["passes"], e + r["evaluations"])
        return sum(v[0] for v in per_curve.values()), sum(v[1] for v in per_curve.values())
    (pa, ea), (pb, eb) = totals(rows_a), totals(rows_b)
    return (f"batched: {pa} passes, {ea} (image, beta) evaluations | "
            f"bisection: {pb} passes, {eb} evaluations")


def main(argv=None) -> int:
    """Run the script; returns the exit status (0 on success)."""
    args = parse_args(argv)
    if codec_inputs(args.config, args.opt, args.model_path, dirs={"--dataset_root": (
            args.dataset_root, "build the crops with scripts/build_openimage_val_dataset.py")}).failed():
        return 2
    from src.models.codec.loading import load_codec
    from src.ratecontrol.search import CONVERGED
    from src.ratecontrol.valset import load_val_set
    from src.utils.logger import setup_logging

    args.save_dir.mkdir(parents=True, exist_ok=True)
    setup_logging(args.save_dir / "binary_rate_search.log")
    log.info("arguments: %s", vars(args))
    model, _ = load_codec(args.config, args.model_path, args.device, args.opt, trust=args.trust_checkpoint)
    if args.max_beta_rate is None:
        args.max_beta_rate = model.beta_space.max_rate
    elif not 0 < args.max_beta_rate <= model.beta_space.max_rate:
        log.error("--max_beta_rate must lie in (0, %g], the model's range", model.beta_space.max_rate)
        return 2
    data = load_val_set(args.dataset_root, args.max_images)
    log.info("%d crops from %s (VQ indices %s)", len(data), args.dataset_root,
             "stored" if data.indices is not None else "computed once")
    if args.separate_targets:  # per-target curves: comparable to bisection per target
        log.info("batched search with a fresh curve per target")
    methods = ("batched", "bisection") if args.method == "both" else (args.method,)
    rows = {}
    for method in methods:
        out = args.save_dir / "bisection" if args.method == "both" and method == "bisection" else args.save_dir
        rows[method] = run_method(model, data, args, method, out)
    if args.method == "both":
        log.info("cost: %s", comparison(rows["batched"], rows["bisection"],
                                             not args.separate_targets))
    failed = [r for rs in rows.values() for r in rs if r["status"] != CONVERGED]
    log.info("done: %d of %d searches converged; CSVs in %s",
             sum(len(r) for r in rows.values()) - len(failed), sum(len(r) for r in rows.values()),
             args.save_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())

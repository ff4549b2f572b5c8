"""Select one (beta_vq, beta_rate) pair per target bpp (DC-VIC stage 2, step 3).

    python scripts/beta_selection.py ./config/exp1_stage1_3.yaml \
        --model_path ./checkpoint/exp1_stage1_3/model/comp_model_iter500K.pth.tar \
        --save_dir ./beta_selection/exp1_stage1_3 --search_dir ./bin_search/exp1_stage1_3 \
        --dataset_root ./datasets/openimage_validation_vq/vq_f8_n256/crop_256_2000_seed_0 \
        --batch_size 8 \
        --beta_vq 0.25 0.5 0.75 1.0 1.25 1.5 1.75 2.0 2.25 2.5 2.75 3.0 3.25 3.5 \
        --target_rate 0.05 0.075 0.1 0.125 0.15

For each target, every beta_vq whose search converged (its beta_rate read from the search
CSVs) reconstructs the validation set; PSNR (mean over images) and patch FID (256 patches:
whole crops on the 256 set) give ``score = alpha * PSNR - FID``; the best pair wins.
Writes ``candidates_target_rate_{:.3f}.csv`` per target and ``beta_selection_results.csv``
into save_dir and search_dir, and prints the ``model:`` block for exp1_stage3.yaml.

--fid_features random uses a seeded random conv net instead of Inception-v3, for offline
smoke tests only: its FID numbers, and hence the selection, MEAN NOTHING.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `src` importable without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.utils.cli import add_trust_checkpoint_flag  # noqa: E402  (light: no torch)
from src.utils.preflight import Preflight, codec_inputs  # noqa: E402  (light: no torch)

# pandas and src.ratecontrol (pandas, torch) are imported where used, after parse_args.
log = logging.getLogger("beta_selection")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config")
    p.add_argument("--model_path", default=None, help="checkpoint; omitted = random init (smoke tests)")
    p.add_argument("--save_dir", required=True, type=Path)
    p.add_argument("--search_dir", required=True, type=Path, help="save_dir of binary_rate_search.py")
    p.add_argument("--dataset_root", required=True, type=Path)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--beta_vq", type=float, nargs="+", required=True)
    p.add_argument("--target_rate", type=float, nargs="+", required=True)
    p.add_argument("--alpha", type=float, default=2.0, help="score = alpha * PSNR - FID")
    p.add_argument("--fid_features", choices=("inception", "random"), default="inception",
                   help="random: offline smoke test only, meaningless FID")
    p.add_argument("--patch_size", type=int, default=256, help="FID patch side (capped at the crop side)")
    p.add_argument("--max_images", type=int, default=None, help="use only the first N crops")
    add_trust_checkpoint_flag(p)
    p.add_argument("-d", "--device", default="cpu")
    p.add_argument("--opt", nargs="*", default=[], help="config overrides key.sub=value")
    return p.parse_args(argv)


def evaluate_target(evaluator, cands: pd.DataFrame, target: float, save_dir: Path,
                    alpha: float) -> pd.DataFrame:
    """PSNR / FID / score of every candidate of one target; writes its CSV."""
    import pandas as pd

    from src.ratecontrol.records import exact_label
    from src.ratecontrol.selection import score_candidates

    rows = []
    for _, c in cands.iterrows():
        q = evaluator(c["beta_vq"], c["beta_rate"])
        rows.append({**c.to_dict(), "psnr": q["psnr"], "fid": q["fid"], "bpp": q["bpp"]})
        log.info("target %.3f beta_vq %.2f beta_rate %.4f: bpp %.4f PSNR %.3f FID %.3f", target,
                 c["beta_vq"], c["beta_rate"], q["bpp"], q["psnr"], q["fid"])
    table = score_candidates(pd.DataFrame(rows), alpha)
    table.to_csv(save_dir / f"candidates_target_rate_{exact_label(target, 3)}.csv", index=False, float_format="%.6g")
    return table


def make_evaluator(args, data):
    """Model + feature extractor -> QualityEvaluator (exits with a hint if Inception is missing)."""
    from src.metrics import MetricUnavailable
    from src.models.codec.loading import load_codec
    from src.ratecontrol.quality import QualityEvaluator, build_feature_extractor
    from src.ratecontrol.rate import ensure_vq_indices

    try:
        extractor = build_feature_extractor(args.fid_features, args.device)
    except MetricUnavailable as e:
        raise SystemExit(f"{e}\n(offline smoke test: --fid_features random, meaningless FID)")
    if args.fid_features == "random":
        log.warning("--fid_features random: FID from a random conv net; the numbers and the "
                    "selection MEAN NOTHING (pipeline test only)")
    model, _ = load_codec(args.config, args.model_path, args.device, args.opt, trust=args.trust_checkpoint)
    ensure_vq_indices(model, data, args.batch_size)
    side = min(data.images.shape[-2:])
    patch = min(args.patch_size, side)
    if patch != args.patch_size:
        log.warning("crops are %d px: FID patches of %d instead of %d", side, patch, args.patch_size)
    return QualityEvaluator(model, data, args.batch_size, extractor, patch)


def main(argv=None) -> int:
    """Run the script; returns the exit status (0 on success)."""
    args = parse_args(argv)
    pf = Preflight()
    if args.fid_features == "inception":
        from src.utils.weight_files import FID_INCEPTION_FILE, FID_INCEPTION_URL, hub_checkpoint_dir

        pf.downloadable("--fid_features inception", hub_checkpoint_dir() / FID_INCEPTION_FILE, "github.com",
                        FID_INCEPTION_URL)
    if codec_inputs(args.config, args.opt, args.model_path, pf=pf, dirs={
            "--search_dir": (args.search_dir, "the --save_dir of scripts/binary_rate_search.py"),
            "--dataset_root": (args.dataset_root, "scripts/build_openimage_val_dataset.py builds it")}).failed():
        return 2
    import pandas as pd

    from src.ratecontrol.selection import candidate_table, select_betas, write_selection, yaml_snippet
    from src.ratecontrol.valset import load_val_set
    from src.utils.logger import setup_logging

    args.save_dir.mkdir(parents=True, exist_ok=True)
    setup_logging(args.save_dir / "beta_selection.log")
    log.info("arguments: %s", vars(args))
    cands = candidate_table(args.search_dir, args.beta_vq, args.target_rate)
    if cands.empty:
        log.error("no converged search results in %s for these beta_vq / targets", args.search_dir)
        return 2
    data = load_val_set(args.dataset_root, args.max_images)
    evaluator = make_evaluator(args, data)
    tables = [evaluate_target(evaluator, cands[cands["target_rate"] == t], t, args.save_dir, args.alpha)
              for t in args.target_rate if (cands["target_rate"] == t).any()]
    missing = [t for t in args.target_rate if not (cands["target_rate"] == t).any()]
    if missing:
        log.warning("no usable candidate for targets %s: left out of the selection", missing)
    selection = select_betas(pd.concat(tables, ignore_index=True), args.alpha)
    paths = write_selection(selection, args.save_dir, args.search_dir)
    log.info("selection written to %s", ", ".join(map(str, paths)))
    print(selection.to_string(index=False))
    print("\n# for config/exp1_stage3.yaml:")
    print(yaml_snippet(selection))
    return 0


if __name__ == "__main__":
    sys.exit(main())

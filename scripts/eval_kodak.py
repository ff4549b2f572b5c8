"""Kodak (or any folder) rate-distortion evaluation from real files.

    python scripts/eval_kodak.py --config_path config/dc_vic_patchgan.yaml --model_path dc_vic_patchgan.pth.tar \
        --img_dir datasets/kodak --save_dir results/kodak -q 0 1 2 3 4 -d cuda [--metrics psnr,ms_ssim,lpips,dists]

For each quality (or each ``--target_bpp`` with ``--selection_csv``): compress to .bin files,
decode them as a receiver would, compute the metrics. Writes ``rd.csv`` with one row per rate
point (bpp from file sizes) and the columns of the published ``data/rd_results/kodak.csv``
(model, quality, bpp, PSNR, LPIPS, DISTS, ...), ready for scripts/plot_rd.py and scripts/bd_rate.py.
Metrics whose pretrained weights are missing are skipped with a message naming the file.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.utils.cli import add_trust_checkpoint_flag  # noqa: E402  (light: no torch)
from src.utils.preflight import codec_inputs  # noqa: E402  (light: no torch)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config_path", required=True)
    p.add_argument("--model_path", required=True)
    p.add_argument("--img_dir", required=True)
    p.add_argument("--save_dir", required=True)
    p.add_argument("-q", "--quality", type=float, nargs="+", default=None)
    p.add_argument("--target_bpp", type=float, nargs="+", default=None)
    p.add_argument("--selection_csv", default=None)
    p.add_argument("--metrics", default="psnr,ms_ssim,lpips,dists")
    p.add_argument("--model_name", default=None, help="label in the CSV (default: the config's name)")
    add_trust_checkpoint_flag(p)
    p.add_argument("-d", "--device", default="cuda")
    p.add_argument("--opt", nargs="+", default=[], metavar="KEY=VALUE")
    return p.parse_args(argv)


def rate_points(args, model):
    if (args.quality is None) == (args.target_bpp is None):
        raise SystemExit("error: give -q QUALITIES or --target_bpp RATES")
    if args.quality is not None:
        return [(q, *model.beta_space.pair(q)) for q in args.quality]
    if not args.selection_csv:
        raise SystemExit("error: --target_bpp needs --selection_csv")
    from src.ratecontrol import betas_for_target_bpp

    return [(t, *betas_for_target_bpp(args.selection_csv, t)) for t in args.target_bpp]


def main(argv=None) -> int:
    args = parse_args(argv)
    if codec_inputs(args.config_path, args.opt, args.model_path,
                    dirs={"--img_dir": (args.img_dir, "give a folder of images")},
                    files={"--selection_csv": (args.selection_csv, "scripts/beta_selection.py writes it")}).failed():
        return 2   # every missing input at once, before torch is imported
    import pandas as pd  # torch, compressai, pandas: after parse_args

    from src.compression import device_or_cpu, evaluate_rate_point
    from src.models.codec.image_coder import ImageCoder
    from src.models.codec.loading import load_codec

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    device = device_or_cpu(args.device)
    model, _ = load_codec(args.config_path, args.model_path, device, args.opt, trust=args.trust_checkpoint)
    coder = ImageCoder(model, device=device)
    name = args.model_name or Path(args.config_path).stem
    rows = []
    for label, beta_rate, beta_vq in rate_points(args, model):
        row = evaluate_rate_point(coder, args.img_dir, Path(args.save_dir) / f"point_{label:g}", beta_rate, beta_vq,
                                  args.metrics, device=device)
        rows.append({"model": name, "quality": label, **row})
        print(f"{name} {label:g}: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items() if isinstance(v, float)))
    out = Path(args.save_dir) / "rd.csv"
    pd.DataFrame(rows).to_csv(out, index=False)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

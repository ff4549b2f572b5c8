"""Compress a folder of images with DC-VIC into one framed ``.bin`` file per image.

    python scripts/compress.py --config_path config/dc_vic_patchgan.yaml --model_path dc_vic_patchgan.pth.tar \
        --img_dir datasets/kodak --save_dir results/kodak_q2 -q 2 [--decompress] -d cuda

The rate is chosen by one of: ``-q`` (index into the config's selected beta pairs; fractional
values interpolate), ``--beta_rate/--beta_vq``, or ``--target_bpp`` with the
``beta_selection_results.csv`` of scripts/beta_selection.py (``--selection_csv``).
Writes ``bin/*.bin``, ``recon/*.png`` (with --decompress), ``_bitrates.csv`` and ``_avg_bitrate.json``.

A file of --img_dir that cannot be read as an image is reported, listed under "failed" in
``_avg_bitrate.json`` and the rest of the folder is still coded. Entries with an image name that
are no regular file (a directory named like ``x.png``, a dangling symlink, a symlink loop) are
skipped with a log line and are not counted as failures. Images above --max_megapixels or with a
side above --max_side are refused from their header (reported like unreadable files).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.utils.cli import add_trust_checkpoint_flag  # noqa: E402  (light: no torch)
from src.utils.preflight import codec_inputs  # noqa: E402  (light: no torch)
# torch, compressai and the model code are imported in the functions that need them (fast --help)
#: ``image_coder.MAX_DECODE_SIDE`` and ``compression.DEFAULT_MAX_PIXELS`` / 1e6 (a test keeps them equal)
DEFAULT_MAX_SIDE = 16384
DEFAULT_MAX_MEGAPIXELS = 40.0


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config_path", required=True)
    p.add_argument("--model_path", required=True, help="a training checkpoint or a released .pth.tar")
    p.add_argument("--img_dir", required=True)
    p.add_argument("--save_dir", required=True)
    p.add_argument("-q", "--quality", type=float, default=None, help="index into selected beta pairs (0 = lowest rate)")
    p.add_argument("--beta_rate", type=float, default=None)
    p.add_argument("--beta_vq", type=float, default=None)
    p.add_argument("--target_bpp", type=float, default=None, help="bitrate to aim for (needs --selection_csv)")
    p.add_argument("--selection_csv", default=None, help="beta_selection_results.csv of scripts/beta_selection.py")
    p.add_argument("--decompress", action="store_true", help="also decode the files and save reconstructions")
    p.add_argument("--max_megapixels", type=float, default=DEFAULT_MAX_MEGAPIXELS,
                   help=f"refuse larger images (default {DEFAULT_MAX_MEGAPIXELS:g} million pixels; reported per file)")
    p.add_argument("--max_side", type=int, default=DEFAULT_MAX_SIDE,
                   help=f"refuse images with a longer side (default {DEFAULT_MAX_SIDE}, what decompress.py accepts "
                        "by default)")
    add_trust_checkpoint_flag(p)
    p.add_argument("--no_estimate", action="store_true", help="skip the model's own bit estimates (faster)")
    p.add_argument("-d", "--device", default="cuda")
    p.add_argument("--opt", nargs="+", default=[], metavar="KEY=VALUE", help="config overrides")
    return p.parse_args(argv)


def choose_betas(args, model):
    """(beta_rate, beta_vq) from -q (the model's selected pairs), --target_bpp (a selection table)
    or --beta_rate/--beta_vq, checked against the model's beta range."""
    beta_rate, beta_vq = _requested_betas(args, model)
    space = model.beta_space
    if getattr(model, "beta_cond", True) and not space.contains(beta_rate, beta_vq):
        raise SystemExit(f"error: betas ({beta_rate}, {beta_vq}) lie outside the model's range "
                         f"[0, {space.max_rate}] x [0, {space.max_vq}]")
    return beta_rate, beta_vq


def _requested_betas(args, model):
    given = [args.quality is not None, args.beta_rate is not None or args.beta_vq is not None,
             args.target_bpp is not None]
    if sum(given) != 1:
        raise SystemExit("error: give exactly one of -q, --beta_rate/--beta_vq, --target_bpp")
    if args.quality is not None:
        return model.beta_space.pair(args.quality)   # a fractional index interpolates
    if args.target_bpp is not None:
        if not args.selection_csv:
            raise SystemExit("error: --target_bpp needs --selection_csv (beta_selection_results.csv)")
        from src.ratecontrol import betas_for_target_bpp

        return betas_for_target_bpp(args.selection_csv, args.target_bpp)
    if args.beta_rate is None or args.beta_vq is None:
        raise SystemExit("error: give both --beta_rate and --beta_vq")
    return args.beta_rate, args.beta_vq


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.max_megapixels > 0 or not 1 <= args.max_side <= 1 << 20:
        print(f"error: --max_megapixels must be positive and --max_side in [1, {1 << 20}]", file=sys.stderr)
        return 2
    if codec_inputs(args.config_path, args.opt, args.model_path,
                    dirs={"--img_dir": (args.img_dir, "give a folder of images")},
                    files={"--selection_csv": (args.selection_csv, "scripts/beta_selection.py writes it")}).failed():
        return 2   # every missing input at once, before torch is imported
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    from src.compression import compress_folder, device_or_cpu
    from src.models.codec.image_coder import ImageCoder
    from src.models.codec.loading import load_codec

    device = device_or_cpu(args.device)
    model, _ = load_codec(args.config_path, args.model_path, device, args.opt, trust=args.trust_checkpoint)
    beta_rate, beta_vq = choose_betas(args, model)
    coder = ImageCoder(model, device=device, max_side=args.max_side)
    report = compress_folder(coder, args.img_dir, args.save_dir, beta_rate, beta_vq, decompress=args.decompress,
                             estimate=not args.no_estimate, max_pixels=int(args.max_megapixels * 1e6))
    avg = report.averages()
    print(f"beta_rate {beta_rate:.4f} beta_vq {beta_vq:.4f}: {len(report.rows)} images, "
          f"real {avg.get('real_bpp', float('nan')):.4f} bpp, estimated {avg.get('pred_bpp', float('nan')):.4f} bpp"
          f"{f', {len(report.failed)} could not be read' if report.failed else ''}"
          f"{f', {len(report.skipped)} non-file entries skipped' if report.skipped else ''} -> {args.save_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

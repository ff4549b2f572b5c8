"""Evaluate a trained tokenizer on a folder of images: PSNR, SSIM, MS-SSIM, LPIPS, rFID, and the
codebook usage, perplexity and entropy over all tokens.

    python scripts/eval_tokenizer.py --ckpt checkpoint/vqgan_f8_n256/model/comp_model_iter500K.pth.tar \
        --images datasets/kodak --out results/vqgan_f8_n256 [--ema] [--size 256] -d cuda
    python scripts/eval_tokenizer.py --ckpt vq-f8-n256.ckpt --config config/tokenizer/vqgan/vqgan_f8_n256.yaml \
        --images datasets/kodak --out results/ldm_f8_n256            # an official checkpoint

Writes ``metrics.json`` (means, codebook statistics, and ``skipped``: each metric that could not
be computed and why) and ``per_image.csv`` into ``--out``. LPIPS (AlexNet) and rFID (Inception)
need their ImageNet weights; offline they are reported as skipped. rFID compares Inception
features of whole images (resized to 299 inside the network): use many images (e.g. ImageNet val
with ``--size 256``), it is not meaningful on a handful.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `src` importable without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.tokenizer_args import add_tokenizer_args  # noqa: E402  (light: no torch before parse_args)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_tokenizer_args(p, out_help="output folder for metrics.json / per_image.csv",
                       ema_help="evaluate the EMA weights")
    p.add_argument("--no_lpips", action="store_true", help="skip LPIPS")
    p.add_argument("--no_rfid", action="store_true", help="skip rFID")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from src.tokenizer_tools import evaluate_tokenizer, load_tokenizer, write_results

    model = load_tokenizer(args.ckpt, args.config, args.ema, args.device)
    summary, rows = evaluate_tokenizer(model, args.images, args.size, args.max_images, args.device,
                                       lpips=not args.no_lpips, rfid=not args.no_rfid)
    extra = {"checkpoint": str(args.ckpt), "images": str(args.images), "ema": args.ema, "size": args.size}
    json_path, csv_path = write_results(summary, rows, args.out, extra)
    print(json.dumps({k: v for k, v in summary.items() if k != "skipped"}, indent=2))
    for name, why in summary["skipped"].items():
        print(f"skipped {name}: {why}")
    print(f"wrote {json_path} and {csv_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Evaluate trained tokenizers on a folder of images: PSNR, SSIM, MS-SSIM, L1, MSE, LPIPS, rFID,
Inception Score, and the codebook usage, perplexity and entropy over all tokens.

    python scripts/eval_tokenizer.py --ckpt checkpoint/vqgan_f8_n256/model/comp_model_iter500K.pth.tar \
        --images datasets/kodak --out results/vqgan_f8_n256 [--ema] [--size 256] [--save_recon] -d cuda
    python scripts/eval_tokenizer.py --ckpt vq-f8-n256.ckpt --config config/tokenizer/vqgan/vqgan_f8_n256.yaml \
        --images datasets/kodak --out results/ldm_f8_n256            # an official checkpoint
    python scripts/eval_tokenizer.py --ckpt checkpoint/vqgan_8192/model --images datasets/imagenet/val \
        --size 256 --out results/vqgan_8192_sweep -d cuda            # a sweep: every checkpoint of a run

Writes ``metrics.json`` (means, codebook statistics, and ``skipped``: each metric that could not
be computed and why) and ``per_image.csv`` into ``--out``. With several checkpoints (or a folder
of them) each gets ``--out/<checkpoint name>/`` and ``--out/sweep.csv`` has one row per checkpoint
(the metric networks are built once). ``--save_recon`` adds ``reconstructions/<name>.png`` and,
when all images have one size (``--size``), ``reconstructions.npz`` and ``inputs.npz``: uint8
N x H x W x 3 under ``arr_0``, the batches the ADM evaluator (guided-diffusion's evaluations/
evaluator.py) and clean-fid read. L1 and MSE are on pixel values in [0, 1].

LPIPS (AlexNet) needs its ImageNet weights; rFID and the Inception Score need pytorch-fid's
Inception file (pt_inception-2015-12-05-6726825d.pth); offline each is reported as skipped with
the file and the folder it belongs in. rFID compares Inception features of whole images (resized
to 299 inside the network) and the Inception Score uses 10 splits (fewer with fewer than 10
images): use many images (e.g. ImageNet val with ``--size 256``); on a handful they mean little.
"""
from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `src` importable without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.zoo.args import add_tokenizer_args  # noqa: E402  (light: no torch before parse_args)

SWEEP_KEYS = ("psnr", "ssim", "ms_ssim", "l1", "mse", "lpips", "rfid", "inception_score", "usage", "perplexity",
              "entropy_bits")
CKPT_NAME = re.compile(r"^comp_model_iter(\d+)(K?)\.pth\.tar$")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_tokenizer_args(p, out_help="output folder for metrics.json / per_image.csv (a sweep: one sub-folder "
                                   "per checkpoint and sweep.csv)", ema_help="evaluate the EMA weights", many=True)
    p.add_argument("--no_lpips", action="store_true", help="skip LPIPS")
    p.add_argument("--no_rfid", action="store_true", help="skip rFID")
    p.add_argument("--no_is", action="store_true", help="skip the Inception Score")
    p.add_argument("--save_recon", action="store_true",
                   help="save the reconstructions (PNG folder, and reconstructions.npz / inputs.npz)")
    return p.parse_args(argv)


def iteration_of(path: Path):
    """The iteration in a checkpoint's file name (comp_model_iter250K.pth.tar -> 250000), else None."""
    m = CKPT_NAME.match(path.name)
    return None if m is None else int(m.group(1)) * (1000 if m.group(2) else 1)


def expand_checkpoints(paths) -> list:
    """The checkpoint files named: a folder stands for its comp_model_iter*.pth.tar in iteration order."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted((f for f in p.iterdir() if iteration_of(f) is not None), key=iteration_of)
            if not found:
                raise SystemExit(f"error: --ckpt {p}: no comp_model_iter*.pth.tar in this folder")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise SystemExit(f"error: --ckpt {p}: no such file or folder")
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    ckpts = expand_checkpoints(args.ckpt)
    from src.zoo.tools import evaluate_tokenizer, load_tokenizer, write_results

    networks = {}   # LPIPS / Inception built once for the whole sweep
    sweep = []
    for ckpt in ckpts:
        out = args.out if len(ckpts) == 1 else args.out / ckpt.name.replace(".pth.tar", "")
        model = load_tokenizer(str(ckpt), args.config, args.ema, args.device)
        summary, rows = evaluate_tokenizer(model, args.images, args.size, args.max_images, args.device,
                                           lpips=not args.no_lpips, rfid=not args.no_rfid,
                                           inception_score=not args.no_is,
                                           save_to=out if args.save_recon else None, networks=networks)
        extra = {"checkpoint": str(ckpt), "iteration": iteration_of(ckpt), "images": str(args.images),
                 "ema": args.ema, "size": args.size}
        json_path, csv_path = write_results(summary, rows, out, extra)
        print(json.dumps({k: v for k, v in summary.items() if k != "skipped"}, indent=2))
        for name, why in summary["skipped"].items():
            print(f"skipped {name}: {why}")
        print(f"wrote {json_path} and {csv_path}")
        sweep.append({"checkpoint": str(ckpt), "iteration": iteration_of(ckpt),
                      **{k: summary.get(k) for k in SWEEP_KEYS}})
    if len(ckpts) > 1:
        path = args.out / "sweep.csv"
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(sweep[0]))
            writer.writeheader()
            writer.writerows(sweep)
        print(f"wrote {path} ({len(sweep)} checkpoints)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

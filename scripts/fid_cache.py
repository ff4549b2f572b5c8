"""Compute a dataset's FID reference statistics (Inception mu, sigma) once and cache them.

    python scripts/fid_cache.py --images datasets/imagenet/val --out checkpoint/fid/imagenet_val_256.npz \
        --size 256 [--max_images 50000] -d cuda

The ``.npz`` holds ``mu``, ``sigma``, ``num_images``, ``size`` and ``source``; the proposal
network's validation (``validation.fid_cache``) compares generated images against it. Images are
resized (shorter side) and centre-cropped to ``--size``. The Inception weights
(pt_inception-2015-12-05-6726825d.pth) are downloaded by pytorch-fid on first use; offline the
script stops with the file name and the folder to put it in.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=Path, required=True, help="folder of reference images")
    p.add_argument("--out", type=Path, required=True, help="output .npz")
    p.add_argument("--size", type=int, default=256, help="resize + centre-crop size (0: whole images)")
    p.add_argument("--max_images", type=int, default=None)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--overwrite", action="store_true", help="recompute even if --out exists")
    p.add_argument("-d", "--device", default="cpu")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from src.metrics import InceptionFeatures, MetricUnavailable
    from src.zoo.ar.evaluation import reference_stats, save_fid_cache

    if args.out.is_file() and not args.overwrite:
        print(f"{args.out} exists (use --overwrite to recompute)")
        return 0
    try:
        extractor = InceptionFeatures(args.device, batch_size=args.batch_size)
    except MetricUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    stats = reference_stats(args.images, extractor, args.size or None, args.max_images, args.batch_size)
    save_fid_cache(stats, args.out)
    print(f"wrote {args.out}: {stats['num_images']} images, {stats['mu'].shape[0]}-d features")
    return 0


if __name__ == "__main__":
    sys.exit(main())

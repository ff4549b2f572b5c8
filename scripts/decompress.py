"""Decode framed ``.bin`` files to PNG, as a receiver would (needs only the files and the model).

    python scripts/decompress.py --config_path config/dc_vic_patchgan.yaml --model_path dc_vic_patchgan.pth.tar \
        --bin_dir results/kodak_q2/bin --save_dir results/kodak_q2/decoded -d cpu

The image size and the betas come from each file's header. A file made by another model, or
damaged in any way, is reported and skipped (its CRC, lengths and model fingerprint are
checked before any entropy decoding, and the entropy decoder never reads past a string).
Files declaring an image side above --max_side (default 16384 px) are refused the same way.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.utils.cli import add_trust_checkpoint_flag  # noqa: E402  (light: no torch)
from src.utils.preflight import codec_inputs  # noqa: E402  (light: no torch)
# torch, compressai and the model code are imported in main() (fast --help)
#: ``src.models.codec.image_coder.MAX_DECODE_SIDE`` (a test keeps the two equal)
DEFAULT_MAX_SIDE = 16384


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config_path", required=True)
    p.add_argument("--model_path", required=True)
    p.add_argument("--bin_dir", required=True)
    p.add_argument("--save_dir", required=True)
    p.add_argument("--max_side", type=int, default=DEFAULT_MAX_SIDE,
                   help=f"largest image height/width a file may declare (default {DEFAULT_MAX_SIDE}); "
                        "larger ones are refused as corrupt")
    add_trust_checkpoint_flag(p)
    p.add_argument("-d", "--device", default="cuda")
    p.add_argument("--opt", nargs="+", default=[], metavar="KEY=VALUE", help="config overrides")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if codec_inputs(args.config_path, args.opt, args.model_path,
                    dirs={"--bin_dir": (args.bin_dir, "give the bin/ folder written by scripts/compress.py")}).failed():
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    from src.compression import decompress_folder, device_or_cpu
    from src.models.codec.image_coder import ImageCoder
    from src.models.codec.loading import load_codec

    device = device_or_cpu(args.device)
    model, _ = load_codec(args.config_path, args.model_path, device, args.opt, trust=args.trust_checkpoint)
    report = decompress_folder(ImageCoder(model, device=device, max_side=args.max_side), args.bin_dir,
                               args.save_dir)
    print(f"decoded {len(report.rows)} files to {args.save_dir}"
          f"{f'; {len(report.failed)} could not be decoded: ' + ', '.join(report.failed) if report.failed else ''}")
    return 1 if report.failed else 0   # any file that could not be decoded


if __name__ == "__main__":
    sys.exit(main())

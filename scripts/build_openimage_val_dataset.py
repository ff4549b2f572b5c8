"""Build the stage-2 validation set: one seeded random crop per OpenImages validation image.

    python scripts/build_openimage_val_dataset.py --vqgan_type f8-n256 \
        --openimage_root ./datasets/openimage --save_root ./datasets/openimage_validation_vq \
        --seed 0 --num_img 2000

Images of ``{openimage_root}/validation`` are taken in a seeded random order; the first
``num_img`` whose short side is >= ``crop_size`` give one crop each (position seeded by seed and
file name), saved as ``{stem}.png`` with its VQ indices ``{stem}.npy`` (uint8, 32x32 for 256
crops) under ``{save_root}/vq_f8_n256/crop_256_{num_img}_seed_{seed}``. The VQGAN is the
``subnet.vq_model`` section of ``--config`` (default: the published model config), with
``--opt`` overrides and ``--vq_ckpt_path``. Re-running resumes: finished crops are kept.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `src` importable without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_CONFIG = "config/_base_/model/hyperprior_charm_dual_cond_vic_model_vq_f8_n256.yaml"
ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("build_openimage_val_dataset")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vqgan_type", default="f8-n256", help="must match the configured VQGAN")
    p.add_argument("--openimage_root", required=True, type=Path, help="holds validation/")
    p.add_argument("--save_root", required=True, type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num_img", type=int, default=2000)
    p.add_argument("--crop_size", type=int, default=256, help="crop side (multiple of 64)")
    p.add_argument("--config", default=str(ROOT / DEFAULT_CONFIG),
                   help="config whose subnet.vq_model section builds the VQGAN")
    p.add_argument("--opt", nargs="*", default=[], help="config overrides key.sub=value")
    p.add_argument("--vq_ckpt_path", default=None, help="overrides subnet.vq_model.ckpt_path")
    p.add_argument("--batch_size", type=int, default=8, help="crops per VQGAN forward")
    p.add_argument("-d", "--device", default="cpu")
    p.add_argument("--no_progress", action="store_true")
    return p.parse_args(argv)


def build_vqgan(args):
    """The frozen VQGAN of ``--config`` / ``--opt`` / ``--vq_ckpt_path``."""
    from src.models.vq.vqgan import build_pretrained_vq_model
    from src.utils.config import load_config

    cfg = load_config(args.config, list(args.opt))
    section = cfg.get_path("subnet.vq_model")
    if section is None:
        raise KeyError(f"{args.config} has no subnet.vq_model section")
    section = section.to_dict() if hasattr(section, "to_dict") else dict(section)
    if args.vq_ckpt_path is not None:
        section["ckpt_path"] = args.vq_ckpt_path
    return build_pretrained_vq_model(**section)


def main(argv=None) -> int:
    """Run the script; returns the exit status (0 on success)."""
    args = parse_args(argv)
    from src.ratecontrol.valset import build_val_set, val_set_dir, vq_index_encoder, vqgan_type_of  # torch
    from src.utils.image_io import list_images

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.crop_size % 64:
        log.error("--crop_size must be a multiple of 64 (DC-VIC input), got %d", args.crop_size)
        return 2
    src_dir = args.openimage_root / "validation"
    if not src_dir.is_dir():
        log.error("folder not found: %s (expected {openimage_root}/validation)", src_dir)
        return 2
    vq_model = build_vqgan(args)
    built = vqgan_type_of(vq_model)
    if built != args.vqgan_type:
        log.error("--vqgan_type %s but the configured VQGAN is %s", args.vqgan_type, built)
        return 2
    out_dir = val_set_dir(args.save_root, args.vqgan_type, args.num_img, args.seed, args.crop_size)
    stats = build_val_set(list_images(src_dir), out_dir, vq_index_encoder(vq_model, args.device),
                          args.num_img, args.seed, args.crop_size, args.batch_size,
                          progress=not args.no_progress)
    log.info("%s: %d crops written, %d already there, %d images too small, %d unreadable",
             out_dir, stats.written, stats.existing, stats.small, stats.bad)
    if stats.done < args.num_img:
        log.warning("only %d usable images found, %d asked for", stats.done, args.num_img)
    print(out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())

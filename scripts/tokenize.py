"""Tokenize a folder of images with a trained tokenizer: one ``.npy`` token grid per image.

    python scripts/tokenize.py --ckpt checkpoint/vqgan_f8_n256/model/comp_model_iter500K.pth.tar \
        --images datasets/kodak --out tokens/kodak [--ema] [--size 256] -d cuda
    torchrun --nproc_per_node=8 scripts/tokenize.py --ckpt TOK_CKPT --images datasets/imagenet/train \
        --out datasets/tokens/train --size 256 --aug ten_crop -d cuda     # ImageNet, sharded, resumable

Each ``<name>.npy`` holds a ``ceil(H/f) x ceil(W/f)`` grid of indices, stored as uint8 for
codebooks of at most 256 codes, int16 up to 32768, int32 beyond. ``index.json`` records the
codebook size, the factor f, ``--size`` and each image's size (``scripts/visualize_patches.py``
reads it). Images are padded at the bottom/right by reflection to a multiple of f.

Dataset mode (images in class sub-folders, ``--aug``, or several shards; needs ``--size``): the
output keeps the class folders (``<out>/<class>/<name>.npy``, what the AR model's TokenDataset
reads), each file holds one grid or, with ``--aug flip`` / ``ten_crop``, the grids of 2 / 10 views
(LlamaGen's augmentation; the dataset draws one per step). Under torchrun (or with ``--shard I
--num_shards N``) each process takes every N-th image; a restart skips the files already written
(each is written under a temporary name first); the last shard to finish merges the shards'
indices into one ``index.json``. Each process reports its throughput (images/s).
"""
from __future__ import annotations

import sys

if __name__ != "__main__":
    # Imported as "tokenize" because scripts/ is on sys.path (any `python scripts/X.py`): this
    # file shadows the standard library's tokenize module, which inspect/linecache import. Hand
    # the real one over instead (the import system returns sys.modules["tokenize"]).
    import importlib.util as _util
    import os as _os
    import sysconfig as _sysconfig

    _spec = _util.spec_from_file_location(__name__, _os.path.join(_sysconfig.get_paths()["stdlib"], "tokenize.py"))
    _real = _util.module_from_spec(_spec)
    sys.modules[__name__] = _real
    _spec.loader.exec_module(_real)
else:
    import argparse
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # make `src` importable

    from src.zoo.args import add_tokenizer_args  # light: torch is imported after parse_args

    def parse_args(argv=None) -> argparse.Namespace:
        p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
        add_tokenizer_args(p, out_help="output folder for the .npy files")
        p.add_argument("--aug", default=None, choices=("none", "flip", "ten_crop"),
                       help="views per image: the centre crop, it and its mirror image, or LlamaGen's ten crops")
        p.add_argument("--crop_range", type=float, default=1.1, help="ten_crop: crops of SIZE from SIZE x this")
        p.add_argument("--shard", type=int, default=None, help="this process's shard (default: torchrun's RANK or 0)")
        p.add_argument("--num_shards", type=int, default=None, help="number of shards (default: WORLD_SIZE or 1)")
        return p.parse_args(argv)

    def shard_of(args):
        import os

        rank = args.shard if args.shard is not None else int(os.environ.get("RANK", 0))
        world = args.num_shards if args.num_shards is not None else int(os.environ.get("WORLD_SIZE", 1))
        if not 0 <= rank < world:
            raise SystemExit(f"error: shard {rank} is not in 0..{world - 1}")
        return rank, world

    def dataset_mode(args, world) -> bool:
        classes = args.images.is_dir() and any(d.is_dir() for d in args.images.iterdir())
        return bool(args.aug) or world > 1 or classes

    def main(argv=None) -> int:
        args = parse_args(argv)
        rank, world = shard_of(args)
        if dataset_mode(args, world):
            if not args.size:
                raise SystemExit("error: class folders, --aug and sharding need --size (square views of one size)")
            return run_dataset(args, rank, world)
        from src.zoo.tools import load_tokenizer, tokenize_folder

        model = load_tokenizer(args.ckpt, args.config, args.ema, args.device)
        index = tokenize_folder(model, args.images, args.out, args.size, args.max_images, args.device)
        print(f"wrote {len(index['images'])} token grids ({index['dtype']}, {index['codebook_size']} codes, "
              f"f={index['factor']}) to {args.out}")
        return 0

    def run_dataset(args, rank: int, world: int) -> int:
        import os

        import torch

        from src.zoo.tools import load_tokenizer, merge_token_indices, tokenize_dataset

        device = args.device
        if device.startswith("cuda") and "LOCAL_RANK" in os.environ:
            device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
        model = load_tokenizer(args.ckpt, args.config, args.ema, device)
        index = tokenize_dataset(model, args.images, args.out, args.size, args.aug or "none", rank, world,
                                 args.max_images, device, args.crop_range)
        print(f"shard {rank}/{world}: {len(index['images'])} images ({index['new']} new) in {index['seconds']:.1f} s, "
              f"{index['images_per_second']:.2f} images/s")
        merged = None
        if "MASTER_ADDR" in os.environ and world > 1 and args.shard is None:   # torchrun: rank 0 merges
            torch.distributed.init_process_group("gloo")   # only to wait for every shard
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()
            if rank == 0:
                merged = merge_token_indices(args.out, world)
        else:   # separate processes: the last one to finish merges
            merged = merge_token_indices(args.out, world)
        if merged is not None:
            print(f"wrote {merged}")
        return 0

    sys.exit(main())

"""Tokenize a folder of images with a trained tokenizer: one ``.npy`` token grid per image.

    python scripts/tokenize.py --ckpt checkpoint/vqgan_f8_n256/model/comp_model_iter500K.pth.tar \
        --images datasets/kodak --out tokens/kodak [--ema] [--size 256] -d cuda

Each ``<name>.npy`` holds a ``ceil(H/f) x ceil(W/f)`` grid of indices, stored as uint8 for
codebooks of at most 256 codes, int16 up to 32768, int32 beyond. ``index.json`` records the
codebook size, the factor f, ``--size`` and each image's size (``scripts/visualize_patches.py``
reads it). Images are padded at the bottom/right by reflection to a multiple of f.
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

    from src.tokenizer_args import add_tokenizer_args  # light: torch is imported after parse_args

    def parse_args(argv=None) -> argparse.Namespace:
        p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
        add_tokenizer_args(p, out_help="output folder for the .npy files")
        return p.parse_args(argv)

    def main(argv=None) -> int:
        args = parse_args(argv)
        from src.tokenizer_tools import load_tokenizer, tokenize_folder

        model = load_tokenizer(args.ckpt, args.config, args.ema, args.device)
        index = tokenize_folder(model, args.images, args.out, args.size, args.max_images, args.device)
        print(f"wrote {len(index['images'])} token grids ({index['dtype']}, {index['codebook_size']} codes, "
              f"f={index['factor']}) to {args.out}")
        return 0

    sys.exit(main())

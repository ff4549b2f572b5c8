"""Show which image patches map to a code: one row per code, as a PNG grid.

    python scripts/tokenize.py --ckpt CKPT --images datasets/kodak --out tokens/kodak
    python scripts/visualize_patches.py --tokens tokens/kodak --images datasets/kodak \
        --out patches.png [--codes 17 42 | --top 16] [--max_patches 16] [--context 4] [--scale 4]

Reads the token grids and ``index.json`` written by ``scripts/tokenize.py`` and cuts, from the
same (resized, cropped, padded) images, the ``f x f`` patch of every token equal to the code
(plus ``--context`` pixels around it). Without ``--codes`` the ``--top`` most frequent codes are
shown. Each row is labelled "code (patches shown)".
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `src` importable without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", required=True, type=Path, help="folder written by scripts/tokenize.py")
    p.add_argument("--images", required=True, type=Path, help="the images that were tokenized")
    p.add_argument("--out", required=True, type=Path, help="output PNG")
    p.add_argument("--codes", type=int, nargs="+", default=None, help="codes to show (one row each)")
    p.add_argument("--top", type=int, default=16, help="without --codes: the N most frequent codes")
    p.add_argument("--max_patches", type=int, default=16, help="patches per code (columns)")
    p.add_argument("--context", type=int, default=0, help="extra pixels around each patch")
    p.add_argument("--scale", type=int, default=4, help="enlargement of each patch (nearest)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from src.zoo.tools import code_patches, load_tokens, patch_grid, pick_codes  # torch: after parse_args

    index, grids = load_tokens(args.tokens)
    codes = pick_codes(grids, args.codes, args.top)
    rows = [(c, code_patches(args.images, index, grids, c, args.max_patches, args.context)) for c in codes]
    for code, patches in rows:
        if not patches:
            print(f"code {code}: no token of the images maps to it")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    patch_grid(rows, args.max_patches, args.scale).save(args.out)
    print(f"wrote {args.out}: {len(rows)} codes x up to {args.max_patches} patches")
    return 0


if __name__ == "__main__":
    sys.exit(main())

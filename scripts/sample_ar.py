"""Sample images from a trained proposal network (LlamaC2I) and decode them with a tokenizer.

    python scripts/sample_ar.py --ckpt checkpoint/c2i_llama_b/model/comp_model_iter300K.pth.tar \
        --tokenizer checkpoint/decoder_vqgan_vqkd/model/comp_model_iter250K.pth.tar \
        --classes 1 207 360 --per_class 4 --cfg_scale 4.0 --top_k 0 --top_p 1.0 --seed 0 --out samples/ -d cuda

``--tokenizer`` is any checkpoint of ``scripts/train.py`` whose model has ``decode_indices``
(a PixelDecoder on VQ-KD / Cluster, or a VQGAN). Writes ``<out>/class<c>_<i>.png`` and, with
``--save_tokens``, the token grids as ``.npy``. Same seed, same images.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="proposal network checkpoint (ARTrainer)")
    p.add_argument("--tokenizer", required=True, help="checkpoint of a model with decode_indices")
    p.add_argument("--classes", type=int, nargs="+", default=[0], help="class ids to sample")
    p.add_argument("--per_class", type=int, default=1)
    p.add_argument("--cfg_scale", type=float, default=4.0, help="classifier-free guidance scale (1: none)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top_k", type=int, default=0, help="0: no top-k filtering")
    p.add_argument("--top_p", type=float, default=1.0, help="1.0: no nucleus filtering")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--grid", type=int, nargs=2, default=None, metavar=("H", "W"), help="token grid (default square)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--save_tokens", action="store_true")
    p.add_argument("-d", "--device", default="cpu")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import numpy as np
    import torch

    import src.models  # noqa: F401
    import src.models.ar  # noqa: F401
    import src.models.tokenizers  # noqa: F401
    from src.models.ar.sampling import sample
    from src.tokenizer_tools import load_tokenizer
    from src.trainer.zoo_trainers import decode_tokens
    from src.utils.image_io import save_rgb

    model = load_tokenizer(args.ckpt, device=args.device)  # any comp_model + config checkpoint
    decoder = load_tokenizer(args.tokenizer, device=args.device)
    if not hasattr(decoder, "decode_indices"):
        raise SystemExit(f"{args.tokenizer}: {type(decoder).__name__} has no decode_indices")
    bad = [c for c in args.classes if not 0 <= c < model.num_classes]
    if bad:
        raise SystemExit(f"classes {bad} out of range: the model has {model.num_classes} classes")
    labels = torch.tensor([c for c in args.classes for _ in range(args.per_class)], device=args.device)
    gen = torch.Generator(device=args.device).manual_seed(args.seed)
    tokens = sample(model, labels, cfg_scale=args.cfg_scale, temperature=args.temperature, top_k=args.top_k,
                    top_p=args.top_p, generator=gen)
    images = decode_tokens(decoder, tokens, tuple(args.grid) if args.grid else None)
    args.out.mkdir(parents=True, exist_ok=True)
    for i, (label, img) in enumerate(zip(labels.tolist(), images)):
        stem = f"class{label}_{i % args.per_class}"
        save_rgb(img.clamp(-1, 1).cpu(), args.out / f"{stem}.png")
        if args.save_tokens:
            np.save(args.out / f"{stem}.npy", tokens[i].cpu().numpy())
    print(f"wrote {len(images)} samples to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Sample images from a trained proposal network (LlamaC2I) and decode them with a tokenizer.

    python scripts/sample_ar.py --ckpt checkpoint/c2i_llama_b/model/comp_model_iter300K.pth.tar \
        --tokenizer checkpoint/decoder_vqgan_vqkd/model/comp_model_iter250K.pth.tar \
        --classes 1 207 360 --per_class 4 --cfg_scale 4.0 --top_k 0 --top_p 1.0 --seed 0 --out samples/ -d cuda

    python scripts/sample_ar.py --ckpt AR_CKPT --tokenizer TOK_CKPT --all_classes --per_class 50 \
        --batch_size 250 --npz --no_png --out samples/gfid -d cuda     # 50K samples for gFID

``--tokenizer`` is any checkpoint of ``scripts/train.py`` whose model has ``decode_indices``
(a PixelDecoder on VQ-KD / Cluster, or a VQGAN). Writes ``<out>/class<c>_<i>.png`` and, with
``--save_tokens``, the token grids as ``.npy``; ``--npz`` writes ``<out>/samples.npz``: all
samples as uint8 N x H x W x 3 under ``arr_0`` (class by class, ``per_class`` each; their labels
under ``labels``), the batch the ADM evaluator and clean-fid read. Samples are drawn
``--batch_size`` at a time from one generator: same seed and batch size, same images.
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
    p.add_argument("--all_classes", action="store_true", help="every class of the model (instead of --classes)")
    p.add_argument("--per_class", type=int, default=1)
    p.add_argument("--cfg_scale", type=float, default=4.0, help="classifier-free guidance scale (1: none)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top_k", type=int, default=0, help="0: no top-k filtering")
    p.add_argument("--top_p", type=float, default=1.0, help="1.0: no nucleus filtering")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--grid", type=int, nargs=2, default=None, metavar=("H", "W"), help="token grid (default square)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--save_tokens", action="store_true")
    p.add_argument("--npz", action="store_true", help="also write samples.npz (uint8 NHWC under arr_0)")
    p.add_argument("--no_png", action="store_true", help="write no PNG files")
    p.add_argument("--batch_size", type=int, default=64, help="samples generated at a time")
    p.add_argument("-d", "--device", default="cpu")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import numpy as np
    import torch

    import src.models  # noqa: F401
    import src.zoo.ar  # noqa: F401
    import src.zoo.tokenizers  # noqa: F401
    from src.utils.image_io import save_rgb
    from src.zoo.ar.sampling import sample
    from src.zoo.tools import load_tokenizer
    from src.zoo.trainers import decode_tokens

    model = load_tokenizer(args.ckpt, device=args.device)  # any comp_model + config checkpoint
    decoder = load_tokenizer(args.tokenizer, device=args.device)
    if not hasattr(decoder, "decode_indices"):
        raise SystemExit(f"{args.tokenizer}: {type(decoder).__name__} has no decode_indices")
    classes = list(range(model.num_classes)) if args.all_classes else args.classes
    bad = [c for c in classes if not 0 <= c < model.num_classes]
    if bad:
        raise SystemExit(f"classes {bad} out of range: the model has {model.num_classes} classes")
    if args.per_class < 1 or args.batch_size < 1:
        raise SystemExit("--per_class and --batch_size must be >= 1")
    all_labels = torch.tensor([c for c in classes for _ in range(args.per_class)], device=args.device)
    gen = torch.Generator(device=args.device).manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    batches = []
    for start in range(0, len(all_labels), args.batch_size):
        labels = all_labels[start:start + args.batch_size]
        tokens = sample(model, labels, cfg_scale=args.cfg_scale, temperature=args.temperature, top_k=args.top_k,
                        top_p=args.top_p, generator=gen)
        images = decode_tokens(decoder, tokens, tuple(args.grid) if args.grid else None)
        uint8 = (images.clamp(-1, 1) + 1).mul(127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        for j, (label, img) in enumerate(zip(labels.tolist(), uint8)):
            stem = f"class{label}_{(start + j) % args.per_class}"
            if not args.no_png:
                save_rgb(img, args.out / f"{stem}.png")
            if args.save_tokens:
                np.save(args.out / f"{stem}.npy", tokens[j].cpu().numpy())
        if args.npz:
            batches.append(uint8)
    if args.npz:
        np.savez(args.out / "samples.npz", arr_0=np.concatenate(batches), labels=all_labels.cpu().numpy())
        print(f"wrote {args.out / 'samples.npz'}")
    print(f"wrote {len(all_labels)} samples to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

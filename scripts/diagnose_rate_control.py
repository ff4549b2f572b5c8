"""Does beta_rate control the rate? A short step-1-2 training and a rate-vs-beta_rate probe.

    python scripts/diagnose_rate_control.py --opt subnet.vq_model.ckpt_path=null    # random VQGAN, from scratch
    python scripts/diagnose_rate_control.py --warmup_steps 240 --steps 160 --threads 1   # an earlier toy recipe (README)

Trains a config's step-1-2 model on four of the bundled photos (from scratch, or, with
``--warmup_steps``, from a step-1-1 model trained first, as the pipeline does; the shipped toy
VQGAN prior unless ``--opt`` says otherwise), then measures on crops of two photos it did not
train on, at five beta_rate values (beta_vq fixed): estimated bpp (y and z apart), PSNR and the
VQ-index accuracy of the estimator. It prints the slope d(bpp)/d(beta_rate), the ratio
bpp(max) / bpp(0), and says when y carries no information at all (posterior collapse: every beta
gives the same zero-bit y, so no beta can change the rate; step 1-2 from scratch under the
published rate weight does that, which is why the pipeline warms up with step 1-1).
A slope near zero with y alive points at the conditioning; a collapsed y or a flat PSNR points
at the learning budget and the loss balance. The numbers go to ``<work_dir>/rate_control.json``.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TRAIN_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
HELD_OUT_PHOTOS = ("immunohistochemistry", "motorcycle_left")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "config" / "quickstart" / "stage1_2.yaml"),
                   help="a step-1-2 config (DualBetaCondRateDistortionVqCodeTrainer)")
    p.add_argument("--steps", type=int, default=150, help="training steps (default 150)")
    p.add_argument("--warmup_steps", type=int, default=0,
                   help="first train --warmup_config this many steps and start from it, as the pipeline "
                        "starts step 1-2 from step 1-1 (default 0: from scratch)")
    p.add_argument("--warmup_config", default=str(ROOT / "config" / "quickstart" / "stage1_1.yaml"),
                   help="the warm-up (step-1-1) config")
    p.add_argument("--beta_vq", type=float, default=1.75, help="beta_vq held fixed in the probe")
    p.add_argument("--num_crops", type=int, default=16, help="held-out crops in the probe (default 16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--work_dir", default=None, help="where checkpoints and the JSON go (default: a temp dir)")
    p.add_argument("--opt", nargs="+", default=[], metavar="KEY=VALUE",
                   help="config overrides (YAML values), of both configs")
    p.add_argument("--warmup_opt", nargs="+", default=[], metavar="KEY=VALUE",
                   help="overrides of the warm-up config only (after --opt)")
    return p.parse_args(argv)


def probe(model, x, beta_rates, beta_vq: float) -> list:
    """Estimated bpp, PSNR and VQ accuracy of ``model`` on ``x`` at each beta_rate."""
    import torch

    rows = []
    n = x.shape[0]
    with torch.no_grad():
        for r in beta_rates:
            out = model(x, torch.full((n,), float(r)), torch.full((n,), beta_vq))
            mse = ((out["x_hat"] - x) / 2).pow(2).mean()
            acc = (out["vq_logits"].argmax(1) == out["vq_indices"]).float().mean()
            rows.append({"beta_rate": float(r), "bpp": out["bpp"].mean().item(), "bpp_y": out["bpp_y"].mean().item(),
                         "bpp_z": out["bpp_z"].mean().item(), "psnr": (-10 * torch.log10(mse)).item(),
                         "vq_acc": acc.item()})
    return rows


def slope(xs, ys) -> float:
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((a - mx) * (b - my) for a, b in zip(xs, ys)) / sum((a - mx) ** 2 for a in xs)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from src.data.datasets import ImageDataset, export_sample_photos
    from src.trainer import build_trainer
    from src.utils.config import load_config

    if args.steps < 1:
        raise SystemExit(f"--steps must be at least 1, got {args.steps}")
    if args.warmup_steps < 0:
        raise SystemExit(f"--warmup_steps must be at least 0, got {args.warmup_steps}")
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="rate_control_"))
    train_dir, held_dir = work / "train_photos", work / "held_out_photos"
    export_sample_photos(train_dir, TRAIN_PHOTOS)
    export_sample_photos(held_dir, HELD_OUT_PHOTOS)
    common = [f"ckpt_dir={work / 'checkpoint'}", f"dataset.train_dataset.root_dir={train_dir}", "eval_step=null"]
    # "+load_checkpoint": set it whether or not the config has one (a step-1-1 config has none)
    start_from = ["+load_checkpoint=null"]
    if args.warmup_steps:
        start_from = [f"+load_checkpoint={{exp: warmup, iter: {args.warmup_steps}, strict: false}}"]
    opts = [*common, *start_from, f"total_iter={args.steps}", f"save_step={args.steps}", *args.opt]
    cfg = load_config(args.config, opts)
    vq_path = cfg.subnet.vq_model.get("ckpt_path")
    if vq_path and not Path(vq_path).is_file():
        raise SystemExit(f"VQGAN prior {vq_path} not found: restore checkpoint/quickstart_vqgan_prior.pth or pass "
                         "--opt subnet.vq_model.ckpt_path=null for a random one")
    start = time.perf_counter()
    if args.warmup_steps:
        wcfg = load_config(args.warmup_config, [*common, "+load_checkpoint=null", f"total_iter={args.warmup_steps}",
                                                f"save_step={args.warmup_steps}", *args.opt, *args.warmup_opt])
        torch.manual_seed(args.seed)
        build_trainer(wcfg, exp_name="warmup", device="cpu").train()
    torch.manual_seed(args.seed)
    trainer = build_trainer(cfg, exp_name="rate_control", device="cpu")
    trainer.train()
    train_s = time.perf_counter() - start

    model = trainer.model.eval()
    size = int(cfg.dataset.train_dataset.image_size)
    ds = ImageDataset(str(held_dir), image_size=size, seed=args.seed + 1)
    x = torch.stack([ds[(i % len(ds), 1000 + i)]["image"] for i in range(args.num_crops)])
    max_rate = float(cfg.subnet.encoder.get("max_beta_1") or 3.0)
    betas = [max_rate * k / 4 for k in range(5)]
    rows = probe(model, x, betas, args.beta_vq)
    result = {"steps": args.steps, "warmup_steps": args.warmup_steps, "train_s": round(train_s, 1), "beta_vq": args.beta_vq, "points": rows,
              "dbpp_dbeta_rate": slope(betas, [r["bpp"] for r in rows]),
              "bpp_ratio_max_over_0": rows[-1]["bpp"] / max(rows[0]["bpp"], 1e-12),
              "y_collapsed": max(r["bpp_y"] for r in rows) < 1e-3, "opts": args.opt}
    (work / "rate_control.json").write_text(json.dumps(result, indent=2))

    print(f"trained {args.warmup_steps} warm-up + {args.steps} steps in {train_s:.0f} s; probe on {args.num_crops} held-out {size}px crops, "
          f"beta_vq {args.beta_vq}")
    print(" beta_rate     bpp   bpp_y   bpp_z   PSNR  vq_acc")
    for r in rows:
        print(f"{r['beta_rate']:10.2f} {r['bpp']:7.4f} {r['bpp_y']:7.4f} {r['bpp_z']:7.4f} {r['psnr']:6.2f} "
              f"{r['vq_acc']:7.3f}")
    print(f"d(bpp)/d(beta_rate) = {result['dbpp_dbeta_rate']:.4f}; bpp(max)/bpp(0) = "
          f"{result['bpp_ratio_max_over_0']:.3f}")
    if result["y_collapsed"]:
        print("y carries no information (posterior collapse): the rate cannot respond to beta_rate; "
              "the distortion term does not reach y strongly enough at this budget")
    print(f"results: {work / 'rate_control.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Train the two-stage 1D tokenizer with the flags of its published recipe.

    python scripts/train_1d_tokenizer.py --root datasets/imagenet/train --perceptual_weight 0.1 --lpips_weight 1.0 --clustering_vq -d cuda
    python scripts/train_1d_tokenizer.py --root datasets/imagenet/train --lr 5e-5 --clustering_vq -d cuda
    python scripts/train_1d_tokenizer.py --root datasets/imagenet/train --disc_start 0 --lr 2e-5 --clustering_vq -d cuda
    python scripts/train_1d_tokenizer.py --stage stage2 --root datasets/imagenet/train --perceptual_weight 0.1 --lpips_weight 1.0 -d cuda
    torchrun --nproc_per_node=8 scripts/train_1d_tokenizer.py ...           # DistributedDataParallel

Each stage is one experiment (``alitok_stage1`` / ``alitok_stage2`` under ``checkpoint/``). A
restart resumes from its newest checkpoint with the flags given now: a new ``--lr`` replaces the
saved learning rate, ``--disc_start`` / ``--lpips_weight`` / ``--perceptual_weight`` take effect
at once. Ctrl-C (or SIGTERM) saves the current iteration first. Flags left out keep the config's
values (config/tokenizer/alitok/alitok_<stage>.yaml; ``--config`` picks another). Stage 2 starts
from the newest checkpoint of ``--stage1_exp``. ``--load_from ITER`` resumes at that iteration instead
of the newest; ``--grad_accum N`` steps once per N batches.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from src.utils.preflight import Preflight  # noqa: E402  (light: no torch)

STAGES = ("stage1", "stage2")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", default="stage1", choices=STAGES,
                   help="stage1: causal decoder; stage2: bidirectional decoder, encoder frozen")
    p.add_argument("--root", default=None, help="training image folder (searched recursively)")
    p.add_argument("--clustering_vq", action="store_true",
                   help="re-anchor dead codes (CVQ-VAE); without it the codebook is a plain VQ")
    p.add_argument("--disc_start", type=int, default=None, help="iteration from which the GAN loss is on")
    p.add_argument("--perceptual_weight", type=float, default=None, help="ConvNeXt-logit perceptual loss weight")
    p.add_argument("--lpips_weight", type=float, default=None,
                   help="LPIPS weight (given: LPIPS stays on for the whole run; 0 switches it off)")
    p.add_argument("--lr", type=float, default=None, help="learning rate of the tokenizer and the discriminator")
    p.add_argument("--config", default=None, help="config file (default config/tokenizer/alitok/alitok_<stage>.yaml)")
    p.add_argument("--exp_name", default=None, help="experiment name (default alitok_<stage>)")
    p.add_argument("--stage1_exp", default=None, help="stage 2: the stage-1 experiment to start from")
    p.add_argument("-d", "--device", default="cuda", help="cpu, cuda or cuda:N (default cuda)")
    p.add_argument("-wb", "--use_wandb", action="store_true", help="log to Weights & Biases")
    p.add_argument("--debug", action="store_true", help="debug logging, log every iteration")
    p.add_argument("--dry_run", action="store_true", help="build everything and run one step; write nothing")
    p.add_argument("--opt", nargs="+", default=[], metavar="KEY=VALUE", help="further config overrides")
    p.add_argument("--load_from", type=int, default=None, metavar="ITER",
                   help="resume from this stage's checkpoint of iteration ITER (instead of the newest)")
    p.add_argument("--grad_accum", type=int, default=None, metavar="N",
                   help="accumulate the gradients of N batches per optimizer step")
    return p.parse_args(argv)


def overrides(args) -> list:
    """The flags as config overrides (``key=value``), the ``--opt`` ones last."""
    opts = [f"model.clustering_vq={str(args.clustering_vq).lower()}"]
    if args.root is not None:
        opts.append(f"dataset.train_dataset.root_dir={args.root}")
    if args.disc_start is not None:
        opts.append(f"trainer.disc_start={args.disc_start}")
    if args.perceptual_weight is not None:
        opts.append(f"loss.perceptual.loss_weight={args.perceptual_weight}")
    if args.lpips_weight is not None:
        opts += [f"loss.lpips.loss_weight={args.lpips_weight}", "loss.lpips_until=null"]
    if args.lr is not None:
        opts += [f"optim.g_optimizer.lr={args.lr}", f"optim.d_optimizer.lr={args.lr}"]
    if args.grad_accum is not None:
        if args.grad_accum < 1:
            raise SystemExit(f"error: --grad_accum must be >= 1, got {args.grad_accum}")
        opts.append(f"+grad_accum_steps={args.grad_accum}")
    if args.stage1_exp is not None:
        if args.stage != "stage2":
            raise SystemExit("error: --stage1_exp is for --stage stage2")
        opts.append(f"load_checkpoint.exp={args.stage1_exp}")
    return opts + list(args.opt)


def main(argv=None) -> int:
    args = parse_args(argv)
    config = args.config or str(ROOT / "config" / "tokenizer" / "alitok" / f"alitok_{args.stage}.yaml")
    pf = Preflight()   # every problem of the arguments and the config at once, before torch is imported
    cfg = pf.config(config, overrides(args))
    causal = bool(cfg.model.get("causal_decoder", True)) if cfg is not None else args.stage == "stage1"
    if causal != (args.stage == "stage1"):
        pf.add(f"{config} has causal_decoder={causal}, which is not --stage {args.stage}",
               f"give --stage {'stage1' if causal else 'stage2'} or another --config")
    pf.config_inputs(cfg, train=True)
    if pf.failed():
        return 2
    exp = args.exp_name or (f"alitok_{args.stage}" if args.config is None else Path(args.config).stem)
    import src.zoo
    from src.trainer import run_training  # torch, compressai: only once the arguments are checked

    src.zoo.register()   # OneDTokenizerTrainer

    return run_training(cfg, exp, args.device, use_wandb=args.use_wandb, debug=args.debug, dry_run=args.dry_run,
                        load_from=args.load_from)


if __name__ == "__main__":
    sys.exit(main())

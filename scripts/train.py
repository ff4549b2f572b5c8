"""Train a model from a YAML config.

    python scripts/train.py CONFIG -d cpu|cuda [-wb] [--debug] [--dry_run] [--opt key.sub=value ...]
    torchrun --nproc_per_node=N scripts/train.py CONFIG -d cuda      # DistributedDataParallel

The experiment name is the config file's name; results go to ``<ckpt_dir>/<exp>/``.
Training resumes from the experiment's latest checkpoint unless ``--no-auto-resume``;
``--load_from ITER`` resumes from the checkpoint of iteration ITER instead (EMA, discriminator,
optimizers, schedules, RNG and data position included, so the run continues as it did).
``--autocast [bf16|fp16]`` sets ``amp`` / ``amp_dtype``; ``--grad_accum N`` sets ``grad_accum_steps``.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.utils.preflight import training_inputs  # noqa: E402  (light: no torch)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="path to a YAML config (its _base_ files are resolved)")
    p.add_argument("-d", "--device", default="cuda", help="cpu, cuda or cuda:N (default cuda)")
    p.add_argument("-wb", "--use_wandb", action="store_true", help="log to Weights & Biases (offline without a key)")
    p.add_argument("--debug", action="store_true", help="debug logging, log every iteration")
    p.add_argument("--dry_run", action="store_true", help="build everything and run one step; write nothing")
    p.add_argument("--opt", nargs="+", default=[], metavar="KEY=VALUE", help="config overrides (YAML values)")
    p.add_argument("--exp_name", default=None, help="experiment name (default: the config file's name)")
    p.add_argument("--no-auto-resume", dest="auto_resume", action="store_false",
                   help="start from scratch even if checkpoints of this experiment exist")
    p.add_argument("--load_from", default=None, metavar="ITER",
                   help="resume from this experiment's checkpoint of iteration ITER (e.g. 5000 or 250K)")
    p.add_argument("--autocast", nargs="?", const="bf16", default=None, choices=("bf16", "fp16"),
                   help="autocast the forward passes (bf16 by default; fp16 on CUDA only)")
    p.add_argument("--grad_accum", type=int, default=None, metavar="N",
                   help="accumulate the gradients of N batches per optimizer step")
    return p.parse_args(argv)


def flag_overrides(args) -> list:
    """``--autocast`` and ``--grad_accum`` as config overrides (before the ``--opt`` ones)."""
    opts = []
    if args.autocast:
        opts += ["+amp=true", f"+amp_dtype={args.autocast}"]
    if args.grad_accum is not None:
        if args.grad_accum < 1:
            raise SystemExit(f"error: --grad_accum must be >= 1, got {args.grad_accum}")
        opts.append(f"+grad_accum_steps={args.grad_accum}")
    return opts + list(args.opt)


def main(argv=None) -> int:
    args = parse_args(argv)
    load_from = None
    if args.load_from is not None:
        tag = args.load_from.strip()
        if not re.fullmatch(r"\d+[kK]?", tag):
            print(f"error: --load_from {args.load_from!r} is not an iteration (e.g. 5000 or 250K)", file=sys.stderr)
            return 2
        load_from = int(tag[:-1]) * 1000 if tag[-1] in "kK" else int(tag)
    preflight, cfg = training_inputs(args.config, flag_overrides(args))   # every missing input at once, before torch
    if preflight.failed():
        return 2
    exp = args.exp_name or Path(args.config).stem
    from src.trainer import TRAINERS, run_training  # torch, compressai: only once the arguments are checked

    if cfg.get("trainer", {}).get("type") not in TRAINERS:   # a tokenizer-zoo trainer (config/tokenizer/)
        import src.zoo

        src.zoo.register()
    return run_training(cfg, exp, args.device, use_wandb=args.use_wandb, debug=args.debug,
                        auto_resume=args.auto_resume, dry_run=args.dry_run, load_from=load_from)


if __name__ == "__main__":
    sys.exit(main())

"""Train a model from a YAML config.

    python scripts/train.py CONFIG -d cpu|cuda [-wb] [--debug] [--dry_run] [--opt key.sub=value ...]
    torchrun --nproc_per_node=N scripts/train.py CONFIG -d cuda      # DistributedDataParallel

The experiment name is the config file's name; results go to ``<ckpt_dir>/<exp>/``.
Training resumes from the experiment's latest checkpoint unless ``--no-auto-resume``.
"""
from __future__ import annotations

import argparse
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
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    preflight, cfg = training_inputs(args.config, args.opt)   # every missing input at once, before torch
    if preflight.failed():
        return 2
    exp = args.exp_name or Path(args.config).stem
    from src.trainer import run_training  # torch, compressai: only once the arguments are checked

    return run_training(cfg, exp, args.device, use_wandb=args.use_wandb, debug=args.debug,
                        auto_resume=args.auto_resume, dry_run=args.dry_run)


if __name__ == "__main__":
    sys.exit(main())

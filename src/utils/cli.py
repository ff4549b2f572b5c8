"""Command-line pieces shared by the scripts; no heavy imports, so ``--help`` stays fast."""
from __future__ import annotations

import argparse


def add_trust_checkpoint_flag(parser: argparse.ArgumentParser) -> None:
    """``--trust_checkpoint``: unpickle the model file and the config's VQGAN checkpoint fully."""
    parser.add_argument("--trust_checkpoint", action="store_true",
                        help="unpickle --model_path and the VQGAN checkpoint fully: they can run code, so "
                             "only for files from a source you trust (by default a file holding more than "
                             "tensors is refused)")

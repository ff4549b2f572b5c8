"""The command-line arguments shared by the tokenizer scripts (``scripts/eval_tokenizer.py``,
``scripts/tokenize.py``).

Kept apart from :mod:`src.zoo.tools` (which imports torch) so that a script can build its
parser, and answer ``--help``, without importing torch (``src/zoo/__init__.py`` imports nothing).
"""
from __future__ import annotations

from pathlib import Path


def add_tokenizer_args(parser, out_help: str, ema_help: str = "use the EMA weights", many: bool = False) -> None:
    """The arguments every tokenizer script takes: which tokenizer, which images, where to.
    ``many``: ``--ckpt`` takes several checkpoints or folders of them (a sweep)."""
    if many:
        parser.add_argument("--ckpt", required=True, nargs="+",
                            help="training checkpoint(s) (or an official file with --config); a folder stands for "
                                 "every comp_model_iter*.pth.tar in it, in iteration order")
    else:
        parser.add_argument("--ckpt", required=True, help="training checkpoint (or official file with --config)")
    parser.add_argument("--config", default=None, help="YAML with a 'model' section (default: the checkpoint's)")
    parser.add_argument("--images", required=True, type=Path, help="folder of images")
    parser.add_argument("--out", required=True, type=Path, help=out_help)
    parser.add_argument("--ema", action="store_true", help=ema_help)
    parser.add_argument("--size", type=int, default=None,
                        help="resize the shorter side to SIZE and centre-crop (default: whole images)")
    parser.add_argument("--max_images", type=int, default=None, help="only the first N images (sorted)")
    parser.add_argument("-d", "--device", default="cpu", help="cpu, cuda, cuda:1, ...")
